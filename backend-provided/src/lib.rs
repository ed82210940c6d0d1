//! backend-provided backend (in progress).

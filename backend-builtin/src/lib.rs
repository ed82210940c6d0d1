//! backend-builtin backend (in progress).

//! Rotation: the scheduler that re-issues watched certificates before they expire and whenever
//! a mesh's CA changes ([`Scheduler`]), when to rotate ([`RotationPolicy`]), and the channel a
//! watcher reads [`Rotated`] values from ([`WatchReceiver`]).

mod channel;
pub(crate) mod policy;
pub(crate) mod scheduler;

use std::fmt;
use std::time::SystemTime;

use ca_core::IssuedCertificate;

pub use channel::{WatchReceiver, WATCH_BUFFER};
pub use policy::RotationPolicy;
pub use scheduler::{spawn, Scheduler, Watch};

/// Why a watcher got a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationReason {
    /// The first certificate of the watch.
    Initial,
    /// The previous one reached its rotation time.
    Rotation,
    /// The mesh's enabled backend changed.
    CaChange,
}

impl RotationReason {
    /// `initial`, `rotation` or `ca-change`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Rotation => "rotation",
            Self::CaChange => "ca-change",
        }
    }
}

impl fmt::Display for RotationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate pushed to a watcher: the domain value the scheduler publishes (an edge maps it to
/// its wire format).
#[derive(Debug)]
#[non_exhaustive]
pub struct Rotated {
    /// The checked certificate.
    pub certificate: IssuedCertificate,
    /// Why it was issued.
    pub reason: RotationReason,
    /// When its holder should expect the next one.
    pub rotate_at: SystemTime,
    /// The backend that issued it.
    pub backend: String,
    /// The trust bundle to use with it (both roots during a CA switch).
    pub trust_bundle_pem: String,
}

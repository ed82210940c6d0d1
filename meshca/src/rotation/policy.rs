//! When a certificate's holder should get the next one: ca-core's one formula
//! ([`ca_core::refresh_at`]), with the jitter drawn here.

use std::time::{Duration, SystemTime};

use ca_core::{IssuedCertificate, RefreshPolicy};
use rand::RngExt as _;

/// When to rotate: Kuma's 4/5 of the effective lifetime by default, less up to a tenth of that at
/// random, between 1 s and a year after issuance.
#[derive(Clone, Copy, Debug, Default)]
pub struct RotationPolicy(RefreshPolicy);

impl RotationPolicy {
    /// Rotate after `fraction` of the lifetime, less up to `jitter` of that delay at random.
    pub fn new(fraction: f64, jitter: f64) -> Self {
        Self(RefreshPolicy::new(
            fraction,
            jitter,
            RefreshPolicy::DEFAULT_MIN_DELAY,
            RefreshPolicy::DEFAULT_MAX_DELAY,
        ))
    }

    /// With other bounds on the delay after issuance.
    #[must_use]
    pub fn with_bounds(self, min_delay: Duration, max_delay: Duration) -> Self {
        Self(RefreshPolicy::new(
            self.0.fraction,
            self.0.jitter,
            min_delay,
            max_delay,
        ))
    }

    /// The core policy.
    pub fn refresh_policy(&self) -> &RefreshPolicy {
        &self.0
    }

    /// When a holder of `cert` should rotate (counted from its issuance), jittered.
    pub fn rotate_at(&self, cert: &IssuedCertificate) -> SystemTime {
        cert.refresh_at(&self.0, rand::rng().random_range(0.0..1.0))
    }
}

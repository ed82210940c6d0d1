//! When a certificate's holder should get the next one.

use std::time::SystemTime;

use ca_core::IssuedCertificate;
use rand::Rng as _;

/// When to rotate.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RotationPolicy {
    /// Fraction of the lifetime after which to rotate (Kuma: 0.8).
    pub fraction: f64,
    /// Up to this fraction of the delay is taken off at random, spreading a zone's rotations.
    pub jitter: f64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            fraction: 0.8,
            jitter: 0.1,
        }
    }
}

impl RotationPolicy {
    /// Rotate after `fraction` of the lifetime, less up to `jitter` of that at random.
    pub fn new(fraction: f64, jitter: f64) -> Self {
        Self { fraction, jitter }
    }

    /// When a holder of `cert` should rotate, jittered.
    /// Call right after issuance: the lifetime counts from now, not from the backdated
    /// not-before.
    pub fn rotate_at(&self, cert: &IssuedCertificate) -> SystemTime {
        let now = SystemTime::now();
        let start = cert.not_before().max(now);
        let life = cert
            .effective_not_after()
            .duration_since(start)
            .unwrap_or_default();
        let delay = life.mul_f64(self.fraction.clamp(0.0, 1.0));
        let cut =
            delay.mul_f64(self.jitter.clamp(0.0, 0.5) * rand::thread_rng().gen_range(0.0..1.0));
        now + (delay - cut)
    }
}

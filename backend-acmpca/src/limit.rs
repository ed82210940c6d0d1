//! Pacing: a token bucket per CA in front of `IssueCertificate`, and the jittered delays of
//! retries and of waiting for a certificate.
//!
//! ACM PCA bills every request and throttles above its quota; a fleet rotating at once must be
//! paced by the bucket, not by throttling and retries (Kuma issue 17448 is what happens
//! otherwise).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::RngExt;

/// How many `IssueCertificate` calls per second a backend makes at most, and how many at once
/// after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` calls per second with bursts of `burst` (both at least 1, and
    /// `per_second` at least 0.01).
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: if per_second.is_finite() {
                per_second.max(0.01)
            } else {
                DEFAULT_RATE_LIMIT.per_second
            },
            burst: burst.max(1),
        }
    }
}

/// 20 per second, bursts of 20: below ACM PCA's default `IssueCertificate` quota (25/s in most
/// regions) so that a control plane sharing the account with others is not throttled.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 20.0,
    burst: 20,
};

/// A token bucket. Waiters reserve their token before sleeping, so they leave in order and a
/// burst of waiters does not wake at once.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    /// Tokens (negative: reserved ahead) and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// How long the caller must wait for its token (zero: go now).
    pub(crate) fn reserve(&self) -> Duration {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let elapsed = now.duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        s.1 = now;
        s.0 -= 1.0;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.limit.per_second)
        }
    }

    /// Waits for a token. A waiter that goes away before its turn (its request timed out)
    /// gives its token back: otherwise the turns of callers long gone would stay reserved, and
    /// under a burst larger than the limit admits within the timeout every later caller would
    /// wait out their turns and time out too.
    pub(crate) async fn acquire(&self) {
        let wait = self.reserve();
        if wait.is_zero() {
            return;
        }
        let mut turn = Turn {
            bucket: self,
            waiting: true,
        };
        tokio::time::sleep(wait).await;
        turn.waiting = false;
    }

    /// Returns a reserved token that will not be used.
    fn give_back(&self) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.0 = (s.0 + 1.0).min(f64::from(self.limit.burst));
    }
}

/// A token reserved by a waiter still sleeping: given back if the waiter is dropped.
struct Turn<'a> {
    bucket: &'a TokenBucket,
    waiting: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.bucket.give_back();
        }
    }
}

/// The bucket of the CA `arn` at `limit`: backends of several meshes on one CA share it.
pub(crate) fn shared_bucket(arn: &str, limit: RateLimit) -> Arc<TokenBucket> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Arc<TokenBucket>>>> = OnceLock::new();
    let buckets = BUCKETS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut b = match buckets.lock() {
        Ok(b) => b,
        Err(p) => p.into_inner(),
    };
    let bucket = b
        .entry(arn.to_owned())
        .or_insert_with(|| Arc::new(TokenBucket::new(limit)));
    if bucket.limit() != limit {
        *bucket = Arc::new(TokenBucket::new(limit));
    }
    bucket.clone()
}

/// Most attempts of one call that fails transiently (throttled, 5xx, connection dropped).
pub const MAX_ATTEMPTS: u32 = 4;

/// Delay before retry `attempt` (1-based): exponential from 200 ms, capped at 5 s, with "equal
/// jitter" (half fixed, half random) so that throttled callers spread out.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    jittered(200, attempt, 5_000)
}

/// Delay before asking again for a certificate ACM PCA is still making (`poll` 0-based):
/// 100 ms doubling to 1 s, jittered.
pub(crate) fn poll_delay(poll: u32) -> Duration {
    jittered(100, poll, 1_000)
}

fn jittered(base_ms: u64, n: u32, cap_ms: u64) -> Duration {
    let full = base_ms.saturating_mul(1u64 << n.min(16)).min(cap_ms);
    let half = full / 2;
    Duration::from_millis(half + rand::rng().random_range(0..=half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paces_after_the_burst() {
        let b = TokenBucket::new(RateLimit::new(10.0, 3));
        for _ in 0..3 {
            assert_eq!(b.reserve(), Duration::ZERO);
        }
        // The 4th and 5th wait ~100 ms and ~200 ms: reserved in order.
        let w4 = b.reserve();
        let w5 = b.reserve();
        assert!(
            w4 > Duration::from_millis(80) && w4 <= Duration::from_millis(100),
            "{w4:?}"
        );
        assert!(
            w5 > Duration::from_millis(180) && w5 <= Duration::from_millis(200),
            "{w5:?}"
        );
    }

    #[tokio::test]
    async fn waiters_that_go_away_give_their_token_back() {
        let b = TokenBucket::new(RateLimit::new(10.0, 1));
        assert_eq!(b.reserve(), Duration::ZERO);
        // Five waiters give up before their turn...
        for _ in 0..5 {
            let gave_up = tokio::time::timeout(Duration::from_millis(1), b.acquire()).await;
            assert!(gave_up.is_err());
        }
        // ...so the next one waits for one turn (~100 ms), not six.
        let w = b.reserve();
        assert!(w <= Duration::from_millis(100), "{w:?}");
    }

    #[test]
    fn delays_are_bounded() {
        for n in 0..40 {
            assert!(retry_delay(n) <= Duration::from_secs(5));
            assert!(poll_delay(n) <= Duration::from_secs(1));
        }
        assert!(retry_delay(1) >= Duration::from_millis(200));
    }

    #[test]
    fn buckets_are_shared_per_ca() {
        let a = shared_bucket("arn:a", DEFAULT_RATE_LIMIT);
        let b = shared_bucket("arn:a", DEFAULT_RATE_LIMIT);
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared_bucket("arn:b", DEFAULT_RATE_LIMIT);
        assert!(!Arc::ptr_eq(&a, &c));
    }
}

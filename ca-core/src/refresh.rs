//! When to refresh a certificate: one formula, [`refresh_at`], for every caller.

use std::time::{Duration, SystemTime};

/// How early, and how spread out, certificates are refreshed.
///
/// [`Default`] is Kuma's: at 80% of the lifetime, up to 10% of that delay taken off at random,
/// never sooner than 1 s after issuance nor later than 365 days.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// The fraction of the effective lifetime after which to refresh, in `[0, 1]` (Kuma: 0.8).
    /// Values outside are clamped; NaN counts as the default.
    pub fraction: f64,
    /// Up to this fraction of the delay is taken off at random, so that certificates issued
    /// together are not refreshed together; in `[0, 1]`, clamped (NaN: no jitter).
    pub jitter: f64,
    /// The shortest delay after issuance: a certificate of a few seconds is not refreshed in a
    /// tight loop. Wins over the lifetime, loses to `max_delay`.
    pub min_delay: Duration,
    /// The longest delay after issuance: a 10-year certificate is still refreshed yearly.
    pub max_delay: Duration,
}

impl RefreshPolicy {
    /// Kuma's fraction: a certificate is refreshed after 4/5 of its lifetime.
    pub const DEFAULT_FRACTION: f64 = 0.8;
    /// The default jitter: up to a tenth of the delay.
    pub const DEFAULT_JITTER: f64 = 0.1;
    /// The default shortest delay.
    pub const DEFAULT_MIN_DELAY: Duration = Duration::from_secs(1);
    /// The default longest delay: 365 days.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

    /// A policy; values are sanitized when used (see the fields).
    pub fn new(fraction: f64, jitter: f64, min_delay: Duration, max_delay: Duration) -> Self {
        Self {
            fraction,
            jitter,
            min_delay,
            max_delay,
        }
    }
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_FRACTION,
            Self::DEFAULT_JITTER,
            Self::DEFAULT_MIN_DELAY,
            Self::DEFAULT_MAX_DELAY,
        )
    }
}

/// When a certificate valid from `not_before` to `not_after` (pass the *effective* not-after: the
/// earlier of the requested and the actual one) and asked for at `issued_at` should be refreshed.
///
/// The lifetime counts from the later of `issued_at` and `not_before`: not from a not-before
/// backdated for clock skew (which would refresh a 1-minute certificate 8 s early at 0.8), and not
/// from before a not-before in the future. The delay is `fraction` of it, minus
/// `delay × jitter × jitter_sample`, then raised to `min_delay` and capped at `max_delay` (the cap
/// wins when they cross). `jitter_sample` is a random number in `[0, 1)` the caller draws, so the
/// formula is pure and testable; values outside are clamped, NaN counts as 0.
///
/// Never panics: an inverted window gives a lifetime of zero, and a time past the end of
/// `SystemTime` gives `not_after`.
pub fn refresh_at(
    not_before: SystemTime,
    not_after: SystemTime,
    issued_at: SystemTime,
    policy: &RefreshPolicy,
    jitter_sample: f64,
) -> SystemTime {
    let unit = |x: f64, nan: f64| if x.is_nan() { nan } else { x.clamp(0.0, 1.0) };
    let fraction = unit(policy.fraction, RefreshPolicy::DEFAULT_FRACTION);
    let jitter = unit(policy.jitter, 0.0);
    let sample = unit(jitter_sample, 0.0);
    let start = issued_at.max(not_before);
    let life = not_after.duration_since(start).unwrap_or_default();
    let delay = life.mul_f64(fraction);
    let delay = delay.saturating_sub(delay.mul_f64(jitter * sample));
    let delay = delay.max(policy.min_delay).min(policy.max_delay);
    start.checked_add(delay).unwrap_or(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn kuma_default_is_four_fifths_from_issuance() {
        let p = RefreshPolicy::default();
        assert_eq!(p.fraction, 0.8);
        // A 24h certificate backdated 10 s: 80% of 24h after issuance, not after the backdate.
        let issued = t(10);
        let at = refresh_at(t(0), issued + 24 * H, issued, &p, 0.0);
        assert_eq!(at, issued + (24 * H).mul_f64(0.8));
        // The largest jitter takes a tenth of the delay off.
        let at = refresh_at(t(0), issued + 24 * H, issued, &p, 0.999_999);
        let delay = at.duration_since(issued).unwrap();
        let full = (24 * H).mul_f64(0.8);
        assert!(
            delay < full && delay > full - full / 10 - Duration::from_secs(1),
            "{delay:?}"
        );
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = RefreshPolicy::new(0.5, 0.5, Duration::ZERO, Duration::MAX);
        let at = |s| refresh_at(t(0), t(1000), t(0), &p, s);
        assert_eq!(at(0.0), t(500));
        assert_eq!(at(0.5), t(375));
        assert!(at(0.999) > t(250));
        // Out-of-range and NaN samples are clamped, not a panic.
        assert_eq!(at(f64::NAN), t(500));
        assert_eq!(at(-3.0), t(500));
        assert_eq!(at(7.0), t(250));
    }

    #[test]
    fn clamped_to_min_and_max() {
        let p = RefreshPolicy::default();
        // 1 s certificate: not before min_delay.
        assert_eq!(refresh_at(t(0), t(1), t(0), &p, 0.0), t(1));
        // Expired or inverted window: min_delay, no panic.
        assert_eq!(refresh_at(t(10), t(0), t(10), &p, 0.0), t(11));
        // A 10-year certificate: after at most a year.
        let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
        assert_eq!(
            refresh_at(t(0), t(0) + ten_years, t(0), &p, 0.0),
            t(0) + RefreshPolicy::DEFAULT_MAX_DELAY
        );
        // Crossed bounds: the cap wins.
        let crossed = RefreshPolicy::new(0.8, 0.0, 10 * H, H);
        assert_eq!(
            refresh_at(t(0), t(0) + 24 * H, t(0), &crossed, 0.0),
            t(0) + H
        );
        // Silly fractions are clamped.
        let all = RefreshPolicy::new(7.0, 0.0, Duration::ZERO, Duration::MAX);
        assert_eq!(refresh_at(t(0), t(100), t(0), &all, 0.0), t(100));
        let nan = RefreshPolicy::new(f64::NAN, f64::NAN, Duration::ZERO, Duration::MAX);
        assert_eq!(refresh_at(t(0), t(100), t(0), &nan, 0.5), t(80));
    }

    #[test]
    fn counts_from_a_future_not_before() {
        let p = RefreshPolicy::new(0.5, 0.0, Duration::ZERO, Duration::MAX);
        // A CA whose clock is 30 s ahead: the lifetime starts at not-before.
        assert_eq!(refresh_at(t(30), t(130), t(0), &p, 0.0), t(80));
    }
}

//! Parsers of flag values that several commands share.

use std::time::Duration;

/// A duration as Kuma writes them (`5s`, `1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    ca_core::KumaDuration::parse(s).map(|d| d.get())
}

/// A count of at least 1.
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

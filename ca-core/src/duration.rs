//! Kuma's duration format: `<digits><unit>` with unit `y`, `w`, `d`, `h`, `m`, `s` or `ms`, or `0`.

use std::fmt;
use std::time::Duration;

/// A duration written in Kuma's format (`10y`, `1d`, `90s`, `500ms`, `0`).
///
/// It keeps the text it was parsed from so config round-trips and messages show what the user wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KumaDuration {
    text: String,
    value: Duration,
}

impl KumaDuration {
    /// Parses `text`.
    ///
    /// # Errors
    /// A message (used in a [`crate::Violation`]) when `text` does not match
    /// `^(\d+)(y|w|d|h|m|s|ms)$` or `0`, or overflows.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not a duration: expected a number followed by y, w, d, h, m, s or ms (e.g. 24h), or 0",
                crate::error::echo(text)
            )
        };
        if text == "0" {
            return Ok(Self {
                text: text.to_owned(),
                value: Duration::ZERO,
            });
        }
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let (secs_per, is_ms) = match unit {
            "y" => (365 * 24 * 3600, false),
            "w" => (7 * 24 * 3600, false),
            "d" => (24 * 3600, false),
            "h" => (3600, false),
            "m" => (60, false),
            "s" => (1, false),
            "ms" => (0, true),
            _ => return Err(bad()),
        };
        let value = if is_ms {
            Duration::from_millis(n)
        } else {
            let secs = n
                .checked_mul(secs_per)
                .filter(|s| *s <= 1000 * 365 * 24 * 3600)
                .ok_or_else(|| format!("`{text}` is too long"))?;
            Duration::from_secs(secs)
        };
        Ok(Self {
            text: text.to_owned(),
            value,
        })
    }

    /// A duration from a value, written in whole seconds.
    pub fn from_duration(value: Duration) -> Self {
        Self {
            text: format!("{}s", value.as_secs()),
            value,
        }
    }

    /// The value.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The text it was written as.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for KumaDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("0", 0),
            ("10y", 10 * 365 * 86400),
            ("2w", 14 * 86400),
            ("1d", 86400),
            ("24h", 86400),
            ("5m", 300),
            ("90s", 90),
        ];
        for (text, secs) in cases {
            assert_eq!(
                KumaDuration::parse(text).unwrap().get(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert_eq!(
            KumaDuration::parse("1500ms").unwrap().get(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "h",
            "1",
            "1.5h",
            "1h30m",
            "-1h",
            "1H",
            "1 h",
            "10x",
            "99999999999999999999y",
        ] {
            assert!(KumaDuration::parse(bad).is_err(), "{bad}");
        }
        assert!(KumaDuration::parse("100000y")
            .unwrap_err()
            .contains("too long"));
    }
}

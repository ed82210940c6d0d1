//! Parsers of flag values that several commands share, and the error for a flag that cannot be
//! used as given.

use std::fmt;
use std::num::ParseIntError;
use std::time::Duration;

/// A flag as the operator wrote it, for messages: `--tag web`, `--namespace "Kuma_System"`.
#[derive(Debug, Clone)]
pub(crate) struct Flag {
    name: &'static str,
    value: Option<Shown>,
}

/// How a flag's value is shown.
#[derive(Debug, Clone)]
enum Shown {
    /// As written (paths, addresses, KEY=VALUE).
    Plain(String),
    /// Quoted and escaped, for values that may hold spaces or anything else.
    Quoted(String),
}

impl Flag {
    /// The flag alone (`--idle-timeout`).
    pub(crate) fn new(name: &'static str) -> Self {
        Self { name, value: None }
    }

    /// The flag and its value as written (`--tag web`).
    pub(crate) fn with(name: &'static str, value: impl fmt::Display) -> Self {
        Self {
            name,
            value: Some(Shown::Plain(value.to_string())),
        }
    }

    /// The flag and its value quoted (`--namespace "Kuma_System"`).
    pub(crate) fn quoted(name: &'static str, value: &str) -> Self {
        Self {
            name,
            value: Some(Shown::Quoted(value.to_owned())),
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        match &self.value {
            None => Ok(()),
            Some(Shown::Plain(v)) => write!(f, " {v}"),
            Some(Shown::Quoted(v)) => write!(f, " {v:?}"),
        }
    }
}

/// A flag, or a combination of flags, that cannot be used as given. Commands check their flags
/// before they read or write anything, so this error means nothing was done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UsageError {
    /// The flag is refused for `reason`, which says what to pass instead.
    #[error("{flag}: {reason}")]
    Refused { flag: Flag, reason: String },
    /// ca-core refused the flag's value (a mesh name, a tag, a secret name).
    #[error("{flag}")]
    Invalid {
        flag: Flag,
        /// Boxed: ca-core's error is large, and this one travels in every CLI `Result`.
        #[source]
        source: Box<ca_core::Error>,
    },
    /// `--allow-file-sources` names no usable directory.
    #[error("{flag}")]
    SourceDir {
        flag: Flag,
        #[source]
        source: ca_core::SourceDirError,
    },
    /// An `--allow-*` flag does not name an upstream.
    #[error("{flag}")]
    Upstream {
        flag: Flag,
        #[source]
        source: ca_core::UpstreamSpecError,
    },
}

impl UsageError {
    /// [`UsageError::Refused`].
    pub(crate) fn refused(flag: Flag, reason: impl Into<String>) -> Self {
        Self::Refused {
            flag,
            reason: reason.into(),
        }
    }

    /// A `map_err` adapter for [`UsageError::Upstream`].
    pub(crate) fn upstream(flag: Flag) -> impl FnOnce(ca_core::UpstreamSpecError) -> Self {
        move |source| Self::Upstream { flag, source }
    }

    /// A `map_err` adapter for [`UsageError::Invalid`].
    pub(crate) fn invalid(flag: Flag) -> impl FnOnce(ca_core::Error) -> Self {
        move |source| Self::Invalid {
            flag,
            source: Box::new(source),
        }
    }
}

/// Why clap refused a flag's value (clap prints this after the flag and value).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FlagValueError {
    /// Not a Kuma duration; ca-core's message says what is expected.
    #[error("{0}")]
    NotADuration(String),
    /// A count of zero where at least one is needed.
    #[error("must be at least 1")]
    Zero,
    /// Not a number.
    #[error("not a count: {0}")]
    NotACount(#[source] ParseIntError),
}

/// A duration as Kuma writes them (`5s`, `1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, FlagValueError> {
    ca_core::KumaDuration::parse(s)
        .map(|d| d.get())
        .map_err(FlagValueError::NotADuration)
}

/// A count of at least 1.
pub(crate) fn positive(s: &str) -> Result<usize, FlagValueError> {
    match s.parse::<usize>() {
        Ok(0) => Err(FlagValueError::Zero),
        Ok(n) => Ok(n),
        Err(e) => Err(FlagValueError::NotACount(e)),
    }
}

/// `--tag KEY=VALUE` flags as pairs.
pub(crate) fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>, UsageError> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    UsageError::refused(
                        Flag::with("--tag", t),
                        "expected KEY=VALUE, e.g. --tag kuma.io/service=web",
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_as_written() {
        let e = parse_tags(&["web".into()]).unwrap_err().to_string();
        assert_eq!(
            e,
            "--tag web: expected KEY=VALUE, e.g. --tag kuma.io/service=web"
        );
        let e = UsageError::refused(Flag::quoted("--namespace", "Kuma System"), "not a name");
        assert_eq!(e.to_string(), "--namespace \"Kuma System\": not a name");
        assert!(matches!(positive("0"), Err(FlagValueError::Zero)));
        assert!(positive("x")
            .unwrap_err()
            .to_string()
            .starts_with("not a count: "));
    }
}

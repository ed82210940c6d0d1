//! The data directory (`--data-dir`): refused when someone else may have filled it before meshca
//! first ran, and checked for key files other users can read.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::files::IoError;

/// Why the data directory is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DataDirError {
    /// Someone else may have filled it before meshca first ran.
    #[error(
        "data directory {} {why} and already holds files: someone else may have put a CA or keys \
         there, and meshca would adopt them as its own. Check what is in it (tls/ca.pem, \
         secrets/), then make it yours and private (chown to uid {me}, chmod 700), remove it to \
         start afresh, or pass --adopt-open-data-dir to use it as it is",
        dir.display()
    )]
    Open {
        dir: PathBuf,
        why: Openness,
        /// meshca's uid.
        me: u32,
    },
    /// It could not be made private.
    #[error(transparent)]
    Restrict(#[from] IoError),
}

/// What makes a directory open to others.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Openness {
    /// Owned by another user.
    Foreign { uid: u32, me: u32 },
    /// Writable by group or others (permission bits).
    Writable { mode: u32 },
}

impl std::fmt::Display for Openness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Foreign { uid, me } => write!(f, "is owned by uid {uid}, not meshca's uid {me}"),
            Self::Writable { mode } => {
                write!(
                    f,
                    "is writable by group or others (mode {:o})",
                    mode & 0o777
                )
            }
        }
    }
}

/// Refuses a data directory someone else could have filled before meshca first ran: `dir`, or
/// its `tls/`, `secrets/` or `tokens/`, writable by group or others or owned by another user,
/// with anything in it. A CA found there would be adopted as meshca's own, and whoever planted
/// it could sign admin certificates. An empty open directory of ours is made 0700 and used.
/// `adopt` (`--adopt-open-data-dir`) takes such a directory as it is, with a warning.
pub(crate) fn check_data_dir(dir: &Path, adopt: bool) -> Result<(), DataDirError> {
    let me = rustix::process::geteuid().as_raw();
    for d in [
        dir.to_owned(),
        dir.join("tls"),
        dir.join("secrets"),
        dir.join("tokens"),
    ] {
        let Ok(meta) = fs::metadata(&d) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let open = mode & 0o022 != 0;
        let foreign = meta.uid() != me;
        if !open && !foreign {
            continue;
        }
        let why = if foreign {
            Openness::Foreign {
                uid: meta.uid(),
                me,
            }
        } else {
            Openness::Writable { mode }
        };
        let is_empty = |d: &Path| fs::read_dir(d).is_ok_and(|mut e| e.next().is_none());
        if !foreign && is_empty(&d) {
            // Ours and empty: close it, then look again, so nothing slips in between.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .map_err(IoError::at("restrict", &d))?;
            if is_empty(&d) {
                tracing::warn!(dir = %d.display(), "directory {why} but empty; made it 0700");
                continue;
            }
        }
        if adopt {
            tracing::warn!(dir = %d.display(), "directory {why} and holds files; using it as it is because of --adopt-open-data-dir");
            if !foreign {
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                    .map_err(IoError::at("restrict", &d))?;
            }
            continue;
        }
        return Err(DataDirError::Open { dir: d, why, me });
    }
    Ok(())
}

/// Warns about key files under `dir` (two levels deep) that other users can read.
pub(crate) fn warn_open_keys(dir: &Path) {
    let mut stack = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.is_dir() && depth < 2 {
                stack.push((path, depth + 1));
            } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                let name = path.to_string_lossy();
                if name.ends_with("-key.pem") || name.contains("/secrets/") {
                    tracing::warn!(file = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "key file is readable by other users; chmod 600 it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_data_dir_with_files_is_refused_unless_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Someone made it 0777 and planted a CA in it.
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).unwrap();
        fs::create_dir(data.join("tls")).unwrap();
        fs::write(data.join("tls/ca.pem"), b"planted").unwrap();
        fs::write(data.join("tls/ca-key.pem"), b"planted").unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_data_dir(&data, false).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 777)"),
            "{err}"
        );
        assert!(err.contains("--adopt-open-data-dir"), "{err}");
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o777
        );
        // tls/ open inside a private data directory: refused too.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(data.join("tls"), fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_data_dir(&data, false).unwrap_err().to_string();
        assert!(err.contains("tls"), "{err}");
        // The explicit flag adopts it, and closes it.
        check_data_dir(&data, true).unwrap();
        assert_eq!(
            fs::metadata(data.join("tls")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        check_data_dir(&data, false).unwrap();
        // An empty open directory is just closed.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        fs::set_permissions(&empty, fs::Permissions::from_mode(0o777)).unwrap();
        check_data_dir(&empty, false).unwrap();
        assert_eq!(
            fs::metadata(&empty).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Nothing there yet: fine.
        check_data_dir(&dir.path().join("absent"), false).unwrap();
    }
}

//! Files written whole: meshca's one atomic writer ([`write_atomic`]) and its one create-if-absent
//! ([`create_if_absent`]), used by the [`DirectorySecretStore`](crate::DirectorySecretStore) and
//! by the issuer's bootstrap TLS files alike.
//!
//! Every write goes to a temporary file in the target's directory, created with its final mode
//! (never widened afterwards), written in full and fsynced; it is then moved into place (rename
//! to replace, hard link to create, which fails if the name exists) and the directory is
//! fsynced. A crash at any point leaves the old file or the new one, never a torn one; a leftover
//! temporary file starts with [`TEMP_PREFIX`] and is never read as anything.
//!
//! Synchronous `std::fs`: ca-core has no runtime. Callers in async code run these on a blocking
//! thread when they care about the latency of an fsync.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::datasource::Created;

/// How temporary files begin; no secret, mesh or bootstrap file name does.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Who may read a file written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The owner only (0600): keys and secrets.
    OwnerOnly,
    /// Everyone may read, the owner writes (0644): certificates.
    WorldReadable,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Self::OwnerOnly => 0o600,
            Self::WorldReadable => 0o644,
        }
    }
}

/// A file operation that failed: what was being done, to which path, and the system's error.
#[derive(Debug)]
pub struct FileError {
    path: PathBuf,
    doing: &'static str,
    source: io::Error,
}

impl FileError {
    fn new(path: &Path, doing: &'static str, source: io::Error) -> Self {
        Self {
            path: path.to_owned(),
            doing,
            source,
        }
    }

    /// The file or directory the operation failed on (a temporary file, the target or its
    /// directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was being done, as in "cannot {doing}": `create temporary file`, `replace`, ...
    pub fn doing(&self) -> &'static str {
        self.doing
    }

    /// The system's error, consumed.
    pub fn into_io(self) -> io::Error {
        self.source
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}", self.doing, self.path.display())
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Creates `dir` and any missing parents, new ones 0700, and narrows `dir` itself to 0700 if
/// group or others may use it.
///
/// # Errors
/// When a directory cannot be created, inspected or narrowed.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FileError::new(dir, "create directory", e))?;
    let meta = fs::metadata(dir).map_err(|e| FileError::new(dir, "stat directory", e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| FileError::new(dir, "restrict directory to 0700", e))?;
    }
    Ok(())
}

/// Replaces (or creates) `target` with `data` atomically: a reader sees the old file or the new
/// one, never half of one. The directory must exist.
///
/// # Errors
/// When the temporary file cannot be written, moved into place, or the directory synced.
pub fn write_atomic(target: &Path, data: &[u8], access: Access) -> Result<(), FileError> {
    let tmp = write_temp(target, data, access)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(FileError::new(target, "replace", e));
    }
    sync_parent(target)
}

/// Creates `target` with `data` unless it exists, atomically: of several racing creators (threads
/// or processes) exactly one gets [`Created::Ours`], and its file is complete before anyone can
/// see it. [`Created::Existing`] leaves the file as it is; reading it is the caller's business.
/// The directory must exist.
///
/// # Errors
/// When the temporary file cannot be written or linked, or the directory synced.
pub fn create_if_absent(target: &Path, data: &[u8], access: Access) -> Result<Created, FileError> {
    let tmp = write_temp(target, data, access)?;
    // link(2) fails with EEXIST when the name exists, whoever made it and however long ago.
    let linked = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(target)?;
            Ok(Created::Ours)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Existing),
        Err(e) => Err(FileError::new(target, "create", e)),
    }
}

/// Fsyncs the directory `dir`, so that names created, linked or renamed in it are durable.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new(dir, "fsync directory", e))
}

fn sync_parent(file: &Path) -> Result<(), FileError> {
    sync_dir(parent_of(file))
}

fn parent_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` in full (created with `access`'s mode, fsynced) to a new temporary file beside
/// `target`, named for this process plus 64 random bits, so that no two writers share one (not two
/// threads, nor two containers that are both pid 1 on one volume, nor a process and the leftover
/// of a crashed one that had its pid); returns it.
pub(crate) fn write_temp(target: &Path, data: &[u8], access: Access) -> Result<PathBuf, FileError> {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_of(target).join(format!(
        "{TEMP_PREFIX}{file_name}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(access.mode())
        .open(&tmp)
        .map_err(|e| FileError::new(&tmp, "create temporary file", e))?;
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
        let _ = fs::remove_file(&tmp);
        return Err(FileError::new(&tmp, "write temporary file", e));
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_get_their_mode_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let (key, cert) = (d.join("key.pem"), d.join("cert.pem"));
        write_atomic(&key, b"one", Access::OwnerOnly).unwrap();
        write_atomic(&key, b"two", Access::OwnerOnly).unwrap();
        write_atomic(&cert, b"c", Access::WorldReadable).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        assert_eq!((mode(&key), mode(&cert)), (0o600, 0o644));
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);

        // An open directory is narrowed.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn create_if_absent_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca-key.pem");
        assert_eq!(
            create_if_absent(&p, b"first", Access::OwnerOnly).unwrap(),
            Created::Ours
        );
        assert_eq!(
            create_if_absent(&p, b"second", Access::OwnerOnly).unwrap(),
            Created::Existing
        );
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A failure names what and where.
        let e = write_atomic(&dir.path().join("no/such"), b"x", Access::OwnerOnly).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot create temporary file "),
            "{e}"
        );
    }

    #[test]
    fn racing_creators_leave_one_complete_file() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("key");
            let n = 8;
            let barrier = Arc::new(Barrier::new(n));
            let wins: Vec<_> = (0..n)
                .map(|i| {
                    let (barrier, p) = (barrier.clone(), p.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let value = format!("creator-{i}-").repeat(1000);
                        let c = create_if_absent(&p, value.as_bytes(), Access::OwnerOnly);
                        (c.unwrap(), value)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|(c, _)| *c == Created::Ours)
                .collect();
            assert_eq!(wins.len(), 1, "round {round}: exactly one creator wins");
            assert_eq!(fs::read(&p).unwrap(), wins[0].1.as_bytes());
        }
    }
}

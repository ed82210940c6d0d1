//! The embedded default [`SecretStore`]: one file per mesh-scoped secret.
//!
//! Layout: `<root>/<mesh>/<secret>`, directories 0700, files 0600. Every write goes to a temporary
//! file in the same directory, is fsynced, then moved into place (rename for `put`, hard link for
//! `create_if_absent`, which fails if the name exists), and the directory is fsynced. A crash at
//! any point leaves either the old value or the new one, never a torn file; leftover temporary
//! files start with `.tmp-` (no secret name can) and are ignored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::datasource::{Created, SecretStore};
use crate::name::{MeshName, SecretName};
use crate::secret::SecretBytes;
use crate::Error;

/// A [`SecretStore`] in a directory of the local file system.
#[derive(Debug)]
pub struct DirectorySecretStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DirectorySecretStore {
    /// Opens (creating, mode 0700) the store rooted at `root`.
    ///
    /// # Errors
    /// [`Error::Store`] when the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        create_private_dir(&root)?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a secret lives in.
    pub fn path_of(&self, mesh: &MeshName, name: &SecretName) -> PathBuf {
        // MeshName and SecretName admit neither `/` nor a leading `.`, so this stays inside root.
        self.root.join(mesh.as_str()).join(name.as_str())
    }

    fn read(&self, path: &Path) -> Result<Option<SecretBytes>, Error> {
        // Secrets are small; a huge or special file here is damage, not a secret.
        match crate::datasource::read_regular_file(path, crate::SourcePolicy::MAX_BYTES) {
            Ok(v) => Ok(Some(SecretBytes::new(v))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_err(path, "read", e)),
        }
    }

    /// Writes `value` to a new, fsynced temporary file beside `target` and returns its path.
    fn write_temp(&self, target: &Path, value: &[u8]) -> Result<PathBuf, Error> {
        let dir = target.parent().unwrap_or(&self.root);
        create_private_dir(dir)?;
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".tmp-{file_name}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| store_err(&tmp, "create temporary file", e))?;
        let written = f.write_all(value).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(store_err(&tmp, "write temporary file", e));
        }
        Ok(tmp)
    }
}

#[async_trait]
impl SecretStore for DirectorySecretStore {
    async fn get(&self, mesh: &MeshName, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        self.read(&self.path_of(mesh, name))
    }

    async fn create_if_absent(
        &self,
        mesh: &MeshName,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        let target = self.path_of(mesh, name);
        if let Some(existing) = self.read(&target)? {
            return Ok((existing, Created::Existing));
        }
        let tmp = self.write_temp(&target, value)?;
        // link(2) fails with EEXIST when the name exists: of racing creators exactly one wins, and
        // the winner's file is complete before it becomes visible.
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&target)?;
                Ok((SecretBytes::new(value.to_vec()), Created::Ours))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.read(&target)? {
                Some(existing) => Ok((existing, Created::Existing)),
                None => Err(Error::Inconsistent(format!(
                    "{} vanished while it was being created",
                    target.display()
                ))),
            },
            Err(e) => Err(store_err(&target, "create", e)),
        }
    }

    async fn put(&self, mesh: &MeshName, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        let target = self.path_of(mesh, name);
        let tmp = self.write_temp(&target, value)?;
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(store_err(&target, "replace", e));
        }
        sync_dir(&target)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        Err(e) => return Err(store_err(dir, "create directory", e)),
    }
    let meta = fs::metadata(dir).map_err(|e| store_err(dir, "stat directory", e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| store_err(dir, "restrict directory to 0700", e))?;
    }
    Ok(())
}

fn sync_dir(file: &Path) -> Result<(), Error> {
    let dir = file.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| store_err(dir, "fsync directory", e))
}

fn store_err(path: &Path, what: &str, source: io::Error) -> Error {
    Error::Store {
        path: path.to_owned(),
        reason: format!("cannot {what}"),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::block_on;
    use std::sync::{Arc, Barrier};

    fn names() -> (MeshName, SecretName) {
        (
            MeshName::new("default").unwrap(),
            SecretName::new("default.ca-builtin-key-ca-1").unwrap(),
        )
    }

    #[test]
    fn files_are_private_and_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path().join("data")).unwrap();
        let (mesh, name) = names();
        assert!(block_on(store.get(&mesh, &name)).unwrap().is_none());
        block_on(store.put(&mesh, &name, b"one")).unwrap();
        block_on(store.put(&mesh, &name, b"two")).unwrap();
        assert_eq!(
            block_on(store.get(&mesh, &name)).unwrap().unwrap().expose(),
            b"two"
        );
        let path = store.path_of(&mesh, &name);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files are cleaned up");
    }

    #[test]
    fn create_if_absent_keeps_the_first_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let (mesh, name) = names();
        let (v, c) = block_on(store.create_if_absent(&mesh, &name, b"first")).unwrap();
        assert_eq!((v.expose(), c), (&b"first"[..], Created::Ours));
        let (v, c) = block_on(store.create_if_absent(&mesh, &name, b"second")).unwrap();
        assert_eq!((v.expose(), c), (&b"first"[..], Created::Existing));
    }

    #[test]
    fn crash_between_write_and_rename_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let (mesh, name) = names();
        let target = store.path_of(&mesh, &name);

        // Crash before the first value ever became visible: nothing is there, a create works.
        let orphan = store.write_temp(&target, b"lost").unwrap();
        assert!(orphan.exists());
        assert!(block_on(store.get(&mesh, &name)).unwrap().is_none());
        let (v, c) = block_on(store.create_if_absent(&mesh, &name, b"v1")).unwrap();
        assert_eq!((v.expose(), c), (&b"v1"[..], Created::Ours));

        // Crash in the middle of a replace: the old value is intact.
        let orphan2 = store.write_temp(&target, b"v2-half").unwrap();
        assert_eq!(
            block_on(store.get(&mesh, &name)).unwrap().unwrap().expose(),
            b"v1"
        );
        assert!(orphan2
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-"));
        // A later put succeeds despite the leftovers.
        block_on(store.put(&mesh, &name, b"v2")).unwrap();
        assert_eq!(
            block_on(store.get(&mesh, &name)).unwrap().unwrap().expose(),
            b"v2"
        );
    }

    #[test]
    fn racing_creators_end_with_one_value() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_owned();
            let n = 8;
            let barrier = Arc::new(Barrier::new(n));
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let barrier = barrier.clone();
                    let root = root.clone();
                    std::thread::spawn(move || {
                        // Each "process" opens its own store on the same directory.
                        let store = DirectorySecretStore::new(root).unwrap();
                        let (mesh, name) = names();
                        barrier.wait();
                        let value = format!("creator-{i}");
                        block_on(store.create_if_absent(&mesh, &name, value.as_bytes())).unwrap()
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let ours = results.iter().filter(|(_, c)| *c == Created::Ours).count();
            assert_eq!(ours, 1, "round {round}: exactly one creator wins");
            let first = results[0].0.expose().to_vec();
            assert!(
                results.iter().all(|(v, _)| v.expose() == first),
                "round {round}: all see one value"
            );
            let store = DirectorySecretStore::new(&root).unwrap();
            let (mesh, name) = names();
            assert_eq!(
                block_on(store.get(&mesh, &name)).unwrap().unwrap().expose(),
                &first[..]
            );
        }
    }
}

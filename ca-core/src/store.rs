//! The embedded default [`SecretStore`]: one file per secret.
//!
//! Layout: `<root>/<mesh>/<secret>` for a mesh's secrets, `<root>/_global/<secret>` for global
//! ones ([`GLOBAL_DIR`]: no mesh can be named so, as mesh names admit no `_`); directories 0700,
//! files 0600. Writes go through [`fsutil`]: `put` is [`fsutil::write_atomic`],
//! `create_if_absent` is [`fsutil::create_if_absent`], so a crash at any point leaves either the
//! old value or the new one, never a torn file; leftover temporary files start with
//! [`fsutil::TEMP_PREFIX`] (no secret name can) and are ignored.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::datasource::{Created, Scope, SecretStore};
use crate::fsutil::{self, Access, FileError};
use crate::name::SecretName;
use crate::secret::SecretBytes;
use crate::Error;

/// The directory under the root that holds [`Scope::Global`] secrets.
pub const GLOBAL_DIR: &str = "_global";

/// A [`SecretStore`] in a directory of the local file system.
#[derive(Debug)]
pub struct DirectorySecretStore {
    root: PathBuf,
}

impl DirectorySecretStore {
    /// Opens (creating, mode 0700) the store rooted at `root`.
    ///
    /// # Errors
    /// [`Error::Store`] when the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        fsutil::create_private_dir(&root).map_err(store_err)?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a secret lives in.
    pub fn path_of(&self, scope: Scope<'_>, name: &SecretName) -> PathBuf {
        // MeshName and SecretName admit neither `/` nor a leading `.`, so this stays inside root;
        // and no MeshName is GLOBAL_DIR (no `_`), so the scopes never share a directory.
        let dir = match scope {
            Scope::Mesh(mesh) => mesh.as_str(),
            Scope::Global => GLOBAL_DIR,
        };
        self.root.join(dir).join(name.as_str())
    }

    fn read(&self, path: &Path) -> Result<Option<SecretBytes>, Error> {
        // Secrets are small; a huge or special file here is damage, not a secret.
        match crate::datasource::read_regular_file(path, crate::SourcePolicy::MAX_BYTES) {
            Ok(v) => Ok(Some(SecretBytes::new(v))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Store {
                path: path.to_owned(),
                reason: "cannot read".into(),
                source: e,
            }),
        }
    }

    /// The directory `target` goes in, created (0700) if missing.
    fn make_dir_of(&self, target: &Path) -> Result<(), Error> {
        fsutil::create_private_dir(target.parent().unwrap_or(&self.root)).map_err(store_err)
    }
}

#[async_trait]
impl SecretStore for DirectorySecretStore {
    async fn get(&self, scope: Scope<'_>, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        self.read(&self.path_of(scope, name))
    }

    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        crate::check_secret_value(value)?;
        let target = self.path_of(scope, name);
        if let Some(existing) = self.read(&target)? {
            return Ok((existing, Created::Existing));
        }
        self.make_dir_of(&target)?;
        match fsutil::create_if_absent(&target, value, Access::OwnerOnly).map_err(store_err)? {
            Created::Ours => Ok((SecretBytes::new(value.to_vec()), Created::Ours)),
            Created::Existing => match self.read(&target)? {
                Some(existing) => Ok((existing, Created::Existing)),
                None => Err(Error::Inconsistent(format!(
                    "{} vanished while it was being created",
                    target.display()
                ))),
            },
        }
    }

    async fn put(&self, scope: Scope<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        crate::check_secret_value(value)?;
        let target = self.path_of(scope, name);
        self.make_dir_of(&target)?;
        fsutil::write_atomic(&target, value, Access::OwnerOnly).map_err(store_err)
    }

    fn location(&self, scope: Scope<'_>, name: &SecretName) -> String {
        self.path_of(scope, name).display().to_string()
    }
}

fn store_err(e: FileError) -> Error {
    Error::Store {
        path: e.path().to_owned(),
        reason: format!("cannot {}", e.doing()),
        source: e.into_io(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::MeshName;
    use crate::test_util::block_on;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
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
        assert!(block_on(store.get(Scope::Mesh(&mesh), &name))
            .unwrap()
            .is_none());
        block_on(store.put(Scope::Mesh(&mesh), &name, b"one")).unwrap();
        block_on(store.put(Scope::Mesh(&mesh), &name, b"two")).unwrap();
        assert_eq!(
            block_on(store.get(Scope::Mesh(&mesh), &name))
                .unwrap()
                .unwrap()
                .expose(),
            b"two"
        );
        let path = store.path_of(Scope::Mesh(&mesh), &name);
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
        let (v, c) = block_on(store.create_if_absent(Scope::Mesh(&mesh), &name, b"first")).unwrap();
        assert_eq!((v.expose(), c), (&b"first"[..], Created::Ours));
        let (v, c) =
            block_on(store.create_if_absent(Scope::Mesh(&mesh), &name, b"second")).unwrap();
        assert_eq!((v.expose(), c), (&b"first"[..], Created::Existing));
    }

    #[test]
    fn crash_between_write_and_rename_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let (mesh, name) = names();
        let target = store.path_of(Scope::Mesh(&mesh), &name);

        // Crash before the first value ever became visible: nothing is there, a create works.
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let orphan = fsutil::write_temp(&target, b"lost", Access::OwnerOnly).unwrap();
        assert!(orphan.exists());
        assert!(block_on(store.get(Scope::Mesh(&mesh), &name))
            .unwrap()
            .is_none());
        let (v, c) = block_on(store.create_if_absent(Scope::Mesh(&mesh), &name, b"v1")).unwrap();
        assert_eq!((v.expose(), c), (&b"v1"[..], Created::Ours));

        // Crash in the middle of a replace: the old value is intact.
        let orphan2 = fsutil::write_temp(&target, b"v2-half", Access::OwnerOnly).unwrap();
        assert_eq!(
            block_on(store.get(Scope::Mesh(&mesh), &name))
                .unwrap()
                .unwrap()
                .expose(),
            b"v1"
        );
        assert!(orphan2
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-"));
        // A later put succeeds despite the leftovers.
        block_on(store.put(Scope::Mesh(&mesh), &name, b"v2")).unwrap();
        assert_eq!(
            block_on(store.get(Scope::Mesh(&mesh), &name))
                .unwrap()
                .unwrap()
                .expose(),
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
                        block_on(store.create_if_absent(
                            Scope::Mesh(&mesh),
                            &name,
                            value.as_bytes(),
                        ))
                        .unwrap()
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
                block_on(store.get(Scope::Mesh(&mesh), &name))
                    .unwrap()
                    .unwrap()
                    .expose(),
                &first[..]
            );
        }
    }

    #[test]
    fn global_and_mesh_secrets_of_one_name_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let (mesh, name) = names();
        // Even a mesh called "global" is not the global scope.
        let global_mesh = MeshName::new("global").unwrap();
        let scopes = [Scope::Mesh(&mesh), Scope::Mesh(&global_mesh), Scope::Global];
        for scope in scopes {
            let value = format!("value of {scope}");
            let (v, c) = block_on(store.create_if_absent(scope, &name, value.as_bytes())).unwrap();
            assert_eq!(
                (v.expose(), c),
                (value.as_bytes(), Created::Ours),
                "{scope}"
            );
        }
        for scope in scopes {
            let v = block_on(store.get(scope, &name)).unwrap().unwrap();
            assert_eq!(v.expose(), format!("value of {scope}").as_bytes());
        }
        block_on(store.put(Scope::Global, &name, b"replaced")).unwrap();
        assert_eq!(
            block_on(store.get(Scope::Mesh(&mesh), &name))
                .unwrap()
                .unwrap()
                .expose(),
            b"value of mesh `default`"
        );

        // Mesh secrets stay where they always were; global ones have a directory of their own,
        // private like the others.
        assert_eq!(
            store.path_of(Scope::Mesh(&mesh), &name),
            dir.path().join("default").join(name.as_str())
        );
        let global = store.path_of(Scope::Global, &name);
        assert_eq!(global, dir.path().join("_global").join(name.as_str()));
        assert_eq!(fs::read(&global).unwrap(), b"replaced");
        assert_eq!(
            fs::metadata(&global).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(global.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            store.location(Scope::Global, &name),
            global.display().to_string()
        );
    }
}

//! [`OverlaySecretStore`]: reads fall through to a real store, writes stay in memory, so
//! validating a Mesh (or a dry run of a config) never creates or changes persisted secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Created, Error, MeshName, Scope, SecretBytes, SecretName, SecretStore};
use async_trait::async_trait;

/// Memory over an optional read-only lower store: what a backend creates while it is validated
/// (a builtin CA made for the test certificate) lives and dies with this value.
///
/// Others may write the lower store meanwhile (other issuer replicas). A value this overlay
/// *created* (`create_if_absent`) gives way to one that appears below, as it would have lost
/// that race in the lower store; a value *put* here shadows the lower one. Both scopes are
/// layered alike, each apart from the other.
#[derive(Debug, Default)]
pub struct OverlaySecretStore {
    lower: Option<Arc<dyn SecretStore>>,
    upper: Mutex<HashMap<Key, (SecretBytes, Written)>>,
}

/// A secret's name with its scope, owned: the mesh, or `None` for global.
type Key = (Option<MeshName>, SecretName);

fn key(scope: Scope<'_>, name: &SecretName) -> Key {
    (scope.mesh().cloned(), name.clone())
}

/// How a value got into the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    Created,
    Put,
}

impl OverlaySecretStore {
    /// An overlay over `lower` (none: memory only).
    pub fn new(lower: Option<Arc<dyn SecretStore>>) -> Self {
        Self {
            lower,
            upper: Mutex::default(),
        }
    }

    fn upper(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (SecretBytes, Written)>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.upper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SecretStore for OverlaySecretStore {
    async fn get(&self, scope: Scope<'_>, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        let upper = self.upper().get(&key(scope, name)).cloned();
        if let Some((v, Written::Put)) = upper {
            return Ok(Some(v));
        }
        let lower = match &self.lower {
            Some(lower) => lower.get(scope, name).await?,
            None => None,
        };
        Ok(lower.or(upper.map(|(v, _)| v)))
    }

    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        if let Some(existing) = self.get(scope, name).await? {
            return Ok((existing, Created::Existing));
        }
        let mut upper = self.upper();
        let key = key(scope, name);
        if let Some((v, _)) = upper.get(&key) {
            return Ok((v.clone(), Created::Existing));
        }
        let v = SecretBytes::new(value.to_vec());
        upper.insert(key, (v.clone(), Written::Created));
        Ok((v, Created::Ours))
    }

    async fn put(&self, scope: Scope<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        self.upper().insert(
            key(scope, name),
            (SecretBytes::new(value.to_vec()), Written::Put),
        );
        Ok(())
    }

    fn persists(&self) -> bool {
        false
    }

    fn location(&self, scope: Scope<'_>, name: &SecretName) -> String {
        match &self.lower {
            Some(lower) => format!("{} (changes kept in memory)", lower.location(scope, name)),
            None => format!("secret `{name}` ({scope}, in memory)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::block_on;

    #[test]
    fn created_values_give_way_to_the_lower_store_and_put_ones_do_not() {
        let lower: Arc<dyn SecretStore> = Arc::new(OverlaySecretStore::new(None));
        let overlay = OverlaySecretStore::new(Some(lower.clone()));
        let mesh = MeshName::new("default").unwrap();
        let m = Scope::Mesh(&mesh);
        let (a, b) = (SecretName::new("a").unwrap(), SecretName::new("b").unwrap());

        // Created here, then another writer creates it below: theirs is what a real store keeps.
        let (v, c) = block_on(overlay.create_if_absent(m, &a, b"ours")).unwrap();
        assert_eq!((v.expose(), c), (&b"ours"[..], Created::Ours));
        block_on(lower.create_if_absent(m, &a, b"theirs")).unwrap();
        assert_eq!(
            block_on(overlay.get(m, &a)).unwrap().unwrap().expose(),
            b"theirs"
        );
        let (v, c) = block_on(overlay.create_if_absent(m, &a, b"again")).unwrap();
        assert_eq!((v.expose(), c), (&b"theirs"[..], Created::Existing));

        // Put here shadows the lower value; nothing reaches the lower store.
        block_on(lower.create_if_absent(m, &b, b"below")).unwrap();
        block_on(overlay.put(m, &b, b"above")).unwrap();
        assert_eq!(
            block_on(overlay.get(m, &b)).unwrap().unwrap().expose(),
            b"above"
        );
        assert_eq!(
            block_on(lower.get(m, &b)).unwrap().unwrap().expose(),
            b"below"
        );
    }

    #[test]
    fn global_and_mesh_secrets_of_one_name_do_not_collide() {
        let lower: Arc<dyn SecretStore> = Arc::new(OverlaySecretStore::new(None));
        let overlay = OverlaySecretStore::new(Some(lower.clone()));
        let mesh = MeshName::new("default").unwrap();
        let name = SecretName::new("meshca-token-signing-key").unwrap();
        let get = |s: &dyn SecretStore, scope| {
            block_on(s.get(scope, &name))
                .unwrap()
                .map(|v| v.expose().to_vec())
        };

        // Below: only the global one. The mesh does not see it through the overlay.
        block_on(lower.create_if_absent(Scope::Global, &name, b"global below")).unwrap();
        assert_eq!(get(&overlay, Scope::Mesh(&mesh)), None);
        assert_eq!(get(&overlay, Scope::Global).unwrap(), b"global below");

        // Created in the mesh scope here: its own value, the global one untouched.
        let (v, c) =
            block_on(overlay.create_if_absent(Scope::Mesh(&mesh), &name, b"mesh")).unwrap();
        assert_eq!((v.expose(), c), (&b"mesh"[..], Created::Ours));
        let (v, c) = block_on(overlay.create_if_absent(Scope::Global, &name, b"x")).unwrap();
        assert_eq!((v.expose(), c), (&b"global below"[..], Created::Existing));

        // Put in the global scope shadows the lower global value only.
        block_on(overlay.put(Scope::Global, &name, b"global above")).unwrap();
        assert_eq!(get(&overlay, Scope::Global).unwrap(), b"global above");
        assert_eq!(get(&overlay, Scope::Mesh(&mesh)).unwrap(), b"mesh");
        assert_eq!(get(&*lower, Scope::Global).unwrap(), b"global below");
        assert_eq!(get(&*lower, Scope::Mesh(&mesh)), None);
    }
}

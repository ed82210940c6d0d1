//! [`OverlaySecretStore`]: reads fall through to a real store, writes stay in memory, so
//! validating a Mesh (or a dry run of a config) never creates or changes persisted secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Created, Error, MeshName, SecretBytes, SecretName, SecretStore};
use async_trait::async_trait;

/// Memory over an optional read-only lower store: what a backend creates while it is validated
/// (a builtin CA made for the test certificate) lives and dies with this value.
///
/// Others may write the lower store meanwhile (other issuer replicas). A value this overlay
/// *created* (`create_if_absent`) gives way to one that appears below, as it would have lost
/// that race in the lower store; a value *put* here shadows the lower one.
#[derive(Debug, Default)]
pub struct OverlaySecretStore {
    lower: Option<Arc<dyn SecretStore>>,
    upper: Mutex<HashMap<(MeshName, SecretName), (SecretBytes, Written)>>,
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

    #[allow(clippy::type_complexity)]
    fn upper(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(MeshName, SecretName), (SecretBytes, Written)>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.upper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SecretStore for OverlaySecretStore {
    async fn get(&self, mesh: &MeshName, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        let upper = self.upper().get(&(mesh.clone(), name.clone())).cloned();
        if let Some((v, Written::Put)) = upper {
            return Ok(Some(v));
        }
        let lower = match &self.lower {
            Some(lower) => lower.get(mesh, name).await?,
            None => None,
        };
        Ok(lower.or(upper.map(|(v, _)| v)))
    }

    async fn create_if_absent(
        &self,
        mesh: &MeshName,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        if let Some(existing) = self.get(mesh, name).await? {
            return Ok((existing, Created::Existing));
        }
        let mut upper = self.upper();
        let key = (mesh.clone(), name.clone());
        if let Some((v, _)) = upper.get(&key) {
            return Ok((v.clone(), Created::Existing));
        }
        let v = SecretBytes::new(value.to_vec());
        upper.insert(key, (v.clone(), Written::Created));
        Ok((v, Created::Ours))
    }

    async fn put(&self, mesh: &MeshName, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        self.upper().insert(
            (mesh.clone(), name.clone()),
            (SecretBytes::new(value.to_vec()), Written::Put),
        );
        Ok(())
    }

    fn persists(&self) -> bool {
        false
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
        let (a, b) = (SecretName::new("a").unwrap(), SecretName::new("b").unwrap());

        // Created here, then another writer creates it below: theirs is what a real store keeps.
        let (v, c) = block_on(overlay.create_if_absent(&mesh, &a, b"ours")).unwrap();
        assert_eq!((v.expose(), c), (&b"ours"[..], Created::Ours));
        block_on(lower.create_if_absent(&mesh, &a, b"theirs")).unwrap();
        assert_eq!(
            block_on(overlay.get(&mesh, &a)).unwrap().unwrap().expose(),
            b"theirs"
        );
        let (v, c) = block_on(overlay.create_if_absent(&mesh, &a, b"again")).unwrap();
        assert_eq!((v.expose(), c), (&b"theirs"[..], Created::Existing));

        // Put here shadows the lower value; nothing reaches the lower store.
        block_on(lower.create_if_absent(&mesh, &b, b"below")).unwrap();
        block_on(overlay.put(&mesh, &b, b"above")).unwrap();
        assert_eq!(
            block_on(overlay.get(&mesh, &b)).unwrap().unwrap().expose(),
            b"above"
        );
        assert_eq!(
            block_on(lower.get(&mesh, &b)).unwrap().unwrap().expose(),
            b"below"
        );
    }
}

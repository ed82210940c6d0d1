//! [`OverlaySecretStore`]: reads fall through to a real store, writes stay in memory, so
//! validating a Mesh (or a dry run of a config) never creates or changes persisted secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Created, Error, MeshName, SecretBytes, SecretName, SecretStore};
use async_trait::async_trait;

/// Memory over an optional read-only lower store: what a backend creates while it is validated
/// (a builtin CA made for the test certificate) lives and dies with this value.
#[derive(Debug, Default)]
pub struct OverlaySecretStore {
    lower: Option<Arc<dyn SecretStore>>,
    upper: Mutex<HashMap<(MeshName, SecretName), SecretBytes>>,
}

impl OverlaySecretStore {
    /// An overlay over `lower` (none: memory only).
    pub fn new(lower: Option<Arc<dyn SecretStore>>) -> Self {
        Self {
            lower,
            upper: Mutex::default(),
        }
    }

    fn upper(&self) -> std::sync::MutexGuard<'_, HashMap<(MeshName, SecretName), SecretBytes>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.upper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SecretStore for OverlaySecretStore {
    async fn get(&self, mesh: &MeshName, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        if let Some(v) = self.upper().get(&(mesh.clone(), name.clone())) {
            return Ok(Some(v.clone()));
        }
        match &self.lower {
            Some(lower) => lower.get(mesh, name).await,
            None => Ok(None),
        }
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
        if let Some(v) = upper.get(&key) {
            return Ok((v.clone(), Created::Existing));
        }
        let v = SecretBytes::new(value.to_vec());
        upper.insert(key, v.clone());
        Ok((v, Created::Ours))
    }

    async fn put(&self, mesh: &MeshName, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        self.upper().insert(
            (mesh.clone(), name.clone()),
            SecretBytes::new(value.to_vec()),
        );
        Ok(())
    }
}

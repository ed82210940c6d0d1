//! Data sources: where certificates, keys, tokens and credentials come from, and the
//! [`SecretStore`] that holds mesh-scoped secrets.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine as _;

use crate::name::{MeshName, SecretName};
use crate::secret::SecretBytes;
use crate::Error;

/// Where a value comes from, as Kuma writes it in a Mesh (`secret`, `file`, `inline`,
/// `inlineString`) plus meshca's `env`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataSource {
    /// A mesh-scoped secret, looked up in the [`SecretStore`].
    Secret(SecretName),
    /// A file on the control plane's file system.
    File(PathBuf),
    /// Bytes given inline, base64-decoded at config load.
    Inline(SecretBytes),
    /// A string given inline.
    InlineString(SecretBytes),
    /// An environment variable of the control plane (meshca extension).
    Env(String),
}

impl fmt::Debug for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl DataSource {
    /// Parses a base64 `inline` value.
    ///
    /// # Errors
    /// A message when `b64` is not valid base64.
    pub fn inline_base64(b64: &str) -> Result<Self, String> {
        let trimmed: String = b64.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(trimmed.as_bytes())
            .map(|v| Self::Inline(SecretBytes::new(v)))
            .map_err(|_| "is not valid base64".to_string())
    }

    /// Describes the source without its value, for messages: `secret `x``, `file /a/b`,
    /// `env VAR`, `inline value`.
    pub fn describe(&self) -> String {
        match self {
            Self::Secret(n) => format!("secret `{n}`"),
            Self::File(p) => format!("file {}", p.display()),
            Self::Inline(_) => "inline value".into(),
            Self::InlineString(_) => "inlineString value".into(),
            Self::Env(v) => format!("env {v}"),
        }
    }

    /// The secret this source names, if any.
    pub fn secret_name(&self) -> Option<&SecretName> {
        match self {
            Self::Secret(n) => Some(n),
            _ => None,
        }
    }

    /// Reads the value.
    ///
    /// # Errors
    /// [`Error::SecretNotFound`] for a missing secret, [`Error::DataSource`] for an unreadable
    /// file or unset variable, or the store's error.
    pub async fn resolve(
        &self,
        mesh: &MeshName,
        store: &dyn SecretStore,
    ) -> Result<SecretBytes, Error> {
        match self {
            Self::Secret(name) => {
                store
                    .get(mesh, name)
                    .await?
                    .ok_or_else(|| Error::SecretNotFound {
                        mesh: mesh.to_string(),
                        name: name.to_string(),
                    })
            }
            Self::File(path) => {
                std::fs::read(path)
                    .map(SecretBytes::new)
                    .map_err(|e| Error::DataSource {
                        source_desc: self.describe(),
                        reason: "cannot be read".into(),
                        source: Some(Box::new(e)),
                    })
            }
            Self::Inline(v) | Self::InlineString(v) => Ok(v.clone()),
            Self::Env(var) => match std::env::var_os(var) {
                Some(v) => Ok(SecretBytes::new(v.into_encoded_bytes())),
                None => Err(Error::DataSource {
                    source_desc: self.describe(),
                    reason: "is not set".into(),
                    source: None,
                }),
            },
        }
    }
}

/// Where mesh-scoped secrets live: a directory by default, Kubernetes Secrets when scaled out.
#[async_trait]
pub trait SecretStore: fmt::Debug + Send + Sync {
    /// Reads a secret; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be read.
    async fn get(&self, mesh: &MeshName, name: &SecretName) -> Result<Option<SecretBytes>, Error>;

    /// Creates a secret only if it does not exist yet, atomically: of several racing creators
    /// exactly one value is stored. Returns the stored value (ours or the winner's) and whether it
    /// was ours.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be written.
    async fn create_if_absent(
        &self,
        mesh: &MeshName,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error>;

    /// Writes a secret, replacing any previous value atomically.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be written.
    async fn put(&self, mesh: &MeshName, name: &SecretName, value: &[u8]) -> Result<(), Error>;
}

/// Whether [`SecretStore::create_if_absent`] stored the caller's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The caller's value was stored.
    Ours,
    /// Another value was already there (or won a race) and was kept.
    Existing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DirectorySecretStore;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        crate::test_util::block_on(f)
    }

    #[test]
    fn every_source_resolves_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let mesh = MeshName::new("default").unwrap();
        let name = SecretName::new("sec-1").unwrap();

        let err = block_on(DataSource::Secret(name.clone()).resolve(&mesh, &store)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret `sec-1` not found in mesh `default`"
        );
        block_on(store.put(&mesh, &name, b"value")).unwrap();
        assert_eq!(
            block_on(DataSource::Secret(name).resolve(&mesh, &store))
                .unwrap()
                .expose(),
            b"value"
        );

        let file = dir.path().join("f.pem");
        std::fs::write(&file, b"file-bytes").unwrap();
        assert_eq!(
            block_on(DataSource::File(file).resolve(&mesh, &store))
                .unwrap()
                .expose(),
            b"file-bytes"
        );
        let missing = DataSource::File(dir.path().join("nope"));
        let err = block_on(missing.resolve(&mesh, &store)).unwrap_err();
        assert!(err.to_string().starts_with("data source file "), "{err}");
        assert!(err.to_string().ends_with("nope: cannot be read"), "{err}");

        let inline = DataSource::inline_base64("aGVs\nbG8=").unwrap();
        assert_eq!(
            block_on(inline.resolve(&mesh, &store)).unwrap().expose(),
            b"hello"
        );
        assert!(DataSource::inline_base64("!!").is_err());

        let err = block_on(DataSource::Env("MESHCA_TEST_UNSET_VAR".into()).resolve(&mesh, &store))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data source env MESHCA_TEST_UNSET_VAR: is not set"
        );
        let path = DataSource::Env("PATH".into());
        assert!(!block_on(path.resolve(&mesh, &store)).unwrap().is_empty());
    }

    #[test]
    fn debug_never_shows_inline_values() {
        let s = DataSource::InlineString(SecretBytes::from("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{s:?}"), "inlineString value");
    }
}

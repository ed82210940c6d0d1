//! Bootstrap tokens: how a data plane with no certificate yet gets its first one.
//!
//! `meshca token create --mesh M --tag kuma.io/service=web` asks the issuer (`CreateToken`) for a
//! JWT scoped to exactly one identity, in the spirit of Kuma's data plane tokens and SPIRE's join
//! tokens. `meshca agent --token-file` presents it (gRPC metadata `authorization: Bearer …`, on a
//! TLS connection without a client certificate) for its first certificate only; afterwards it
//! renews with that mesh certificate.
//!
//! - Signed ES256 (P-256, via `jsonwebtoken` on aws-lc-rs) with the issuer's token signing key:
//!   the global secret `meshca-token-signing-key` of its secret store
//!   (`DATA_DIR/secrets/_global/meshca-token-signing-key`, 0600; with `--store kubernetes` a
//!   global Secret shared by all replicas). Created once if absent (the first writer wins, as
//!   with the builtin CA); the `kid` header names it by the SHA-256 of its public key. A key kept
//!   where earlier versions kept it, `DATA_DIR/tokens/signing-key.pem`, is moved into the store
//!   at the first start that finds none there, so the tokens it signed stay good.
//! - Verified by signature (ES256 only, `kid` must be the current key), issuer, audience and
//!   expiry; at most [`MAX_TOKEN_BYTES`]; valid for at most [`MAX_VALID_FOR`].
//! - Bound to one identity: mesh and tags in the claims must equal the requested identity (the
//!   same check as a data plane renewing with its certificate).
//! - Revoked all at once by rotating the signing key (`meshca token rotate-key`, the admin only);
//!   other replicas pick the new key up within `--reload-interval`.
//!
//! The token itself is never logged: refusals log the reason, and the `jti` when the token
//! verified far enough to have one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ca_core::{
    Created, Identity, KeyType, MeshName, PrivateKey, Scope, SecretBytes, SecretName, SecretStore,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use ca_core::fsutil::FileError;

use crate::files::ReadError;

/// Why the token signing key cannot be loaded, made, moved or rotated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenError {
    /// The stored key (or the legacy key file) is not a usable private key.
    #[error("token signing key {at}")]
    Unusable {
        /// Where the key is kept (a secret's location or a file).
        at: String,
        #[source]
        source: ca_core::Error,
    },
    /// The key is of another type.
    #[error("token signing key {at} is not an ECDSA P-256 key")]
    NotP256 { at: String },
    /// The JWT library refused the key.
    #[error("token signing key {at}")]
    Rejected {
        at: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A new key could not be generated.
    #[error("cannot generate a token signing key")]
    Generate(#[source] ca_core::Error),
    /// The legacy key file cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The secret store failed (its error names the secret).
    #[error(transparent)]
    Store(#[from] ca_core::Error),
    /// The legacy key's directory could not be synced.
    #[error(transparent)]
    File(#[from] FileError),
    /// The key was moved into the store but the legacy file stays.
    #[error("the token signing key is in {at} now, but {} cannot be removed; remove it", path.display())]
    LegacyNotRemoved {
        at: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenFileError {
    /// It cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Longer than any token.
    #[error("token file {} is longer than {MAX_TOKEN_BYTES} bytes", path.display())]
    TooLong { path: PathBuf },
    /// Not text.
    #[error("token file {}", path.display())]
    NotText {
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// The gRPC metadata key carrying `Bearer <token>`.
pub(crate) const METADATA_KEY: &str = "authorization";
/// Largest token accepted (ours are well under 1 KiB).
pub(crate) const MAX_TOKEN_BYTES: usize = 4096;
/// Longest validity a token may be minted with.
pub(crate) const MAX_VALID_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The `iss` claim.
const ISSUER: &str = "meshca";
/// The `aud` claim: these tokens are good for bootstrap only.
const AUDIENCE: &str = "meshca-bootstrap";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// The global secret holding the signing key.
pub(crate) const KEY_SECRET: &str = "meshca-token-signing-key";
/// Where earlier versions kept the signing key on a file store, under the data directory.
pub(crate) const LEGACY_KEY_FILE: &str = "tokens/signing-key.pem";

/// The claims of a bootstrap token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// The identity's SPIFFE ID (informational; `mesh` and `tags` bind it).
    sub: String,
    mesh: String,
    /// Tag name → values, as Kuma's data plane tokens spell them.
    tags: BTreeMap<String, Vec<String>>,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// Random, for the logs.
    jti: String,
}

/// One signing key: the private half signs, the public half verifies.
struct SigningKey {
    /// Hex SHA-256 of the public key (SPKI), first 16 digits.
    id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From a PKCS#8 PEM P-256 key.
    fn from_pem(pem: &[u8], what: &str) -> Result<Self, TokenError> {
        let key = PrivateKey::from_pem(pem).map_err(|source| TokenError::Unusable {
            at: what.to_owned(),
            source,
        })?;
        if key.key_type() != KeyType::EcdsaP256 {
            return Err(TokenError::NotP256 {
                at: what.to_owned(),
            });
        }
        let rejected = |source| TokenError::Rejected {
            at: what.to_owned(),
            source,
        };
        let spki = key.spki_der();
        let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.clone()));
        let encoding = EncodingKey::from_ec_pem(key.to_pem().expose()).map_err(rejected)?;
        let decoding = DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(rejected)?;
        let id = crate::hash::sha256_hex(&spki)
            .get(..16)
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            id,
            encoding,
            decoding,
        })
    }

    /// A fresh key and its PEM.
    fn generate() -> Result<(Self, ca_core::SecretBytes), TokenError> {
        let key = KeyType::EcdsaP256
            .generate()
            .map_err(TokenError::Generate)?;
        let pem = key.to_pem();
        Ok((Self::from_pem(pem.expose(), "(new)")?, pem))
    }
}

/// Moves a signing key from where earlier versions kept it (`legacy`, a PEM file) into `store`,
/// unless there is no such file; the stored key. The store's key wins a race; either way the
/// file is removed once the store holds a key, so that a key rotated away later can never come
/// back from it.
async fn adopt_legacy(
    store: &dyn SecretStore,
    name: &SecretName,
    legacy: &Path,
) -> Result<Option<SecretBytes>, TokenError> {
    if !legacy.exists() {
        return Ok(None);
    }
    let pem = match crate::files::read_file(legacy, "token signing key") {
        Ok(pem) => pem,
        // Another issuer on this data directory moved it in the meantime.
        Err(_) if !legacy.exists() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A damaged key file is the operator's to look at, never replaced by a new key.
    SigningKey::from_pem(&pem, &legacy.display().to_string())?;
    let (stored, created) = store.create_if_absent(Scope::Global, name, &pem).await?;
    let at = store.location(Scope::Global, name);
    if created == Created::Ours {
        tracing::info!(from = %legacy.display(), to = %at, "moved the token signing key into the secret store");
    }
    match std::fs::remove_file(legacy) {
        Ok(()) => {
            if let Some(dir) = legacy.parent() {
                ca_core::fsutil::sync_dir(dir)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TokenError::LegacyNotRemoved {
                at,
                path: legacy.to_owned(),
                source,
            })
        }
    }
    Ok(Some(stored))
}

fn secret_name() -> Result<SecretName, TokenError> {
    Ok(SecretName::new(KEY_SECRET)?)
}

/// Mints and verifies bootstrap tokens with the current signing key.
#[derive(Debug)]
pub(crate) struct Tokens {
    current: RwLock<Arc<SigningKey>>,
    /// The current key's id, for streams opened with a token to end when it changes.
    key_ids: tokio::sync::watch::Sender<String>,
    /// Holds the key as the global secret [`KEY_SECRET`].
    store: Arc<dyn SecretStore>,
    name: SecretName,
    /// Serializes rotations and refreshes.
    writing: tokio::sync::Mutex<()>,
}

/// What a verified token is good for beyond its identity: the key that signed it and its
/// expiry, so a stream opened with it can end when either runs out.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// The signing key's id.
    pub(crate) key_id: String,
    /// The `exp` claim.
    pub(crate) expires_at: SystemTime,
}

/// A token that was refused, and why (never the token itself).
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) reason: String,
    /// The token's `jti` when it could be read.
    pub(crate) jti: Option<String>,
}

impl Tokens {
    /// Loads the signing key, the global secret [`KEY_SECRET`] of `store`, creating it if there
    /// is none: from `legacy` (where earlier versions kept it on a file store) when that file
    /// exists, else a new one.
    pub(crate) async fn open(
        store: Arc<dyn SecretStore>,
        legacy: Option<PathBuf>,
    ) -> Result<Self, TokenError> {
        // One provider, chosen here: the build enables only aws_lc_rs, this makes it explicit.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let name = secret_name()?;
        let mut stored = store.get(Scope::Global, &name).await?;
        if let (None, Some(legacy)) = (&stored, &legacy) {
            stored = adopt_legacy(&*store, &name, legacy).await?;
        }
        let stored = match stored {
            Some(v) => v,
            None => {
                let (_, pem) = SigningKey::generate()?;
                let (v, created) = store
                    .create_if_absent(Scope::Global, &name, pem.expose())
                    .await?;
                if created == Created::Ours {
                    tracing::info!(secret = %store.location(Scope::Global, &name), "created the token signing key");
                }
                v
            }
        };
        let at = store.location(Scope::Global, &name);
        let key = SigningKey::from_pem(stored.expose(), &at)?;
        tracing::info!(key_id = %key.id, %at, "token signing key loaded");
        let (key_ids, _) = tokio::sync::watch::channel(key.id.clone());
        Ok(Self {
            key_ids,
            current: RwLock::new(Arc::new(key)),
            store,
            name,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the key is kept, for messages.
    fn location(&self) -> String {
        self.store.location(Scope::Global, &self.name)
    }

    fn key(&self) -> Arc<SigningKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current key's id.
    pub(crate) fn key_id(&self) -> String {
        self.key().id.clone()
    }

    /// A token for `identity`, valid for `valid_for` (at most [`MAX_VALID_FOR`]); with its
    /// expiry (Unix seconds).
    pub(crate) fn mint(
        &self,
        identity: &Identity,
        valid_for: Duration,
    ) -> Result<(String, u64), ca_core::Error> {
        if valid_for.is_zero() || valid_for > MAX_VALID_FOR {
            return Err(ca_core::Error::invalid_argument(
                "valid_for",
                format!("must be between 1s and {}h", MAX_VALID_FOR.as_secs() / 3600),
            ));
        }
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: identity.spiffe_id(),
            mesh: identity.mesh().to_string(),
            tags: identity.tags().fold(BTreeMap::new(), |mut tags, (k, v)| {
                tags.entry(k.to_owned())
                    .or_insert_with(Vec::new)
                    .push(v.to_owned());
                tags
            }),
            iat: now,
            nbf: now,
            exp: now + valid_for.as_secs(),
            jti: crate::hash::sha256_hex(&rand::random::<[u8; 16]>())
                .get(..32)
                .unwrap_or_default()
                .to_owned(),
        };
        let key = self.key();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| ca_core::Error::crypto(format!("cannot sign the token: {e}")))?;
        Ok((token, claims.exp))
    }

    /// The identity a token was minted for, if it verifies with the current key.
    #[cfg_attr(not(test), expect(dead_code, reason = "the service uses verify_lease"))]
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, Refused> {
        self.verify_lease(token).map(|(identity, _)| identity)
    }

    /// Follows the current key's id (it changes on rotation, here or by another replica).
    pub(crate) fn key_ids(&self) -> tokio::sync::watch::Receiver<String> {
        self.key_ids.subscribe()
    }

    /// [`verify`](Self::verify), with the key that signed the token and its expiry.
    pub(crate) fn verify_lease(&self, token: &str) -> Result<(Identity, Lease), Refused> {
        let refused = |reason: String, jti: Option<String>| Refused { reason, jti };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused(
                format!("the token is longer than {MAX_TOKEN_BYTES} bytes"),
                None,
            ));
        }
        let key = self.key();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refused("the token is not a JWT".into(), None))?;
        if header.kid.as_deref() != Some(key.id.as_str()) {
            return Err(refused(
                "the token was not signed with the current signing key (rotated, or another issuer's)"
                    .into(),
                None,
            ));
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let reason = match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidSignature => "the token's signature does not verify (tampered?)",
                    K::InvalidAudience | K::InvalidIssuer => {
                        "the token is not a meshca bootstrap token"
                    }
                    K::InvalidAlgorithm => "the token is not signed ES256",
                    _ => "the token cannot be read",
                };
                refused(reason.into(), None)
            })?;
        let c = data.claims;
        let lease = Lease {
            key_id: key.id.clone(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(c.exp),
        };
        let jti = Some(c.jti.clone());
        let mesh = MeshName::new(c.mesh.as_str())
            .map_err(|e| refused(format!("the token's mesh: {e}"), jti.clone()))?;
        let pairs = c
            .tags
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())));
        Identity::new(mesh, pairs)
            .map(|identity| (identity, lease))
            .map_err(|e| refused(format!("the token's tags: {e}"), jti.clone()))
    }

    /// Replaces the signing key: every token minted before stops verifying, here at once and on
    /// other replicas at their next [`refresh`](Self::refresh). The new key's id.
    pub(crate) async fn rotate(&self) -> Result<String, TokenError> {
        let _w = self.writing.lock().await;
        let (key, pem) = SigningKey::generate()?;
        self.store
            .put(Scope::Global, &self.name, pem.expose())
            .await?;
        let id = key.id.clone();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        self.key_ids.send_replace(id.clone());
        tracing::warn!(key_id = %id, at = %self.location(), "token signing key rotated; every earlier token is revoked");
        Ok(id)
    }

    /// Reads the stored key again and takes it if another replica rotated it.
    pub(crate) async fn refresh(&self) -> Result<(), TokenError> {
        let _w = self.writing.lock().await;
        let Some(stored) = self.store.get(Scope::Global, &self.name).await? else {
            return Ok(());
        };
        let key = SigningKey::from_pem(stored.expose(), &self.location())?;
        if key.id != self.key().id {
            tracing::warn!(key_id = %key.id, "token signing key changed in the store; earlier tokens are revoked");
            self.key_ids.send_replace(key.id.clone());
            *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        }
        Ok(())
    }

    /// Refreshes every `every` for as long as the process runs.
    pub(crate) async fn follow(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %crate::api::status::message(&e), "cannot re-read the token signing key; keeping the current one");
            }
        }
    }
}

/// The token in `authorization: Bearer <token>`, if the metadata holds one.
pub(crate) fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<Result<&str, Refused>> {
    let value = metadata.get(METADATA_KEY)?;
    let text = match value.to_str() {
        Ok(t) => t,
        Err(_) => {
            return Some(Err(Refused {
                reason: "the authorization header is not text".into(),
                jti: None,
            }))
        }
    };
    Some(
        text.strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| Refused {
                reason: "the authorization header is not `Bearer <token>`".into(),
                jti: None,
            }),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a token file: trimmed, at most [`MAX_TOKEN_BYTES`]. A file that other users may read
/// (group or other permission bits) is reported: the token is a secret.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<String, TokenFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let bytes = crate::files::read_file(path, "token file")?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "token file is open to other users; chmod 600 it");
        }
    }
    if bytes.len() > MAX_TOKEN_BYTES + 2 {
        return Err(TokenFileError::TooLong {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|source| TokenFileError::NotText {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Identity {
        Identity::new(
            MeshName::new("default").unwrap(),
            [("kuma.io/service", "web"), ("version", "v1")],
        )
        .unwrap()
    }

    fn store(dir: &Path) -> Arc<dyn SecretStore> {
        Arc::new(ca_core::DirectorySecretStore::new(dir.join("secrets")).unwrap())
    }

    async fn tokens(dir: &Path) -> Tokens {
        Tokens::open(store(dir), Some(dir.join(LEGACY_KEY_FILE)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn minted_tokens_verify_to_their_identity_and_rotation_revokes_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path()).await;
        let (token, exp) = t.mint(&web(), Duration::from_secs(3600)).unwrap();
        assert!(exp > unix_now() + 3500);
        let id = t.verify(&token).unwrap();
        assert_eq!(id.uri_sans(), web().uri_sans());
        // The key is kept: a second open verifies the same token.
        let again = tokens(dir.path()).await;
        assert_eq!(again.key_id(), t.key_id());
        assert!(again.verify(&token).is_ok());
        // Tampered payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1].insert(3, 'A');
        assert!(t.verify(&parts.join(".")).is_err());
        // Rotation revokes it, here and (after refresh) in the other instance.
        let old = t.key_id();
        let new = t.rotate().await.unwrap();
        assert_ne!(old, new);
        let r = t.verify(&token).unwrap_err();
        assert!(r.reason.contains("signing key"), "{}", r.reason);
        again.refresh().await.unwrap();
        assert_eq!(again.key_id(), new);
        assert!(again.verify(&token).is_err());
        // Limits.
        assert!(t.mint(&web(), Duration::ZERO).is_err());
        assert!(t.mint(&web(), MAX_VALID_FOR * 2).is_err());
        assert!(t.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(t.verify("not a jwt").is_err());
        // The key file is private.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("secrets/_global").join(KEY_SECRET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Debug never shows the key.
        let shown = format!("{t:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[tokio::test]
    async fn a_key_where_earlier_versions_kept_it_is_moved_into_the_store() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_KEY_FILE);
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        let (_, pem) = SigningKey::generate().unwrap();
        std::fs::write(&legacy, pem.expose()).unwrap();
        std::fs::set_permissions(&legacy, std::fs::Permissions::from_mode(0o600)).unwrap();
        let old = SigningKey::from_pem(pem.expose(), "test").unwrap().id;

        // Adopted: tokens it signed stay good, and it is the store's secret now.
        let t = tokens(dir.path()).await;
        assert_eq!(t.key_id(), old);
        let name = secret_name().unwrap();
        let stored = store(dir.path())
            .get(Scope::Global, &name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.expose(), pem.expose());
        assert!(
            !legacy.exists(),
            "the old file is gone once the store holds the key"
        );

        // Rotated away, it never comes back: a later start reads the store.
        let new = t.rotate().await.unwrap();
        assert_eq!(tokens(dir.path()).await.key_id(), new);

        // A damaged key file is refused, not replaced by a new key.
        let other = tempfile::tempdir().unwrap();
        let legacy = other.path().join(LEGACY_KEY_FILE);
        std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        std::fs::write(&legacy, b"not a key").unwrap();
        let err = Tokens::open(store(other.path()), Some(legacy.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("token signing key"), "{err}");
        assert!(legacy.exists());
        let none = store(other.path()).get(Scope::Global, &name).await.unwrap();
        assert!(none.is_none());
    }
}

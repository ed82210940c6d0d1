//! Data sources: where certificates, keys, tokens and credentials come from, and the
//! [`SecretStore`] that holds secrets, each in a [`Scope`]: one mesh's, or global.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;

use crate::name::{MeshName, SecretName};
use crate::secret::SecretBytes;
use crate::upstream::{AllowedUpstreams, Upstream};
use crate::Error;

/// Where a value comes from, as Kuma writes it in a Mesh (`secret`, `file`, `inline`,
/// `inlineString`) plus meshca's `env` and `awsSecretsManager`.
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
    /// A secret in AWS Secrets Manager, or one field of its JSON (meshca extension).
    AwsSecretsManager(AwsSecretRef),
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
            Self::AwsSecretsManager(r) => r.to_string(),
        }
    }

    /// The secret this source names, if any.
    pub fn secret_name(&self) -> Option<&SecretName> {
        match self {
            Self::Secret(n) => Some(n),
            _ => None,
        }
    }

    /// Reads the value under `policy`: what the source may reach and how much it may read.
    ///
    /// `file:` reads happen on a thread of their own, so a slow file system never stalls the
    /// caller's async runtime, and are bounded by [`SourcePolicy::timeout`].
    ///
    /// # Errors
    /// [`Error::SecretNotFound`] for a missing secret; [`Error::DataSource`] for a source the
    /// policy refuses, or one that cannot be used (missing, unreadable, not a regular file,
    /// over [`SourcePolicy::max_bytes`]: the message does not say which, so that it tells a remote
    /// caller nothing about the server); or the store's error.
    pub async fn resolve(
        &self,
        mesh: &MeshName,
        store: &dyn SecretStore,
        policy: &SourcePolicy,
    ) -> Result<SecretBytes, Error> {
        let value = match self {
            Self::Secret(name) => {
                store
                    .get(Scope::Mesh(mesh), name)
                    .await?
                    .ok_or_else(|| Error::SecretNotFound {
                        mesh: mesh.to_string(),
                        name: name.to_string(),
                    })?
            }
            Self::File(path) => {
                let path = policy
                    .check_file(path)
                    .map_err(|reason| self.refused(reason))?;
                read_file_off_thread(path, policy.max_bytes, policy.timeout)
                    .await
                    .map_err(|()| self.refused(CANNOT_BE_USED.into()))?
            }
            Self::Inline(v) | Self::InlineString(v) => v.clone(),
            Self::Env(var) => {
                policy
                    .check_env(var)
                    .map_err(|reason| self.refused(reason))?;
                match std::env::var_os(var) {
                    Some(v) => SecretBytes::new(v.into_encoded_bytes()),
                    None => return Err(self.refused(CANNOT_BE_USED.into())),
                }
            }
            Self::AwsSecretsManager(r) => {
                let client = policy.check_aws().map_err(|reason| self.refused(reason))?;
                let whole = client
                    .secret_value(&r.secret_id, policy.max_bytes, policy.timeout)
                    .await
                    .map_err(|e| Error::DataSource {
                        source_desc: self.describe(),
                        reason: e.reason,
                        source: e.source,
                    })?;
                if whole.len() > policy.max_bytes {
                    return Err(self.refused(format!("is larger than {} bytes", policy.max_bytes)));
                }
                match &r.key {
                    Some(key) => json_field(whole.expose(), key).map_err(|e| self.refused(e))?,
                    None => whole,
                }
            }
        };
        if value.len() > policy.max_bytes {
            return Err(self.refused(format!("is larger than {} bytes", policy.max_bytes)));
        }
        Ok(value)
    }

    fn refused(&self, reason: String) -> Error {
        Error::DataSource {
            source_desc: self.describe(),
            reason,
            source: None,
        }
    }
}

/// Why the directory a remote [`SourcePolicy`] lets `file:` sources read is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceDirError {
    /// It cannot be resolved (it does not exist, or a component cannot be read).
    #[error("{}", .dir.display())]
    Unreadable {
        /// The directory as given.
        dir: PathBuf,
        /// Why it cannot be resolved.
        #[source]
        source: std::io::Error,
    },
    /// It is not a directory.
    #[error("{} is not a directory", .dir.display())]
    NotADirectory {
        /// The path as given.
        dir: PathBuf,
    },
}

/// The one message for a file or variable that cannot be read, whatever the reason.
const CANNOT_BE_USED: &str =
    "cannot be used (it must exist, be readable, be a regular file and be at most the size limit)";

/// What data sources may reach when a Mesh is resolved, and how much they may read.
///
/// A Mesh the operator wrote (a `--mesh-config` file, the CLI) is resolved with
/// [`SourcePolicy::local`]: any regular file, any environment variable. A Mesh that arrives over
/// the network (`ValidateBackend`) is resolved with [`SourcePolicy::remote`]: `secret:` (of its
/// own mesh only, as every secret lookup is mesh-scoped), `inline` and `inlineString`, and
/// `file:` / `env:` only inside what the operator allowed explicitly. Every source is capped at
/// [`SourcePolicy::max_bytes`].
#[derive(Clone, Debug)]
pub struct SourcePolicy {
    files: FileAccess,
    env: EnvAccess,
    aws: Option<Arc<dyn AwsSecretsManager>>,
    /// `None`: any upstream (the operator's own Mesh); else only these (a Mesh from the network).
    upstreams: Option<AllowedUpstreams>,
    /// Largest value any source may produce.
    pub max_bytes: usize,
    /// How long a file read may take.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
enum FileAccess {
    Any,
    /// Only below this directory (canonical, absolute); `None`: no files at all.
    Within(Option<PathBuf>),
}

#[derive(Clone, Debug)]
enum EnvAccess {
    Any,
    Only(Vec<String>),
}

impl SourcePolicy {
    /// The default cap on a data source's value: 1 MiB.
    pub const MAX_BYTES: usize = 1024 * 1024;
    /// The default time a file read may take.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// For configuration the operator wrote: every regular file and environment variable.
    pub fn local() -> Self {
        Self {
            files: FileAccess::Any,
            env: EnvAccess::Any,
            aws: None,
            upstreams: None,
            max_bytes: Self::MAX_BYTES,
            timeout: Self::TIMEOUT,
        }
    }

    /// For configuration from the network: files only below `file_dir` (none when `None`),
    /// environment variables only those named in `env_vars`.
    ///
    /// # Errors
    /// [`SourceDirError`] when `file_dir` cannot be resolved or is not a directory.
    pub fn remote(file_dir: Option<&Path>, env_vars: Vec<String>) -> Result<Self, SourceDirError> {
        let dir = match file_dir {
            Some(d) => {
                let canonical = d
                    .canonicalize()
                    .map_err(|source| SourceDirError::Unreadable {
                        dir: d.to_owned(),
                        source,
                    })?;
                if !canonical.is_dir() {
                    return Err(SourceDirError::NotADirectory { dir: d.to_owned() });
                }
                Some(canonical)
            }
            None => None,
        };
        Ok(Self {
            files: FileAccess::Within(dir),
            env: EnvAccess::Only(env_vars),
            aws: None,
            upstreams: Some(AllowedUpstreams::none()),
            max_bytes: Self::MAX_BYTES,
            timeout: Self::TIMEOUT,
        })
    }

    /// Resolves `awsSecretsManager` sources with `client` (with the control plane's AWS
    /// credentials). Without it they are refused. A Mesh from the network should not get one:
    /// it would read whatever those credentials can.
    #[must_use]
    pub fn with_aws_secrets_manager(mut self, client: Arc<dyn AwsSecretsManager>) -> Self {
        self.aws = Some(client);
        self
    }

    /// Lets a Mesh under this policy contact `allowed` (only a [`remote`](Self::remote) policy
    /// is restricted; a local one reaches any upstream anyway).
    #[must_use]
    pub fn with_allowed_upstreams(mut self, allowed: AllowedUpstreams) -> Self {
        if self.upstreams.is_some() {
            self.upstreams = Some(allowed);
        }
        self
    }

    /// Whether this policy is for a Mesh that arrived over the network: it contacts only the
    /// upstreams the operator allowed, over TLS that verifies, and never approves its own
    /// requests.
    pub fn is_remote(&self) -> bool {
        self.upstreams.is_some()
    }

    /// Whether a backend may contact `upstream`.
    ///
    /// # Errors
    /// Why not: the upstream, and the server flag that would allow it.
    pub fn check_upstream(&self, upstream: &Upstream) -> Result<(), String> {
        match &self.upstreams {
            None => Ok(()),
            Some(allowed) => allowed.check(upstream),
        }
    }

    /// Whether `source` is one this policy lets be read, without reading it: for the backends of
    /// a Mesh that are not built because their upstream is not allowed.
    ///
    /// # Errors
    /// The same reasons [`DataSource::resolve`] would give for a refused source.
    pub fn check_unread(&self, source: &DataSource) -> Result<(), String> {
        match source {
            DataSource::Secret(_) | DataSource::Inline(_) | DataSource::InlineString(_) => Ok(()),
            DataSource::File(p) => self.check_file(p).map(|_| ()),
            DataSource::Env(v) => self.check_env(v),
            DataSource::AwsSecretsManager(_) => self.check_aws().map(|_| ()),
        }
    }

    fn check_aws(&self) -> Result<&dyn AwsSecretsManager, String> {
        match (&self.aws, &self.files) {
            (Some(c), _) => Ok(c.as_ref()),
            (None, FileAccess::Within(_)) => Err(
                "awsSecretsManager data sources are not allowed in a Mesh sent to the server (they would read with the server's AWS credentials; use secret, inline or inlineString)"
                    .into(),
            ),
            (None, FileAccess::Any) => Err(
                "this meshca reads no AWS Secrets Manager secrets (it was built without the `aws-secrets-manager` feature, or the control plane gave it no client)"
                    .into(),
            ),
        }
    }

    /// The directory `file:` sources must stay in, when restricted.
    pub fn file_dir(&self) -> Option<&Path> {
        match &self.files {
            FileAccess::Within(d) => d.as_deref(),
            FileAccess::Any => None,
        }
    }

    fn check_file(&self, path: &Path) -> Result<PathBuf, String> {
        match &self.files {
            FileAccess::Any => Ok(path.to_owned()),
            FileAccess::Within(None) => Err(
                "file data sources are not allowed in a Mesh sent to the server (use secret, inline or inlineString, or start the server with --allow-file-sources DIR)"
                    .into(),
            ),
            FileAccess::Within(Some(dir)) => {
                let outside = || {
                    format!(
                        "must be an absolute path inside {} (the directory the server allows with --allow-file-sources)",
                        dir.display()
                    )
                };
                if !path.is_absolute()
                    || path
                        .components()
                        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
                {
                    return Err(outside());
                }
                if !path.starts_with(dir) {
                    return Err(outside());
                }
                // Links inside the directory must not lead out of it; a path that does not
                // resolve gets the same answer as one that cannot be read.
                match path.canonicalize() {
                    Ok(c) if c.starts_with(dir) => Ok(c),
                    _ => Err(CANNOT_BE_USED.into()),
                }
            }
        }
    }

    fn check_env(&self, var: &str) -> Result<(), String> {
        match &self.env {
            EnvAccess::Any => Ok(()),
            EnvAccess::Only(vars) if vars.iter().any(|v| v == var) => Ok(()),
            EnvAccess::Only(_) => Err(
                "env data sources are not allowed in a Mesh sent to the server (use secret, inline or inlineString, or start the server with --allow-env-source VAR)"
                    .into(),
            ),
        }
    }
}

/// The longest `secretId` accepted (an ARN is at most 2048 characters).
pub const MAX_SECRET_ID: usize = 2048;
/// The longest JSON field name `key` accepted.
pub const MAX_JSON_KEY: usize = 256;

/// An `awsSecretsManager` data source: a secret's name or ARN, and optionally the field of its
/// JSON `SecretString` to use (`{"cert": "..."}` with `key: cert`).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsSecretRef {
    secret_id: String,
    key: Option<String>,
}

impl AwsSecretRef {
    /// A reference to `secret_id` (name or ARN), the whole value or its JSON field `key`.
    ///
    /// # Errors
    /// `("secretId" | "key", reason)` naming what is wrong.
    pub fn new(secret_id: &str, key: Option<&str>) -> Result<Self, (&'static str, String)> {
        let id = secret_id.trim();
        if id.is_empty() {
            return Err(("secretId", "must not be empty".into()));
        }
        if id.len() > MAX_SECRET_ID {
            return Err((
                "secretId",
                format!("is longer than {MAX_SECRET_ID} characters"),
            ));
        }
        // Secrets Manager names: letters, digits and /_+=.@- ; ARNs add ':'.
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-:".contains(*c)))
        {
            return Err((
                "secretId",
                format!(
                    "must be a Secrets Manager secret name or ARN (letters, digits and /_+=.@-:), \
                     found {c:?}"
                ),
            ));
        }
        let key = match key {
            None => None,
            Some("") => return Err(("key", "must not be empty".into())),
            Some(k) if k.len() > MAX_JSON_KEY => {
                return Err(("key", format!("is longer than {MAX_JSON_KEY} characters")))
            }
            Some(k) => Some(k.to_owned()),
        };
        Ok(Self {
            secret_id: id.to_owned(),
            key,
        })
    }

    /// The secret's name or ARN.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The JSON field used, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl fmt::Display for AwsSecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "awsSecretsManager {}", self.secret_id)?;
        if let Some(k) = &self.key {
            write!(f, " key {k:?}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AwsSecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an external secret could not be read; the message must not contain its value.
#[derive(Debug)]
pub struct FetchError {
    /// What went wrong and what to do about it.
    pub reason: String,
    /// The client library's error.
    pub source: Option<crate::BoxError>,
}

/// Reads AWS Secrets Manager secrets for `awsSecretsManager` data sources. ca-core has no AWS
/// client: the `datasource-aws` crate implements this, and [`SourcePolicy::with_aws_secrets_manager`]
/// hands it to resolution.
#[async_trait]
pub trait AwsSecretsManager: fmt::Debug + Send + Sync {
    /// The current value of `secret_id` (a name or ARN): its `SecretString`, else its
    /// `SecretBinary`; at most `max_bytes`, within `timeout`.
    ///
    /// # Errors
    /// A [`FetchError`] saying why (missing, access denied with the IAM action to allow,
    /// unreachable, too large).
    async fn secret_value(
        &self,
        secret_id: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<SecretBytes, FetchError>;
}

/// The string field `key` of a JSON object (a Secrets Manager `SecretString` such as
/// `{"cert": "-----BEGIN ..."}`). Messages name fields, never values.
///
/// Public only for meshca's fuzz targets (`meshca-fuzz-targets`); not part of the API.
#[doc(hidden)]
pub fn json_field(value: &[u8], key: &str) -> Result<SecretBytes, String> {
    let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value)
    else {
        return Err(format!(
            "is not a JSON object, so `key: {key}` cannot pick a field of it (drop `key` to use \
             the whole secret)"
        ));
    };
    match map.get(key) {
        Some(serde_json::Value::String(s)) => Ok(SecretBytes::new(s.as_bytes().to_vec())),
        Some(_) => Err(format!("field {key:?} of its JSON is not a string")),
        None => {
            let mut names: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
            names.sort_unstable();
            Err(format!(
                "its JSON has no field {key:?} (it has: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// Reads a regular file of at most `max` bytes on a thread of its own, giving up after
/// `timeout`. The file is opened non-blocking, so a FIFO or device never blocks the open, and
/// anything but a regular file is refused before a byte is read.
async fn read_file_off_thread(
    path: PathBuf,
    max: usize,
    timeout: Duration,
) -> Result<SecretBytes, ()> {
    let (tx, rx) = futures_channel::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("meshca-read-file".into())
        .spawn(move || {
            let (inner_tx, inner_rx) = std::sync::mpsc::channel();
            // The reader itself on one more thread, so this one can give up after `timeout`
            // even if the read hangs (a stuck network file system).
            let reader = std::thread::Builder::new()
                .name("meshca-read-file".into())
                .spawn(move || {
                    let read = read_regular_file(&path, max).map(SecretBytes::new);
                    let _ = inner_tx.send(read.map_err(|_| ()));
                });
            let result = match reader {
                Ok(_) => inner_rx.recv_timeout(timeout).unwrap_or(Err(())),
                Err(_) => Err(()),
            };
            let _ = tx.send(result);
        });
    if spawned.is_err() {
        return Err(());
    }
    rx.await.unwrap_or(Err(()))
}

/// Reads a regular file of at most `max` bytes. The open is non-blocking, so a FIFO or device
/// never blocks it, and anything but a regular file is refused (`InvalidInput`) before a byte is
/// read; a file over `max` is `InvalidData`.
pub(crate) fn read_regular_file(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Error as IoError, ErrorKind, Read as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(IoError::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_big = || IoError::new(ErrorKind::InvalidData, format!("larger than {max} bytes"));
    if meta.len() > max as u64 {
        return Err(too_big());
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(max));
    // `take` bounds the read even if the file grows while it is read.
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > max {
        return Err(too_big());
    }
    Ok(buf)
}

/// Whose a secret is: one mesh's, or no mesh's (global).
///
/// A name is looked up within one scope only: the same name in two scopes is two secrets, and a
/// mesh never sees another mesh's secrets nor the global ones. Global secrets hold what belongs
/// to the control plane rather than to a mesh (the issuer's bootstrap TLS CA and token signing
/// key), as Kong Mesh's global secrets (`system.kuma.io/global-secret`) do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    /// The secrets of this mesh: what its `secret:` data sources and its backends read and
    /// write.
    Mesh(&'a MeshName),
    /// The secrets of no mesh.
    Global,
}

impl<'a> Scope<'a> {
    /// The mesh, for [`Scope::Mesh`].
    pub fn mesh(self) -> Option<&'a MeshName> {
        match self {
            Self::Mesh(m) => Some(m),
            Self::Global => None,
        }
    }
}

impl fmt::Display for Scope<'_> {
    /// For messages: ``mesh `default` `` or `global`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mesh(m) => write!(f, "mesh `{m}`"),
            Self::Global => f.write_str("global"),
        }
    }
}

/// Where secrets live: a directory by default, Kubernetes Secrets when scaled out. Every secret
/// is named within a [`Scope`].
#[async_trait]
pub trait SecretStore: fmt::Debug + Send + Sync {
    /// Reads secret `name` of `scope`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be read.
    async fn get(&self, scope: Scope<'_>, name: &SecretName) -> Result<Option<SecretBytes>, Error>;

    /// Creates secret `name` of `scope` only if it does not exist yet, atomically: of several
    /// racing creators exactly one value is stored, and an existing value is never replaced.
    /// Returns the stored value (ours or the winner's) and whether it was ours.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be written.
    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error>;

    /// Writes secret `name` of `scope`, replacing any previous value atomically.
    ///
    /// # Errors
    /// [`Error::Store`] or a backend error when the store cannot be written.
    async fn put(&self, scope: Scope<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error>;

    /// Whether what is written here is kept: `false` for an in-memory overlay (a dry run), so a
    /// backend says "created" only for what persisted.
    fn persists(&self) -> bool {
        true
    }

    /// Where secret `name` of `scope` lives, for messages and logs (a file, a Kubernetes
    /// Secret); never its value.
    fn location(&self, scope: Scope<'_>, name: &SecretName) -> String {
        format!("secret `{name}` ({scope})")
    }
}

/// Refuses a value no store may hold: above [`SourcePolicy::MAX_BYTES`] it could be written but
/// never read back (every read is capped there). Stores call it before writing anything.
///
/// # Errors
/// [`Error::InvalidArgument`](Error::invalid_argument) for `value`.
pub fn check_secret_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > SourcePolicy::MAX_BYTES {
        return Err(Error::invalid_argument(
            "value",
            format!("is larger than {} bytes", SourcePolicy::MAX_BYTES),
        ));
    }
    Ok(())
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
        let local = SourcePolicy::local();
        let resolve = |s: &DataSource| block_on(s.resolve(&mesh, &store, &local));

        let err = resolve(&DataSource::Secret(name.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret `sec-1` not found in mesh `default`"
        );
        block_on(store.put(Scope::Mesh(&mesh), &name, b"value")).unwrap();
        assert_eq!(
            resolve(&DataSource::Secret(name)).unwrap().expose(),
            b"value"
        );

        let file = dir.path().join("f.pem");
        std::fs::write(&file, b"file-bytes").unwrap();
        assert_eq!(
            resolve(&DataSource::File(file)).unwrap().expose(),
            b"file-bytes"
        );
        let err = resolve(&DataSource::File(dir.path().join("nope"))).unwrap_err();
        assert!(err.to_string().starts_with("data source file "), "{err}");
        assert!(err.to_string().ends_with("nope: cannot be used (it must exist, be readable, be a regular file and be at most the size limit)"), "{err}");

        let inline = DataSource::inline_base64("aGVs\nbG8=").unwrap();
        assert_eq!(resolve(&inline).unwrap().expose(), b"hello");
        assert!(DataSource::inline_base64("!!").is_err());

        let err = resolve(&DataSource::Env("MESHCA_TEST_UNSET_VAR".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data source env MESHCA_TEST_UNSET_VAR: cannot be used"),
            "{err}"
        );
        assert!(!resolve(&DataSource::Env("PATH".into())).unwrap().is_empty());
    }

    #[test]
    fn files_are_capped_and_only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path().join("s")).unwrap();
        let mesh = MeshName::new("default").unwrap();
        let local = SourcePolicy::local();
        let cannot = |s: DataSource| {
            let err = block_on(s.resolve(&mesh, &store, &local)).unwrap_err();
            assert!(err.to_string().contains(CANNOT_BE_USED), "{err}");
        };
        // A device that never ends, and a FIFO nobody writes to: refused at once, not read
        // until memory runs out or forever.
        cannot(DataSource::File("/dev/zero".into()));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            cannot(DataSource::File(fifo));
        }
        cannot(DataSource::File(dir.path().to_owned()));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; SourcePolicy::MAX_BYTES + 1]).unwrap();
        cannot(DataSource::File(big));
        let max = dir.path().join("max");
        std::fs::write(&max, vec![b'a'; SourcePolicy::MAX_BYTES]).unwrap();
        assert_eq!(
            block_on(DataSource::File(max).resolve(&mesh, &store, &local))
                .unwrap()
                .len(),
            SourcePolicy::MAX_BYTES
        );
        // Inline and secret values are capped too.
        let inline = DataSource::Inline(SecretBytes::new(vec![0; SourcePolicy::MAX_BYTES + 1]));
        let err = block_on(inline.resolve(&mesh, &store, &local)).unwrap_err();
        assert!(
            err.to_string().contains("is larger than 1048576 bytes"),
            "{err}"
        );
    }

    #[test]
    fn remote_policy_keeps_files_and_env_out_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path().join("secrets")).unwrap();
        let mesh = MeshName::new("default").unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("ca.pem"), b"ok").unwrap();
        std::fs::write(dir.path().join("outside.pem"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.pem"), allowed.join("link.pem"))
            .unwrap();

        let none = SourcePolicy::remote(None, Vec::new()).unwrap();
        let err = block_on(DataSource::File(allowed.join("ca.pem")).resolve(&mesh, &store, &none))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("file data sources are not allowed"),
            "{err}"
        );
        let err =
            block_on(DataSource::Env("PATH".into()).resolve(&mesh, &store, &none)).unwrap_err();
        assert!(
            err.to_string().contains("env data sources are not allowed"),
            "{err}"
        );

        let some = SourcePolicy::remote(Some(&allowed), vec!["PATH".into()]).unwrap();
        let canonical = allowed.canonicalize().unwrap();
        let ok = block_on(DataSource::File(canonical.join("ca.pem")).resolve(&mesh, &store, &some))
            .unwrap();
        assert_eq!(ok.expose(), b"ok");
        assert!(block_on(DataSource::Env("PATH".into()).resolve(&mesh, &store, &some)).is_ok());
        for escape in [
            dir.path().canonicalize().unwrap().join("outside.pem"),
            canonical.join("../outside.pem"),
            PathBuf::from("ca.pem"),
        ] {
            let err = block_on(DataSource::File(escape.clone()).resolve(&mesh, &store, &some))
                .unwrap_err();
            assert!(
                err.to_string().contains("must be an absolute path inside"),
                "{escape:?}: {err}"
            );
        }
        // A link out of the directory and a missing file get the same answer.
        let link =
            block_on(DataSource::File(canonical.join("link.pem")).resolve(&mesh, &store, &some))
                .unwrap_err()
                .to_string();
        let missing =
            block_on(DataSource::File(canonical.join("missing.pem")).resolve(&mesh, &store, &some))
                .unwrap_err()
                .to_string();
        assert_eq!(
            link.replace("link.pem", "X"),
            missing.replace("missing.pem", "X")
        );
        let err =
            block_on(DataSource::Env("HOME".into()).resolve(&mesh, &store, &some)).unwrap_err();
        assert!(
            err.to_string().contains("env data sources are not allowed"),
            "{err}"
        );
    }

    /// Secrets Manager as far as ca-core sees it: a map from secret id to value.
    #[derive(Debug)]
    struct Secrets(Vec<(&'static str, &'static str)>);

    #[async_trait]
    impl AwsSecretsManager for Secrets {
        async fn secret_value(
            &self,
            secret_id: &str,
            _max_bytes: usize,
            _timeout: Duration,
        ) -> Result<SecretBytes, FetchError> {
            self.0
                .iter()
                .find(|(id, _)| *id == secret_id)
                .map(|(_, v)| SecretBytes::from(*v))
                .ok_or_else(|| FetchError {
                    reason: "not found".into(),
                    source: None,
                })
        }
    }

    #[test]
    fn aws_secrets_pick_json_fields_and_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::new(dir.path()).unwrap();
        let mesh = MeshName::new("default").unwrap();
        let client = Arc::new(Secrets(vec![
            ("kongcp1-crt", r#"{"cert": "CERT-PEM", "n": 1}"#),
            ("plain", "TOKEN"),
        ]));
        let policy = SourcePolicy::local().with_aws_secrets_manager(client.clone());
        let src = |id: &str, key: Option<&str>| {
            DataSource::AwsSecretsManager(AwsSecretRef::new(id, key).unwrap())
        };
        let resolve = |s: DataSource, p: &SourcePolicy| block_on(s.resolve(&mesh, &store, p));

        let cert = resolve(src("kongcp1-crt", Some("cert")), &policy).unwrap();
        assert_eq!(cert.expose(), b"CERT-PEM");
        assert_eq!(
            resolve(src("plain", None), &policy).unwrap().expose(),
            b"TOKEN"
        );

        let err = resolve(src("kongcp1-crt", Some("key")), &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data source awsSecretsManager kongcp1-crt key \"key\": its JSON has no field \"key\" (it has: cert, n)"
        );
        let err = resolve(src("kongcp1-crt", Some("n")), &policy).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("field \"n\" of its JSON is not a string"),
            "{err}"
        );
        let err = resolve(src("plain", Some("cert")), &policy).unwrap_err();
        assert!(err.to_string().contains("is not a JSON object"), "{err}");
        assert!(!err.to_string().contains("TOKEN"), "{err}");
        let err = resolve(src("absent", None), &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data source awsSecretsManager absent: not found"
        );

        // Capped like every source.
        let mut small = policy.clone();
        small.max_bytes = 3;
        let err = resolve(src("plain", None), &small).unwrap_err();
        assert!(err.to_string().contains("larger than 3 bytes"), "{err}");

        // Without a client: refused, and for a Mesh from the network refused by policy.
        let err = resolve(src("plain", None), &SourcePolicy::local()).unwrap_err();
        assert!(err.to_string().contains("aws-secrets-manager"), "{err}");
        let remote = SourcePolicy::remote(None, vec![]).unwrap();
        let err = resolve(src("plain", None), &remote).unwrap_err();
        assert!(
            err.to_string()
                .contains("not allowed in a Mesh sent to the server"),
            "{err}"
        );
    }

    #[test]
    fn aws_secret_refs_are_checked() {
        assert!(
            AwsSecretRef::new("arn:aws:secretsmanager:eu-west-1:1:secret:a/b-x1Yz", None).is_ok()
        );
        assert_eq!(AwsSecretRef::new(" ", None).unwrap_err().0, "secretId");
        assert_eq!(AwsSecretRef::new("a b", None).unwrap_err().0, "secretId");
        assert_eq!(
            AwsSecretRef::new(&"a".repeat(3000), None).unwrap_err().0,
            "secretId"
        );
        assert_eq!(AwsSecretRef::new("a", Some("")).unwrap_err().0, "key");
        let r = AwsSecretRef::new("kongcp1-key", Some("key")).unwrap();
        assert_eq!(
            format!("{r:?}"),
            "awsSecretsManager kongcp1-key key \"key\""
        );
    }

    #[test]
    fn debug_never_shows_inline_values() {
        let s = DataSource::InlineString(SecretBytes::from("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{s:?}"), "inlineString value");
    }
}

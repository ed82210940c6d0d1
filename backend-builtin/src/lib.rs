//! # backend-builtin
//!
//! Kuma's `builtin` CA backend: meshca creates one self-signed CA per mesh and backend, persists
//! it in the [`SecretStore`] under Kuma's secret names, and signs data plane certificates locally
//! with [`LocalCa`].
//!
//! The CA is created once. Both secrets are written with
//! [`create_if_absent`](SecretStore::create_if_absent), key first: whoever wins the key, every
//! racer reads it back and derives the certificate from it, so after a crash, a restart or two
//! issuers starting at once the mesh keeps exactly one CA. Stored secrets are never replaced; if
//! they do not fit together [`Error::Inconsistent`] is returned and an operator decides.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use ca_core::x509::{certs_to_pem, parse_pem_certs, random_serial, BACKDATE};
use ca_core::{
    BackendName, CertificateAuthority, Created, Error, IssueRequest, LocalCa, MeshName, PrivateKey,
    Scope, SecretBytes, SecretName, SecretStore, TrustBundle, UncheckedCertificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

mod conf;
mod factory;

pub use conf::BuiltinConf;
pub use factory::BuiltinFactory;

/// Secret names are DNS-1123 subdomains: at most 253 characters (Kuma allows 255 for the
/// resource key; the stricter limit keeps the name usable as a Kubernetes Secret).
const MAX_SECRET_NAME_LEN: usize = 253;
/// How many times the CA is read again after losing a creation race.
const LOAD_ATTEMPTS: usize = 3;

/// A mesh's builtin CA.
///
/// Cheap to build: nothing is read until [`ensure`](CertificateAuthority::ensure) (or the first
/// `trust_bundle` / `issue`, which call it). The loaded CA is cached for the life of the value.
pub struct BuiltinCa {
    mesh: MeshName,
    backend: BackendName,
    conf: BuiltinConf,
    store: Arc<dyn SecretStore>,
    loaded: OnceLock<Loaded>,
}

/// The CA as read back from the store.
struct Loaded {
    signer: LocalCa,
    bundle: TrustBundle,
}

// === impl BuiltinCa ===

impl fmt::Debug for BuiltinCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // LocalCa's Debug is redacted too; only say whether the CA is loaded.
        f.debug_struct("BuiltinCa")
            .field("mesh", &self.mesh)
            .field("backend", &self.backend)
            .field("conf", &self.conf)
            .field("store", &self.store)
            .field("loaded", &self.loaded.get().is_some())
            .finish()
    }
}

impl BuiltinCa {
    /// A builtin CA for backend `backend` of `mesh`, persisted in `store`.
    pub fn new(
        mesh: MeshName,
        backend: BackendName,
        conf: BuiltinConf,
        store: Arc<dyn SecretStore>,
    ) -> Self {
        Self {
            mesh,
            backend,
            conf,
            store,
            loaded: OnceLock::new(),
        }
    }

    /// Kuma's secret names for the CA: `<mesh>.ca-builtin-cert-<backend>` and
    /// `<mesh>.ca-builtin-key-<backend>`, in that order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `name`) when a derived name is too long or otherwise not
    /// a valid secret name.
    pub fn secret_names(
        mesh: &MeshName,
        backend: &BackendName,
    ) -> Result<(SecretName, SecretName), Error> {
        let derive = |kind: &str| {
            let name = format!("{mesh}.ca-builtin-{kind}-{backend}");
            if name.len() > MAX_SECRET_NAME_LEN {
                return Err(Error::invalid_argument(
                    "name",
                    format!(
                        "backend name `{backend}` is too long: the secret name `{name}` derived \
                         from it has {} characters, at most {MAX_SECRET_NAME_LEN} are allowed",
                        name.len()
                    ),
                ));
            }
            SecretName::new(name.as_str()).map_err(|e| {
                Error::invalid_argument(
                    "name",
                    format!("backend name `{backend}` gives an invalid secret name: {e}"),
                )
            })
        };
        Ok((derive("cert")?, derive("key")?))
    }

    /// The cached CA, loading or creating it first if needed.
    async fn loaded(&self) -> Result<&Loaded, Error> {
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let loaded = self.load_or_create().await?;
        // Two first callers may both get here; they read the same stored CA, so either value is
        // the right one to keep.
        Ok(self.loaded.get_or_init(|| loaded))
    }

    async fn load_or_create(&self) -> Result<Loaded, Error> {
        // A store whose create-if-absent is not atomic across secrets (an overlay over a shared
        // store, during a dry run) can hand us our own key and another writer's certificate;
        // reading both again then sees the winner's pair.
        for _ in 1..LOAD_ATTEMPTS {
            if let Some(loaded) = self.load_once().await? {
                return Ok(loaded);
            }
            tracing::debug!(mesh = %self.mesh, backend = %self.backend, "another writer created the builtin CA at the same time; reading it again");
        }
        self.load_once().await?.ok_or_else(|| {
            Error::Inconsistent(format!(
                "mesh `{}`: the builtin CA of backend `{}` kept changing while it was loaded",
                self.mesh, self.backend
            ))
        })
    }

    /// Loads the CA, creating what is missing; `None` when the key we stored lost to another
    /// writer's certificate (see [`load_or_create`](Self::load_or_create)).
    async fn load_once(&self) -> Result<Option<Loaded>, Error> {
        let (cert_name, key_name) = Self::secret_names(&self.mesh, &self.backend)?;
        let mesh = &self.mesh;
        let scope = Scope::Mesh(mesh);
        let store = &*self.store;

        let stored_cert = store.get(scope, &cert_name).await?;
        let key_pem = match (&stored_cert, store.get(scope, &key_name).await?) {
            (_, Some(key)) => key,
            (Some(_), None) => {
                return Err(Error::Inconsistent(format!(
                    "mesh `{mesh}`: the builtin CA certificate secret `{cert_name}` exists but \
                     its key secret `{key_name}` does not; restore the key, or delete both \
                     secrets to create a new CA"
                )))
            }
            (None, None) => {
                let key = self.conf.ca_key.generate()?;
                let (key, created) = store
                    .create_if_absent(scope, &key_name, key.to_pem().expose())
                    .await?;
                // Said once, by the run that persisted it (not by dry runs over an overlay).
                if created == Created::Ours && store.persists() {
                    tracing::info!(
                        %mesh, backend = %self.backend, secret = %key_name, key_type = %self.conf.ca_key,
                        "created builtin CA key"
                    );
                }
                key
            }
        };
        let key = PrivateKey::from_pem(key_pem.expose()).map_err(|e| {
            Error::Inconsistent(format!(
                "mesh `{mesh}`: the builtin CA key secret `{key_name}` cannot be used ({e}); \
                 refusing to replace it"
            ))
        })?;
        if key.key_type() != self.conf.ca_key {
            // The CA is never regenerated behind the operator's back; a new key type needs a new
            // backend (a CA rotation).
            tracing::warn!(
                %mesh, backend = %self.backend, stored = %key.key_type(), configured = %self.conf.ca_key,
                "the stored builtin CA key differs from caCert in the config; keeping the stored CA"
            );
        }

        let cert_pem = match stored_cert {
            Some(cert) => cert,
            None => {
                // Either nobody got this far, or a crash happened after the key was stored: in
                // both cases the certificate comes from the stored (winning) key.
                let cert = self.build_ca_cert(&key_pem, &key_name)?;
                let (cert, created) = store
                    .create_if_absent(scope, &cert_name, cert.as_bytes())
                    .await?;
                if created == Created::Ours {
                    if store.persists() {
                        tracing::info!(
                            %mesh, backend = %self.backend, secret = %cert_name,
                            "created builtin CA certificate"
                        );
                    }
                } else if self.check_cert(&cert, &cert_name, &key_name, &key).is_err()
                    && store.get(scope, &key_name).await?.as_ref() != Some(&key_pem)
                {
                    // Another writer's certificate for another writer's key: read both again.
                    return Ok(None);
                }
                cert
            }
        };
        let cert = self.check_cert(&cert_pem, &cert_name, &key_name, &key)?;

        let inconsistent = |e: Error| {
            Error::Inconsistent(format!(
                "mesh `{mesh}`: the builtin CA in secrets `{cert_name}` and `{key_name}` cannot \
                 be used: {e}"
            ))
        };
        let signer =
            LocalCa::new(cert_name.as_str(), vec![cert.clone()], key).map_err(inconsistent)?;
        let bundle = TrustBundle::new(vec![cert]).map_err(inconsistent)?;
        Ok(Some(Loaded { signer, bundle }))
    }

    /// Builds the self-signed CA certificate for `key_pem` (Kuma's profile); returns its PEM.
    fn build_ca_cert(&self, key_pem: &SecretBytes, key_name: &SecretName) -> Result<String, Error> {
        // rcgen's KeyPair does not wipe itself on drop; Zeroizing does.
        let key = key_pem
            .expose_str()
            .and_then(|pem| KeyPair::from_pem(pem).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| {
                Error::Inconsistent(format!(
                    "mesh `{}`: the builtin CA key secret `{key_name}` cannot be loaded",
                    self.mesh
                ))
            })?;

        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.not_before = to_offset(now - BACKDATE, "caCert.expiration")?;
        let not_after = now
            .checked_add(self.conf.ca_expiration)
            .ok_or_else(|| too_far("caCert.expiration"))?;
        params.not_after = to_offset(not_after, "caCert.expiration")?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
        // Kuma's subject: O=Kuma, OU=Mesh, CN=<mesh>.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Kuma");
        dn.push(DnType::OrganizationalUnitName, "Mesh");
        dn.push(DnType::CommonName, self.mesh.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{}", self.mesh)
                .as_str()
                .try_into()
                .map_err(Error::crypto)?,
        )];
        // No path length constraint, as Kuma (Go's x509 omits it when MaxPathLen is 0 and
        // MaxPathLenZero is false). The builtin CA only ever signs leaves itself, and leaving it
        // unconstrained keeps the certificate interchangeable with one Kuma made.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&*key).map_err(Error::crypto)?;
        // LF line endings, as Kuma writes PEM (rcgen's `pem()` uses CRLF).
        Ok(certs_to_pem([cert.der()]))
    }

    /// Parses the stored certificate and checks that it is one CA certificate for `key`.
    fn check_cert(
        &self,
        cert_pem: &SecretBytes,
        cert_name: &SecretName,
        key_name: &SecretName,
        key: &PrivateKey,
    ) -> Result<CertificateDer<'static>, Error> {
        let mesh = &self.mesh;
        let bad = |reason: String| {
            Error::Inconsistent(format!(
                "mesh `{mesh}`: the builtin CA certificate secret `{cert_name}` {reason}; \
                 refusing to replace it"
            ))
        };
        let mut certs = parse_pem_certs(cert_pem.expose()).map_err(bad)?;
        if certs.len() != 1 {
            return Err(bad(format!(
                "holds {} certificates instead of one",
                certs.len()
            )));
        }
        let der = certs.remove(0);
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| bad(format!("cannot be parsed ({e})")))?;
        if !cert.is_ca() {
            return Err(bad("is not a CA certificate".into()));
        }
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(Error::Inconsistent(format!(
                "mesh `{mesh}`: the builtin CA certificate in secret `{cert_name}` does not match \
                 the key in secret `{key_name}`; refusing to replace either (restore the matching \
                 pair, or delete both secrets to create a new CA)"
            )));
        }
        Ok(der)
    }
}

#[async_trait]
impl CertificateAuthority for BuiltinCa {
    fn name(&self) -> &str {
        self.backend.as_str()
    }

    async fn ensure(&self) -> Result<(), Error> {
        self.loaded().await.map(|_| ())
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        Ok(self.loaded().await?.bundle.clone())
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.loaded().await?.signer.sign(request)
    }

    fn needs_csr(&self) -> bool {
        // Signs the public key locally; a CSR for a key core generated would be wasted work.
        false
    }

    fn used_secrets(&self) -> Vec<SecretName> {
        // Fails only for backend names too long to derive a secret name from; such a CA never
        // stores anything (ensure fails with the same error), so there is nothing to protect.
        Self::secret_names(&self.mesh, &self.backend)
            .map(|(cert, key)| vec![cert, key])
            .unwrap_or_default()
    }
}

/// Converts for rcgen without panicking on times X.509 cannot carry (after year 9999).
fn to_offset(t: SystemTime, field: &str) -> Result<time::OffsetDateTime, Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::invalid_argument(field, "lies before 1970"))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| too_far(field))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| too_far(field))
}

fn too_far(field: &str) -> Error {
    Error::invalid_argument(field, "reaches beyond the year 9999")
}

#[cfg(test)]
mod tests;

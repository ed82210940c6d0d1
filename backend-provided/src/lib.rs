//! # backend-provided
//!
//! Kuma's `provided` CA backend: the operator supplies a CA certificate (optionally followed by
//! its parents) and the CA's key through data sources; meshca validates them once at load and
//! signs data plane certificates locally with [`LocalCa`].
//!
//! Validation follows Kuma's (`pkg/plugins/ca/provided`) and adds what Kuma forgets: a CA that is
//! expired or not valid yet is refused, a chain out of order is refused, and a CA that expires
//! within one data plane certificate lifetime is reported in [`ProvidedCa::warnings`]. Leaves
//! never outlive the signing CA ([`LocalCa`] clamps their not-after).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ca_core::x509::parse_pem_certs;
use ca_core::{
    BackendName, BuildSpec, CertificateAuthority, Error, IssueRequest, KeyType, KumaDuration,
    LocalCa, MeshName, PrivateKey, SecretBytes, SecretName, SecretStore, SourcePolicy, TrustBundle,
    UncheckedCertificate, Violations,
};
use x509_parser::prelude::{FromDer, X509Certificate};

mod conf;
mod factory;

pub use conf::ProvidedConf;
pub use factory::ProvidedFactory;

/// The config field the certificate chain comes from.
const CERT: &str = "cert";
/// The config field the key comes from.
const KEY: &str = "key";

/// A mesh's provided CA, validated and ready to sign.
pub struct ProvidedCa {
    backend: BackendName,
    signer: LocalCa,
    bundle: TrustBundle,
    warnings: Vec<String>,
    used_secrets: Vec<SecretName>,
}

// === impl ProvidedCa ===

impl fmt::Debug for ProvidedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // LocalCa's Debug redacts the key.
        f.debug_struct("ProvidedCa")
            .field("backend", &self.backend)
            .field("signer", &self.signer)
            .field("warnings", &self.warnings)
            .field("used_secrets", &self.used_secrets)
            .finish()
    }
}

impl ProvidedCa {
    /// [`load_at`](Self::load_at) with violation paths relative to the backend's `conf` (`cert`,
    /// `cert[1]`, `key`), as Kuma's provided CA manager reports them.
    ///
    /// # Errors
    /// As [`load_at`](Self::load_at).
    pub async fn load(
        mesh: &MeshName,
        backend: BackendName,
        conf: &ProvidedConf,
        dp_cert_lifetime: Duration,
        store: &dyn SecretStore,
        sources: &SourcePolicy,
    ) -> Result<Self, Error> {
        Self::load_in("", mesh, backend, conf, dp_cert_lifetime, store, sources).await
    }

    /// Resolves the `cert` and `key` data sources of `conf` (mesh-scoped secrets from the spec's
    /// store, files and variables as its sources allow), validates them, and builds the signer
    /// once.
    ///
    /// [`BuildSpec::conf_path`] is where `conf` sits in the Mesh (`mtls.backends[0].conf`); every
    /// violation is reported under it, at the field Kuma uses: `conf.cert` / `conf.key` for a
    /// source that cannot be read, `conf.cert` for a pair that is not a valid TLS key pair,
    /// `conf.cert[i]` for each problem of the `i`-th certificate of the chain (all of them, not
    /// just the first).
    ///
    /// [`BuildSpec::dp_cert_lifetime`] is the data plane certificate lifetime
    /// (`dpCert.rotation.expiration`): a CA that expires sooner is accepted with a warning, see
    /// [`warnings`](Self::warnings).
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`] with every violation found: a `cert` or `key` that cannot be read
    ///   (missing secret, unreadable file or variable); no PEM data, a key that does not match the
    ///   first certificate, an encrypted or unsupported key; for each certificate: without
    ///   `CA=true`, without `keyCertSign` or with `keyAgreement`, expired or not valid yet, an
    ///   unsupported key type, or out of order (each certificate must be issued by the next one);
    /// - [`Error::Store`] and other errors of `store` that are not about the config.
    pub async fn load_at(spec: &BuildSpec<'_>, conf: &ProvidedConf) -> Result<Self, Error> {
        Self::load_in(
            spec.conf_path(),
            spec.mesh(),
            spec.name().clone(),
            conf,
            spec.dp_cert_lifetime(),
            spec.store(),
            spec.sources(),
        )
        .await
    }

    /// [`load_at`](Self::load_at) from its parts: [`load`](Self::load) borrows a store, which a
    /// [`BuildSpec`] (it shares its store) cannot hold.
    #[allow(clippy::too_many_arguments)]
    async fn load_in(
        conf_path: &str,
        mesh: &MeshName,
        backend: BackendName,
        conf: &ProvidedConf,
        dp_cert_lifetime: Duration,
        store: &dyn SecretStore,
        sources: &SourcePolicy,
    ) -> Result<Self, Error> {
        let paths = Paths::new(conf_path);
        let mut v = Violations::default();
        let cert_pem = loaded(
            conf.cert.resolve(mesh, store, sources).await,
            &paths.cert,
            &mut v,
        )?;
        let key_pem = loaded(
            conf.key.resolve(mesh, store, sources).await,
            &paths.key,
            &mut v,
        )?;
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            return Err(Error::InvalidConfig(v));
        };
        let mut used_secrets: Vec<SecretName> = Vec::new();
        for name in [conf.cert.secret_name(), conf.key.secret_name()]
            .into_iter()
            .flatten()
        {
            if !used_secrets.contains(name) {
                used_secrets.push(name.clone());
            }
        }
        let validated = validate(
            &cert_pem,
            &key_pem,
            dp_cert_lifetime,
            SystemTime::now(),
            &paths,
        )
        .map_err(Error::InvalidConfig)?;
        for warning in &validated.warnings {
            tracing::warn!(%mesh, %backend, "{warning}");
        }
        Ok(Self {
            backend,
            signer: validated.signer,
            bundle: validated.bundle,
            warnings: validated.warnings,
            used_secrets,
        })
    }

    /// Warnings found at load, e.g. that the CA expires in less than the data plane certificate
    /// lifetime (leaves are then shortened to end with the CA).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[async_trait]
impl CertificateAuthority for ProvidedCa {
    fn name(&self) -> &str {
        self.backend.as_str()
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        Ok(self.bundle.clone())
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        // The CA was valid at load, but a long-running process outlives it: say so instead of
        // signing a certificate that expired before it was made.
        if self.signer.not_after() <= SystemTime::now() {
            return Err(Error::invalid_ca(
                CERT,
                format!(
                    "the provided CA of backend `{}` has expired; replace it",
                    self.backend
                ),
            ));
        }
        self.signer.sign(request)
    }

    fn needs_csr(&self) -> bool {
        // Signs the public key locally; a CSR for a key core generated would be wasted work.
        false
    }

    fn used_secrets(&self) -> Vec<SecretName> {
        self.used_secrets.clone()
    }
}

// === validation ===

/// Field paths of one provided backend's `conf`.
struct Paths {
    cert: String,
    key: String,
}

impl Paths {
    fn new(conf_path: &str) -> Self {
        let join = |k: &str| {
            if conf_path.is_empty() {
                k.to_owned()
            } else {
                format!("{conf_path}.{k}")
            }
        };
        Self {
            cert: join(CERT),
            key: join(KEY),
        }
    }

    /// `cert[i]`: the `i`-th certificate of the chain.
    fn cert_at(&self, i: usize) -> String {
        format!("{}[{i}]", self.cert)
    }
}

/// A data source's bytes; a source that cannot be read is a violation at `field` (Kuma:
/// `could not load data: ...`), anything else (the store failing) an error.
fn loaded(
    result: Result<SecretBytes, Error>,
    field: &str,
    v: &mut Violations,
) -> Result<Option<SecretBytes>, Error> {
    match result {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e @ (Error::SecretNotFound { .. } | Error::DataSource { .. })) => {
            v.add(field, format!("could not load data: {e}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What [`validate`] builds.
struct Validated {
    signer: LocalCa,
    bundle: TrustBundle,
    warnings: Vec<String>,
}

/// Kuma's prefix for every failure of `tls.X509KeyPair`, reported at `cert`.
const NOT_A_KEY_PAIR: &str = "not a valid TLS key pair";

/// Validates the chain and key at `now` and builds the signer; every problem is a violation.
///
/// As Kuma's `validateCaCert`: the pair must be a valid TLS key pair first (violations at `cert`,
/// nothing else is checked when it is not); then every certificate's problems are listed at
/// `cert[i]`. meshca adds validity, key type and chain order checks at the same paths.
fn validate(
    cert_pem: &SecretBytes,
    key_pem: &SecretBytes,
    dp_cert_lifetime: Duration,
    now: SystemTime,
    paths: &Paths,
) -> Result<Validated, Violations> {
    let mut v = Violations::default();
    let pair_error = |v: &mut Violations, reason: &str| {
        v.add(&paths.cert, format!("{NOT_A_KEY_PAIR}: {reason}"));
    };
    let chain = match parse_pem_certs(cert_pem.expose()) {
        Ok(chain) => chain,
        Err(e) if e.starts_with("contains no PEM") => {
            pair_error(
                &mut v,
                "tls: failed to find any PEM data in certificate input",
            );
            return Err(v);
        }
        Err(e) => {
            pair_error(&mut v, &format!("cert {e}"));
            return Err(v);
        }
    };
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match X509Certificate::from_der(der) {
            Ok((_, c)) => parsed.push(c),
            Err(e) if i == 0 => {
                pair_error(&mut v, &format!("x509: {e}"));
                return Err(v);
            }
            Err(e) => {
                v.add(
                    paths.cert_at(i),
                    format!("not a valid x509 certificate: {e}"),
                );
                return Err(v);
            }
        }
    }
    let Some(signing) = parsed.first() else {
        pair_error(
            &mut v,
            "tls: failed to find any PEM data in certificate input",
        );
        return Err(v);
    };
    // Key types first: an unsupported CA key is reported as such, not as an unreadable key.
    for (i, cert) in parsed.iter().enumerate() {
        if let Err(e) = KeyType::of_spki(cert.public_key().raw) {
            let reason = match e {
                Error::UnsupportedKey(what) => format!("unsupported key: {what}"),
                other => other.to_string(),
            };
            v.add(paths.cert_at(i), reason);
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    let key = match parse_key(key_pem) {
        Ok(key) => key,
        Err(reason) => {
            pair_error(&mut v, &reason);
            return Err(v);
        }
    };
    // Kuma: `tls.X509KeyPair` fails when the key is not the first certificate's.
    if signing.public_key().raw != key.spki_der().as_slice() {
        pair_error(&mut v, "tls: private key does not match public key");
        return Err(v);
    }

    let now_unix = unix(now);
    for (i, cert) in parsed.iter().enumerate() {
        let at = paths.cert_at(i);
        for reason in ca_profile_problems(cert) {
            v.add(&at, reason);
        }
        let validity = cert.validity();
        if validity.not_before.timestamp() > now_unix {
            v.add(
                &at,
                format!("not valid yet (notBefore {})", validity.not_before),
            );
        }
        if validity.not_after.timestamp() <= now_unix {
            v.add(&at, format!("expired (notAfter {})", validity.not_after));
        }
    }

    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let order = "list the signing CA first, then each certificate's issuer";
        if child.issuer().as_raw() != parent.subject().as_raw() {
            v.add(
                paths.cert_at(i),
                format!(
                    "issued by `{}`, not by the next certificate `{}`: the chain is out of \
                     order ({order})",
                    child.issuer(),
                    parent.subject()
                ),
            );
        } else if let Err(e) = child.verify_signature(Some(parent.public_key())) {
            v.add(
                paths.cert_at(i),
                format!(
                    "signature does not verify with the key of the next certificate `{}` \
                     ({e}): the chain is out of order or mixes CAs ({order})",
                    parent.subject()
                ),
            );
        }
    }
    if !v.is_empty() {
        return Err(v);
    }

    let mut warnings = Vec::new();
    let n = parsed.len();
    // The whole chain must stay valid for a leaf to verify, so the first parent to expire counts.
    let (first_i, first_to_expire) = parsed
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or((0, signing));
    let remaining = first_to_expire.validity().not_after.timestamp() - now_unix;
    let lifetime = i64::try_from(dp_cert_lifetime.as_secs()).unwrap_or(i64::MAX);
    let cert_field = &paths.cert;
    if remaining < lifetime {
        warnings.push(format!(
            "{cert_field}: the CA expires in less than the data plane certificate lifetime ({}): \
             {} expires at {}; data plane certificates will be shortened to end with it, \
             rotate the CA",
            KumaDuration::from_duration(dp_cert_lifetime),
            describe(first_i, n, first_to_expire),
            first_to_expire.validity().not_after,
        ));
    }
    if first_i != 0 {
        // LocalCa clamps leaves to the signing CA only; a parent that ends sooner cuts every leaf
        // short without the caller being told.
        warnings.push(format!(
            "{cert_field}: {} expires before the signing CA (at {}); data plane certificates stop \
             verifying then",
            describe(first_i, n, first_to_expire),
            first_to_expire.validity().not_after,
        ));
    }

    let built = TrustBundle::new(chain.clone())
        .and_then(|bundle| LocalCa::new(cert_field.as_str(), chain, key).map(|s| (bundle, s)));
    match built {
        Ok((bundle, signer)) => Ok(Validated {
            signer,
            bundle,
            warnings,
        }),
        Err(e) => {
            let reason = match e {
                Error::InvalidCa { reason, .. } => reason,
                other => other.to_string(),
            };
            v.add(cert_field, reason);
            Err(v)
        }
    }
}

/// Kuma's checks of every certificate in the chain (X509-SVID sections 4.1, 4.3 and appendix A),
/// each problem on its own, as Kuma lists them.
fn ca_profile_problems(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    match cert.basic_constraints() {
        Err(e) => problems.push(format!("unreadable basic constraints extension: {e}")),
        Ok(bc) if !bc.as_ref().is_some_and(|bc| bc.value.ca) => problems.push(
            "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)"
                .into(),
        ),
        Ok(_) => {}
    }
    match cert.key_usage() {
        Err(e) => problems.push(format!("unreadable key usage extension: {e}")),
        Ok(usage) => {
            if !usage.as_ref().is_some_and(|u| u.value.key_cert_sign()) {
                problems.push(
                    "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)"
                        .into(),
                );
            }
            if usage.is_some_and(|u| u.value.key_agreement()) {
                problems.push(
                    "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: \
                     Appendix A. X.509 Field Reference)"
                        .into(),
                );
            }
        }
    }
    problems
}

/// Finds the private key among the PEM blocks (openssl may put `EC PARAMETERS` first); the error
/// is the reason the pair is not a valid TLS key pair.
fn parse_key(key_pem: &SecretBytes) -> Result<PrivateKey, String> {
    let no_key = || "tls: failed to find any PEM data in key input".to_owned();
    let blocks =
        pem::parse_many(key_pem.expose()).map_err(|e| format!("key is not valid PEM: {e}"))?;
    let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        return Err(no_key());
    };
    if block.tag() == "ENCRYPTED PRIVATE KEY" {
        return Err(
            "key is encrypted: provide the key unencrypted (PKCS#8, PKCS#1 or SEC1 PEM)".into(),
        );
    }
    let single = SecretBytes::new(pem::encode(block).into_bytes());
    PrivateKey::from_pem(single.expose()).map_err(|e| match e {
        Error::UnsupportedKey(what) => format!("unsupported key: {what}"),
        other => format!("key: {other}"),
    })
}

fn describe(i: usize, n: usize, cert: &X509Certificate<'_>) -> String {
    format!("certificate {} of {n} (`{}`)", i + 1, cert.subject())
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests;

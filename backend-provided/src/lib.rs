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
use ca_core::config::ProvidedConf;
use ca_core::x509::parse_pem_certs;
use ca_core::{
    BackendName, CertificateAuthority, Error, IssueRequest, KeyType, KumaDuration, LocalCa,
    MeshName, PrivateKey, SecretBytes, SecretName, SecretStore, SourcePolicy, TrustBundle,
    UncheckedCertificate,
};
use x509_parser::prelude::{FromDer, X509Certificate};

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
    /// Resolves the `cert` and `key` data sources of `conf` (mesh-scoped secrets from `store`,
    /// files and variables as `sources` allows), validates them, and builds the signer once.
    ///
    /// `dp_cert_lifetime` is the data plane certificate lifetime (`dpCert.rotation.expiration`):
    /// a CA that expires sooner is accepted with a warning, see [`warnings`](Self::warnings).
    ///
    /// # Errors
    /// - [`Error::SecretNotFound`] / [`Error::DataSource`] when `cert` or `key` cannot be read;
    /// - [`Error::InvalidCa`] with field `cert` or `key` naming what is wrong: no PEM data, a key
    ///   that does not match the first certificate, a certificate without `CA=true`, without
    ///   `keyCertSign` or with `keyAgreement`, expired or not valid yet, an unsupported key type,
    ///   or a chain out of order (each certificate must be issued by the next one).
    pub async fn load(
        mesh: &MeshName,
        backend: BackendName,
        conf: &ProvidedConf,
        dp_cert_lifetime: Duration,
        store: &dyn SecretStore,
        sources: &SourcePolicy,
    ) -> Result<Self, Error> {
        let cert_pem = conf.cert.resolve(mesh, store, sources).await?;
        let key_pem = conf.key.resolve(mesh, store, sources).await?;
        let mut used_secrets: Vec<SecretName> = Vec::new();
        for name in [conf.cert.secret_name(), conf.key.secret_name()]
            .into_iter()
            .flatten()
        {
            if !used_secrets.contains(name) {
                used_secrets.push(name.clone());
            }
        }
        let validated = validate(&cert_pem, &key_pem, dp_cert_lifetime, SystemTime::now())?;
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

/// What [`validate`] builds.
struct Validated {
    signer: LocalCa,
    bundle: TrustBundle,
    warnings: Vec<String>,
}

/// Validates the chain and key at `now` and builds the signer.
fn validate(
    cert_pem: &SecretBytes,
    key_pem: &SecretBytes,
    dp_cert_lifetime: Duration,
    now: SystemTime,
) -> Result<Validated, Error> {
    let chain = parse_pem_certs(cert_pem.expose()).map_err(|e| Error::invalid_ca(CERT, e))?;
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| invalid_cert(i, chain.len(), None, format!("cannot be parsed: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = parsed.len();
    let Some(signing) = parsed.first() else {
        return Err(Error::invalid_ca(CERT, "contains no PEM certificate"));
    };

    // Key types first: an unsupported CA key is reported as such, not as an unreadable key.
    for (i, cert) in parsed.iter().enumerate() {
        KeyType::of_spki(cert.public_key().raw).map_err(|e| {
            let reason = match e {
                Error::UnsupportedKey(what) => format!("unsupported key: {what}"),
                other => other.to_string(),
            };
            invalid_cert(i, n, Some(cert), reason)
        })?;
    }

    let key = parse_key(key_pem)?;
    // Kuma: `tls.X509KeyPair` fails when the key is not the first certificate's.
    if signing.public_key().raw != key.spki_der().as_slice() {
        return Err(Error::invalid_ca(
            KEY,
            format!(
                "does not match the certificate: the key must belong to the first certificate of \
                 `cert` (`{}`)",
                signing.subject()
            ),
        ));
    }

    let now_unix = unix(now);
    for (i, cert) in parsed.iter().enumerate() {
        check_ca_profile(cert).map_err(|reason| invalid_cert(i, n, Some(cert), reason))?;
        let validity = cert.validity();
        if validity.not_before.timestamp() > now_unix {
            return Err(invalid_cert(
                i,
                n,
                Some(cert),
                format!("not valid yet (notBefore {})", validity.not_before),
            ));
        }
        if validity.not_after.timestamp() <= now_unix {
            return Err(invalid_cert(
                i,
                n,
                Some(cert),
                format!("expired (notAfter {})", validity.not_after),
            ));
        }
    }

    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let order = "list the signing CA first, then each certificate's issuer";
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(invalid_cert(
                i,
                n,
                Some(child),
                format!(
                    "issued by `{}`, not by the next certificate `{}`: the chain is out of \
                     order ({order})",
                    child.issuer(),
                    parent.subject()
                ),
            ));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                invalid_cert(
                    i,
                    n,
                    Some(child),
                    format!(
                        "signature does not verify with the key of the next certificate `{}` \
                         ({e}): the chain is out of order or mixes CAs ({order})",
                        parent.subject()
                    ),
                )
            })?;
    }

    let mut warnings = Vec::new();
    // The whole chain must stay valid for a leaf to verify, so the first parent to expire counts.
    let (first_i, first_to_expire) = parsed
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or((0, signing));
    let remaining = first_to_expire.validity().not_after.timestamp() - now_unix;
    let lifetime = i64::try_from(dp_cert_lifetime.as_secs()).unwrap_or(i64::MAX);
    if remaining < lifetime {
        warnings.push(format!(
            "{CERT}: the CA expires in less than the data plane certificate lifetime ({}): \
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
            "{CERT}: {} expires before the signing CA (at {}); data plane certificates stop \
             verifying then",
            describe(first_i, n, first_to_expire),
            first_to_expire.validity().not_after,
        ));
    }

    let bundle = TrustBundle::new(chain.clone())?;
    let signer = LocalCa::new(CERT, chain, key)?;
    Ok(Validated {
        signer,
        bundle,
        warnings,
    })
}

/// Kuma's checks of every certificate in the chain (X509-SVID sections 4.1, 4.3 and appendix A).
fn check_ca_profile(cert: &X509Certificate<'_>) -> Result<(), String> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| format!("unreadable basic constraints extension: {e}"))?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(
            "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)"
                .into(),
        );
    }
    let usage = cert
        .key_usage()
        .map_err(|e| format!("unreadable key usage extension: {e}"))?;
    if !usage.as_ref().is_some_and(|u| u.value.key_cert_sign()) {
        return Err(
            "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)".into(),
        );
    }
    if usage.is_some_and(|u| u.value.key_agreement()) {
        return Err(
            "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: \
                    Appendix A. X.509 Field Reference)"
                .into(),
        );
    }
    Ok(())
}

/// Finds the private key among the PEM blocks (openssl may put `EC PARAMETERS` first).
fn parse_key(key_pem: &SecretBytes) -> Result<PrivateKey, Error> {
    let blocks = pem::parse_many(key_pem.expose())
        .map_err(|e| Error::invalid_ca(KEY, format!("is not valid PEM: {e}")))?;
    let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        return Err(Error::invalid_ca(KEY, "contains no PEM private key"));
    };
    if block.tag() == "ENCRYPTED PRIVATE KEY" {
        return Err(Error::invalid_ca(
            KEY,
            "is encrypted: provide the key unencrypted (PKCS#8, PKCS#1 or SEC1 PEM)",
        ));
    }
    let single = SecretBytes::new(pem::encode(block).into_bytes());
    PrivateKey::from_pem(single.expose()).map_err(|e| match e {
        Error::UnsupportedKey(what) => Error::invalid_ca(KEY, format!("unsupported key: {what}")),
        other => other,
    })
}

fn describe(i: usize, n: usize, cert: &X509Certificate<'_>) -> String {
    format!("certificate {} of {n} (`{}`)", i + 1, cert.subject())
}

fn invalid_cert(i: usize, n: usize, cert: Option<&X509Certificate<'_>>, reason: String) -> Error {
    let which = match cert {
        Some(c) => describe(i, n, c),
        None => format!("certificate {} of {n}", i + 1),
    };
    Error::invalid_ca(CERT, format!("{which}: {reason}"))
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests;

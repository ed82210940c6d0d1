//! [`LocalCa`]: a CA whose key meshca holds, the signer of the builtin and provided backends.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::request::{IssueRequest, LocalSigner, UncheckedCertificate};
use crate::x509::{is_self_issued, random_serial, san_types, KeyType, PrivateKey, RcgenSubjectKey};
use crate::Error;

/// A CA whose key meshca holds: signs data plane certificates locally.
///
/// Built once per config load (parsing the CA and its key is not done per request).
pub struct LocalCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    signer: Arc<LocalSigner>,
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    key_type: KeyType,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("chain_len", &self.chain.len())
            .field("key_type", &self.key_type)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl LocalCa {
    /// Builds a signer from the CA chain (signing CA first, then its parents) and the signing CA's
    /// key. The caller has validated the chain; this checks that the key matches the certificate.
    ///
    /// # Errors
    /// [`Error::InvalidCa`] (field `field`) when the certificate cannot be parsed or the key does not
    /// match it.
    pub fn new(
        field: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKey,
    ) -> Result<Self, Error> {
        let first = chain
            .first()
            .ok_or_else(|| Error::invalid_ca(field, "no certificate"))?;
        let (_, cert) = X509Certificate::from_der(first)
            .map_err(|e| Error::invalid_ca(field, format!("certificate cannot be parsed: {e}")))?;
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(Error::invalid_ca(
                field,
                "key does not match the certificate",
            ));
        }
        // Leaves never outlive any certificate of the chain above them.
        let mut not_after = expiry(&cert);
        for (i, der) in chain.iter().enumerate().skip(1) {
            let (_, parent) = X509Certificate::from_der(der).map_err(|e| {
                Error::invalid_ca(
                    field,
                    format!("certificate {} cannot be parsed: {e}", i + 1),
                )
            })?;
            not_after = not_after.min(expiry(&parent));
        }
        let key_type = key.key_type();
        let key_pair = KeyPair::try_from(key.keypair().serialized_der())
            .map_err(|e| Error::invalid_ca(field, format!("key cannot be loaded: {e}")))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(first, key_pair).map_err(|e| {
            Error::invalid_ca(
                field,
                format!("certificate cannot be used as an issuer: {e}"),
            )
        })?;
        let signer = Arc::new(LocalSigner {
            ca_cert: first.clone(),
            ca_subject: cert.subject().as_raw().to_vec(),
        });
        Ok(Self {
            issuer,
            signer,
            chain,
            not_after,
            key_type,
        })
    }

    /// The CA chain, signing CA first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// When the first certificate of the CA chain expires; leaves are clamped to it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Signs a data plane certificate for `request`, with Kuma's profile: the identity's URI SANs
    /// (and DNS SANs, when the identity has any),
    /// the templated CN if any, digitalSignature + keyEncipherment (+ keyAgreement for EC keys),
    /// EKU serverAuth + clientAuth, CA=false, a random serial, and a not-after clamped to the CA's.
    ///
    /// # Errors
    /// [`Error::Crypto`] when signing fails.
    pub fn sign(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let mut params = CertificateParams::default();
        params.not_before = to_offset(request.not_before());
        params.not_after = to_offset(request.not_after().min(self.not_after));
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = request.common_name() {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = san_types(request.uri_sans(), request.identity().dns_sans())?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let subject_key = request.subject_key().ok_or_else(|| {
            Error::Inconsistent("a local CA was asked to certify a key it was not given".into())
        })?;
        if subject_key.key_type().is_ec() {
            params.key_usages.push(KeyUsagePurpose::KeyAgreement);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&RcgenSubjectKey(subject_key), &self.issuer)
            .map_err(Error::crypto)?;
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(cert.der().clone());
        // The signing CA goes with the leaf when it is an intermediate; a self-signed root is only
        // in the trust bundle.
        if self.chain.len() > 1 || !is_self_issued(&self.chain[0]) {
            chain.extend(self.chain.iter().cloned());
        }
        Ok(UncheckedCertificate::signed_locally(
            chain,
            self.signer.clone(),
        ))
    }
}

fn expiry(cert: &X509Certificate<'_>) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0))
}

/// Converts a [`SystemTime`] for rcgen.
fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

//! X.509 building blocks shared by every backend: key types, CSR verification, PEM helpers and
//! serial numbers. [`LocalCa`](crate::LocalCa), the signer of the builtin and provided backends,
//! is built on them.

use std::fmt;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::secret::SecretBytes;
use crate::{CsrError, Error};

/// How far back `notBefore` is set, to tolerate clock skew between peers.
pub const BACKDATE: Duration = Duration::from_secs(10);

/// The type of a key: what meshca generates, and what it accepts in CSRs and CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 (the default for everything meshca generates).
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA with a modulus of this many bits and the public exponent 65537 (2048 to 8192 accepted;
    /// 2048, 3072, 4096 generated).
    Rsa(u32),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Rsa(bits) => write!(f, "RSA-{bits}"),
        }
    }
}

impl KeyType {
    /// True for elliptic-curve keys, which get `keyAgreement` in their key usage.
    pub fn is_ec(self) -> bool {
        matches!(self, Self::EcdsaP256 | Self::EcdsaP384)
    }

    fn rcgen_alg(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Classifies a DER SubjectPublicKeyInfo (a certificate's or a CSR's public key).
    ///
    /// Only keys that Envoy-style data planes and meshca's own verification both support are
    /// accepted: ECDSA on P-256 or P-384, and RSA of 2048 to 8192 bits with the exponent 65537.
    ///
    /// # Errors
    /// [`Error::UnsupportedKey`] when `spki_der` cannot be parsed, has trailing bytes, or is
    /// another curve, Ed25519, RSA of another size or exponent, DSA, ...
    pub fn of_spki(spki_der: &[u8]) -> Result<Self, Error> {
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| Error::UnsupportedKey(format!("public key cannot be parsed: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::UnsupportedKey(
                "trailing bytes after public key".into(),
            ));
        }
        Self::of_parsed_spki(&spki)
    }

    /// [`KeyType::of_spki`] for a SubjectPublicKeyInfo already parsed by x509-parser.
    pub(crate) fn of_parsed_spki(
        spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    ) -> Result<Self, Error> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
        };
        let alg = &spki.algorithm.algorithm;
        if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            return match curve {
                Some(c) if c == OID_EC_P256 => Ok(Self::EcdsaP256),
                Some(c) if c == OID_NIST_EC_P384 => Ok(Self::EcdsaP384),
                Some(c) => Err(Error::UnsupportedKey(format!(
                    "elliptic curve {c} (supported: P-256, P-384)"
                ))),
                None => Err(Error::UnsupportedKey("EC key without a named curve".into())),
            };
        }
        if *alg == OID_SIG_ED25519 {
            return Err(Error::UnsupportedKey(
                "Ed25519 (supported: ECDSA P-256/P-384, RSA 2048-8192 with exponent 65537)".into(),
            ));
        }
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = u32::try_from(rsa.key_size()).unwrap_or(u32::MAX);
                if !(2048..=8192).contains(&bits) {
                    return Err(Error::UnsupportedKey(format!(
                        "RSA-{bits} (RSA keys must have 2048 to 8192 bits)"
                    )));
                }
                let exponent = rsa.try_exponent().ok();
                if exponent != Some(65537) {
                    return Err(Error::UnsupportedKey(format!(
                        "RSA public exponent {} (only 65537 is accepted)",
                        exponent.map_or_else(|| "over 64 bits".to_owned(), |e| e.to_string())
                    )));
                }
                Ok(Self::Rsa(bits))
            }
            _ => Err(Error::UnsupportedKey(format!(
                "key algorithm {alg} (supported: ECDSA P-256/P-384, RSA 2048-8192 with exponent 65537)"
            ))),
        }
    }

    /// Generates a key pair of this type.
    ///
    /// # Errors
    /// [`Error::UnsupportedKey`] for RSA sizes other than 2048, 3072 and 4096;
    /// [`Error::Crypto`] when the crypto library fails.
    pub fn generate(self) -> Result<PrivateKey, Error> {
        let key = match self {
            Self::Rsa(bits) => {
                let size = match bits {
                    2048 => rcgen::RsaKeySize::_2048,
                    3072 => rcgen::RsaKeySize::_3072,
                    4096 => rcgen::RsaKeySize::_4096,
                    _ => {
                        return Err(Error::UnsupportedKey(format!(
                            "cannot generate RSA-{bits}: choose 2048, 3072 or 4096"
                        )))
                    }
                };
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(Error::crypto)?
            }
            other => KeyPair::generate_for(other.rcgen_alg()).map_err(Error::crypto)?,
        };
        Ok(PrivateKey {
            key,
            key_type: self,
        })
    }
}

/// A private key with its type. `Debug` is redacted; the PKCS#8 bytes are zeroized on drop.
pub struct PrivateKey {
    key: KeyPair,
    key_type: KeyType,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.key_type)
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl PrivateKey {
    /// Parses a PEM private key (PKCS#8, or PKCS#1 RSA / SEC1 EC as written by openssl).
    ///
    /// # Errors
    /// [`Error::UnsupportedKey`] when it is not a key meshca can use.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| Error::UnsupportedKey("private key is not PEM text".into()))?;
        let key = KeyPair::from_pem(text)
            .map_err(|e| Error::UnsupportedKey(format!("private key cannot be parsed: {e}")))?;
        let spki_der = key.subject_public_key_info();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|_| Error::UnsupportedKey("private key has no usable public key".into()))?;
        let key_type = KeyType::of_parsed_spki(&spki)?;
        Ok(Self { key, key_type })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// The PKCS#8 PEM, as a secret.
    pub fn to_pem(&self) -> SecretBytes {
        SecretBytes::new(self.key.serialize_pem().into_bytes())
    }

    /// The PKCS#8 DER, as a secret (what the SPIFFE Workload API hands a workload).
    pub fn to_pkcs8_der(&self) -> SecretBytes {
        SecretBytes::new(self.key.serialize_der())
    }

    /// Builds a CSR signed by this key that asks for `uri_sans` (so remote CAs that read SANs
    /// from the CSR see the identity).
    ///
    /// # Errors
    /// [`Error::Crypto`] when signing fails.
    pub fn csr_der(&self, uri_sans: &[String]) -> Result<Vec<u8>, Error> {
        self.csr_der_with_dns(uri_sans, &[])
    }

    /// Builds a CSR signed by this key that asks for `uri_sans` and `dns_sans` (an identity's
    /// [`uri_sans`](crate::Identity::uri_sans) and [`dns_sans`](crate::Identity::dns_sans)).
    ///
    /// # Errors
    /// [`Error::Crypto`] when a name cannot be encoded or signing fails.
    pub fn csr_der_with_dns(
        &self,
        uri_sans: &[String],
        dns_sans: &[String],
    ) -> Result<Vec<u8>, Error> {
        self.csr_der_with_names(uri_sans, dns_sans, None)
    }

    /// Builds a CSR signed by this key that asks for `uri_sans`, `dns_sans` and, as its subject,
    /// `common_name` (an empty subject without one): upstreams that copy the CSR's subject and
    /// SANs into the certificate (ACM PCA's end-entity template) then make exactly the
    /// certificate that was asked for.
    ///
    /// # Errors
    /// [`Error::Crypto`] when a name cannot be encoded or signing fails.
    pub fn csr_der_with_names(
        &self,
        uri_sans: &[String],
        dns_sans: &[String],
        common_name: Option<&str>,
    ) -> Result<Vec<u8>, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.subject_alt_names = san_types(uri_sans, dns_sans)?;
        let csr = params.serialize_request(&self.key).map_err(Error::crypto)?;
        Ok(csr.der().to_vec())
    }

    pub(crate) fn keypair(&self) -> &KeyPair {
        &self.key
    }
}

/// A public key taken from a verified CSR or a generated key, ready for signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectKey {
    key_type: KeyType,
    spki: Vec<u8>,
    raw: Vec<u8>,
}

impl SubjectKey {
    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    pub(crate) fn from_spki_der(spki_der: &[u8]) -> Result<Self, Error> {
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| Error::UnsupportedKey(format!("public key cannot be parsed: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::UnsupportedKey(
                "trailing bytes after public key".into(),
            ));
        }
        Ok(Self {
            key_type: KeyType::of_parsed_spki(&spki)?,
            raw: spki.subject_public_key.data.to_vec(),
            spki: spki_der.to_vec(),
        })
    }
}

/// A [`SubjectKey`] as rcgen signs it. Crate-private, so that rcgen's trait stays out of
/// ca-core's API.
pub(crate) struct RcgenSubjectKey<'a>(pub(crate) &'a SubjectKey);

impl PublicKeyData for RcgenSubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.0.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.key_type.rcgen_alg()
    }
}

/// Parses a CSR and verifies its signature (proof of possession of the key).
///
/// SANs requested in the CSR must all belong to `allowed_sans`; the subject is ignored (the
/// common name comes only from the template). Returns the CSR's public key.
///
/// # Errors
/// [`Error::Csr`] when it is not a DER CSR, its signature does not verify, or it asks for a
/// SAN the identity does not have; [`Error::UnsupportedKey`] for a key meshca does not accept.
pub fn verify_csr(der: &[u8], allowed_sans: &[String]) -> Result<SubjectKey, Error> {
    verify_csr_with_dns(der, allowed_sans, &[])
}

/// [`verify_csr`] for an identity that has DNS SANs: the CSR may ask for URI SANs among
/// `allowed_uri_sans` and DNS SANs among `allowed_dns_sans` (exact, case-sensitive matches), and
/// nothing else. Asking is all a CSR can do: the certificate's SANs still come only from the
/// identity.
///
/// # Errors
/// As [`verify_csr`].
pub fn verify_csr_with_dns(
    der: &[u8],
    allowed_uri_sans: &[String],
    allowed_dns_sans: &[String],
) -> Result<SubjectKey, Error> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CsrError::Encoding {
        expected: "not a DER-encoded PKCS#10 certification request",
        source: Box::new(e),
    })?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingBytes.into());
    }
    let info = &csr.certification_request_info;
    let key_type = KeyType::of_parsed_spki(&info.subject_pki)?;
    csr.verify_signature()
        .map_err(|e| CsrError::Signature(Box::new(e)))?;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    let ok = match name {
                        GeneralName::URI(uri) => allowed_uri_sans.iter().any(|a| a == uri),
                        GeneralName::DNSName(dns) => allowed_dns_sans.iter().any(|a| a == dns),
                        _ => false,
                    };
                    if !ok {
                        return Err(CsrError::ForeignSan(describe_general_name(name)).into());
                    }
                }
            }
        }
    }
    Ok(SubjectKey {
        key_type,
        spki: info.subject_pki.raw.to_vec(),
        raw: info.subject_pki.subject_public_key.data.to_vec(),
    })
}

/// Splits PEM text into the DER of every `CERTIFICATE` block, in order.
///
/// # Errors
/// A message when the text is not PEM or holds no certificate.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let blocks = pem::parse_many(pem).map_err(|e| format!("is not valid PEM: {e}"))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("contains no PEM certificate".into());
    }
    Ok(certs)
}

/// Encodes DER certificates as concatenated PEM.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
        .collect()
}

/// A random, non-zero 128-bit serial number: the big-endian bytes of a positive integer, as
/// rcgen's `SerialNumber::from_slice` takes them (it encodes them unsigned).
pub fn random_serial() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    loop {
        // aws-lc's DRBG; failure here means the OS has no entropy, which no caller can fix.
        if aws_lc_rs::rand::fill(&mut bytes).is_ok() && bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
}

/// The SANs rcgen writes: URIs first, then DNS names.
pub(crate) fn san_types(uri_sans: &[String], dns_sans: &[String]) -> Result<Vec<SanType>, Error> {
    let uris = uri_sans
        .iter()
        .map(|s| Ok(SanType::URI(s.as_str().try_into()?)));
    let dns = dns_sans
        .iter()
        .map(|s| Ok(SanType::DnsName(s.as_str().try_into()?)));
    uris.chain(dns)
        .collect::<Result<_, rcgen::Error>>()
        .map_err(Error::crypto)
}

/// Trust anchors of PEM text from an upstream CA: its self-issued certificates, or, for a chain
/// that stops below its root, its last certificate.
///
/// # Errors
/// The PEM parser's message.
pub fn anchors_of(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = parse_pem_certs(pem)?;
    let roots: Vec<_> = certs
        .iter()
        .filter(|c| is_self_issued(c))
        .cloned()
        .collect();
    if roots.is_empty() {
        Ok(certs.last().cloned().into_iter().collect())
    } else {
        Ok(roots)
    }
}

/// Whether `der` is self-issued (subject equals issuer).
pub fn is_self_issued(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
        .unwrap_or(false)
}

/// The subject alternative names of the certificate `der`, in order, each as openssl prints it
/// (`URI:spiffe://...`, `DNS:example.com`, `IP:10.0.0.1`); empty when it has no SAN extension.
///
/// # Errors
/// A message when `der` is not an X.509 certificate or its SAN extension cannot be parsed.
pub fn describe_sans(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate cannot be parsed: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("subject alternative names cannot be parsed: {e}"))?;
    Ok(san.map_or_else(Vec::new, |s| {
        s.value
            .general_names
            .iter()
            .map(describe_general_name)
            .collect()
    }))
}

/// A general name as openssl prints it (`URI:spiffe://...`, `DNS:example.com`).
pub(crate) fn describe_general_name(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(ip);
                format!("IP:{}", std::net::Ipv6Addr::from(b))
            }
            _ => "IP:<malformed>".into(),
        },
        other => format!("{other:?}"),
    }
}

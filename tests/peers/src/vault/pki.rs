//! The `pki` secrets engine as far as meshca's requests go: an internal root, roles,
//! `issue`/`sign` (PEM, PKCS#8 keys; DNS and URI SANs) with Vault's name, URI SAN and TTL checks
//! (`builtin/logical/pki/issuing/issue_common.go`, `path_issue_sign.go`, `path_roles.go`), and
//! `ca/pem` / `ca_chain`. The rest of the engine is exercised against real OpenBao.

use std::collections::HashMap;

use ::time::OffsetDateTime;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use serde_json::{json, Value};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::server::Op;
use super::server::{envelope, Reply};
use super::util::{self, go_duration, now_unix, SYSTEM_MAX_TTL};
use super::{bad, VaultError};

/// The mount's issuing CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    not_after: u64,
    serial: String,
    issuer_id: String,
    key_id: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("serial", &self.serial).finish()
    }
}

/// A PKI role (`<mount>/roles/<name>`), fields and defaults as in `path_roles.go`.
#[derive(Debug, Clone)]
struct Role {
    ttl: u64,
    max_ttl: u64,
    allow_localhost: bool,
    allowed_domains: Vec<String>,
    allow_bare_domains: bool,
    allow_subdomains: bool,
    allow_glob_domains: bool,
    allow_any_name: bool,
    enforce_hostnames: bool,
    allowed_uri_sans: Vec<String>,
    server_flag: bool,
    client_flag: bool,
    key_type: String,
    key_bits: u32,
    require_cn: bool,
    not_before_duration: u64,
    use_csr_common_name: bool,
    use_csr_sans: bool,
}

impl Role {
    fn from_body(body: &Value) -> Result<Role, VaultError> {
        let b = |k: &str, d: bool| util::bool_field(body, k, d).map_err(bad);
        let key_type = match util::string_field(body, "key_type").as_str() {
            "" => "rsa".to_string(),
            t @ ("rsa" | "ec" | "any") => t.to_string(),
            "ed25519" => {
                return Err(bad(
                    "key_type ed25519 is not supported by this test server".to_string()
                ))
            }
            other => return Err(bad(format!("unknown key_type {other}"))),
        };
        let bits = body
            .get("key_bits")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0) as u32;
        let key_bits = match (key_type.as_str(), bits) {
            ("rsa", 0) => 2048,
            ("ec", 0) => 256,
            ("rsa", b @ (2048 | 3072 | 4096)) => b,
            ("ec", b @ (256 | 384)) => b,
            ("any", b) => b,
            (t, b) => return Err(bad(format!("unsupported bit length for {t} key: {b}"))),
        };
        let not_before_duration = if body.get("not_before_duration").is_some() {
            util::duration_field(body, "not_before_duration").map_err(bad)?
        } else {
            30
        };
        let role = Role {
            ttl: util::duration_field(body, "ttl").map_err(bad)?,
            max_ttl: util::duration_field(body, "max_ttl").map_err(bad)?,
            allow_localhost: b("allow_localhost", true)?,
            allowed_domains: util::string_list(body.get("allowed_domains")),
            allow_bare_domains: b("allow_bare_domains", false)?,
            allow_subdomains: b("allow_subdomains", false)?,
            allow_glob_domains: b("allow_glob_domains", false)?,
            allow_any_name: b("allow_any_name", false)?,
            enforce_hostnames: b("enforce_hostnames", true)?,
            allowed_uri_sans: util::string_list(body.get("allowed_uri_sans")),
            server_flag: b("server_flag", true)?,
            client_flag: b("client_flag", true)?,
            key_type,
            key_bits,
            require_cn: b("require_cn", true)?,
            not_before_duration,
            use_csr_common_name: b("use_csr_common_name", true)?,
            use_csr_sans: b("use_csr_sans", true)?,
        };
        if role.max_ttl > 0 && role.ttl > role.max_ttl {
            return Err(bad(
                "\"ttl\" value must be less than \"max_ttl\" value".to_string()
            ));
        }
        Ok(role)
    }

    fn to_json(&self) -> Value {
        json!({
            "ttl": self.ttl, "max_ttl": self.max_ttl,
            "allow_localhost": self.allow_localhost, "allowed_domains": self.allowed_domains,
            "allow_bare_domains": self.allow_bare_domains, "allow_subdomains": self.allow_subdomains,
            "allow_glob_domains": self.allow_glob_domains, "allow_any_name": self.allow_any_name,
            "enforce_hostnames": self.enforce_hostnames,
            "allowed_uri_sans": self.allowed_uri_sans, "server_flag": self.server_flag,
            "client_flag": self.client_flag, "key_type": self.key_type, "key_bits": self.key_bits,
            "require_cn": self.require_cn, "not_before_duration": self.not_before_duration,
            "use_csr_common_name": self.use_csr_common_name, "use_csr_sans": self.use_csr_sans,
            "issuer_ref": "default",
            "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"],
        })
    }
}

/// One PKI mount.
#[derive(Debug, Default)]
pub(crate) struct Pki {
    ca: Option<Ca>,
    roles: HashMap<String, Role>,
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn random_serial() -> Vec<u8> {
    use rand::RngExt;
    let mut s: [u8; 20] = rand::rng().random();
    s[0] &= 0x7f;
    if s[0] == 0 {
        s[0] = 0x01;
    }
    s.to_vec()
}

fn odt(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_key(key_type: &str, bits: u32) -> Result<KeyPair, VaultError> {
    let r = match (key_type, bits) {
        ("ec", 384) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        ("ec", _) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        ("rsa", 3072) => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        ("rsa", 4096) => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
        _ => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
    };
    r.map_err(|e| VaultError::new(500, format!("error generating private key: {e}")))
}

/// Routes `<mount>/<sub>`.
pub(crate) fn route(pki: &mut Pki, sub: &str, op: Op, body: &Value) -> Result<Reply, VaultError> {
    let no_route = || VaultError::new(404, "");
    match (sub, op) {
        ("root/generate/internal", Op::Write) => generate_root(pki, body),
        ("ca/pem" | "ca_chain", Op::Read) => ca(pki).map(|c| {
            Reply::Raw(
                200,
                "application/pem-certificate-chain",
                c.pem.clone().into_bytes(),
            )
        }),
        _ => {
            if let Some(name) = sub.strip_prefix("roles/") {
                if op != Op::Write {
                    return Err(VaultError::unsupported());
                }
                let role = Role::from_body(body)?;
                let data = role.to_json();
                pki.roles.insert(name.to_string(), role);
                return Ok(envelope(data, vec![]));
            }
            let (is_sign, role_name) = if let Some(r) = sub.strip_prefix("issue/") {
                (false, r)
            } else if let Some(r) = sub.strip_prefix("sign/") {
                (true, r)
            } else {
                return Err(no_route());
            };
            if op != Op::Write {
                return Err(VaultError::unsupported());
            }
            let role = pki
                .roles
                .get(role_name)
                .cloned()
                .ok_or_else(|| VaultError::bad_request(format!("unknown role: {role_name}")))?;
            issue(pki, &role, body, is_sign)
        }
    }
}

fn ca(pki: &Pki) -> Result<&Ca, VaultError> {
    pki.ca
        .as_ref()
        .ok_or_else(|| VaultError::bad_request("no default issuer currently configured"))
}

fn generate_root(pki: &mut Pki, body: &Value) -> Result<Reply, VaultError> {
    let cn = util::string_field(body, "common_name");
    if cn.is_empty() {
        return Err(bad("the common_name field is required"));
    }
    let ttl = match util::duration_field(body, "ttl").map_err(bad)? {
        0 => SYSTEM_MAX_TTL,
        t => t,
    };
    let key_type = match util::string_field(body, "key_type").as_str() {
        "" | "rsa" => "rsa",
        "ec" => "ec",
        other => return Err(bad(format!("unknown key_type {other}"))),
    };
    let bits = body.get("key_bits").and_then(Value::as_u64).unwrap_or(0) as u32;
    let key = new_key(key_type, bits)?;
    let now = now_unix();
    let serial = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cn.as_str());
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = odt(now.saturating_sub(30));
    params.not_after = odt(now + ttl);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| VaultError::new(500, format!("error generating root: {e}")))?;
    let ca = Ca {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
        not_after: now + ttl,
        serial: colon_hex(&serial),
        issuer_id: util::uuid(),
        key_id: util::uuid(),
    };
    let data = json!({
        "certificate": ca.pem, "issuing_ca": ca.pem, "serial_number": ca.serial,
        "expiration": ca.not_after, "issuer_id": ca.issuer_id, "issuer_name": "",
        "key_id": ca.key_id, "key_name": "",
    });
    pki.ca = Some(ca);
    Ok(envelope(data, vec![]))
}

/// Hostname check of `issue_common.go` (`hostnameRegex`, wildcard label allowed).
fn is_hostname(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `ValidateNames` of `issue_common.go` for DNS names (no emails, no token display names).
fn validate_names(role: &Role, names: &[String]) -> Option<String> {
    for name in names {
        let mut reduced = name.as_str();
        let wildcard = name.contains('*');
        if wildcard {
            if name.matches('*').count() > 1 {
                return Some(name.clone());
            }
            match name.split_once('.') {
                Some((_, r)) if !r.contains('*') => reduced = r,
                Some(_) => return Some(name.clone()),
                None => reduced = "",
            }
        }
        if role.enforce_hostnames && !reduced.is_empty() && !is_hostname(reduced) {
            return Some(name.clone());
        }
        if role.allow_any_name {
            continue;
        }
        if role.allow_localhost {
            if reduced == "localhost" || reduced == "localdomain" {
                continue;
            }
            if role.allow_subdomains
                && (reduced.ends_with(".localhost") || reduced.ends_with(".localdomain"))
            {
                continue;
            }
        }
        let mut valid = false;
        for domain in role.allowed_domains.iter().filter(|d| !d.is_empty()) {
            if role.allow_bare_domains && name.eq_ignore_ascii_case(domain) {
                valid = true;
                break;
            }
            if role.allow_subdomains
                && (reduced.ends_with(&format!(".{domain}"))
                    || (wildcard && reduced.eq_ignore_ascii_case(domain)))
            {
                valid = true;
                break;
            }
            if role.allow_glob_domains
                && domain.contains('*')
                && util::glob_match(&domain.to_lowercase(), &name.to_lowercase())
            {
                valid = true;
                break;
            }
        }
        if !valid {
            return Some(name.clone());
        }
    }
    None
}

struct CsrInfo {
    params: CertificateSigningRequestParams,
    cn: String,
    dns: Vec<String>,
    uris: Vec<String>,
    key_type: &'static str,
}

fn parse_csr(pem_text: &str) -> Result<CsrInfo, VaultError> {
    if pem_text.trim().is_empty() {
        return Err(bad("\"csr\" is empty"));
    }
    let block = pem::parse(pem_text.trim()).map_err(|_| bad("csr contains no data"))?;
    let der = block.contents();
    let (_, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| bad(format!("certificate request could not be parsed: {e}")))?;
    csr.verify_signature()
        .map_err(|e| bad(format!("request signature invalid: {e}")))?;
    let info = &csr.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let (mut dns, mut uris) = (Vec::new(), Vec::new());
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        _ => {}
                    }
                }
            }
        }
    }
    let oid = info.subject_pki.algorithm.algorithm.to_id_string();
    let key_type = match oid.as_str() {
        "1.2.840.113549.1.1.1" => "rsa",
        "1.2.840.10045.2.1" => "ec",
        "1.3.101.112" => "ed25519",
        _ => "unknown",
    };
    let params = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        der.to_vec(),
    ))
    .map_err(|e| bad(format!("certificate request could not be parsed: {e}")))?;
    Ok(CsrInfo {
        params,
        cn,
        dns,
        uris,
        key_type,
    })
}

fn issue(pki: &mut Pki, role: &Role, body: &Value, is_sign: bool) -> Result<Reply, VaultError> {
    if !is_sign && role.key_type == "any" {
        return Err(bad(
            "role key type \"any\" not allowed for issuing certificates, only signing",
        ));
    }
    // What meshca asks for; Vault's other encodings are not served here.
    if !matches!(util::string_field(body, "format").as_str(), "" | "pem") {
        return Err(bad("this test server answers format=pem only"));
    }
    // Generated keys come as PKCS#8 (meshca asks for `private_key_format=pkcs8`), whatever
    // was asked.
    let ca_not_after = pki
        .ca
        .as_ref()
        .map(|c| c.not_after)
        .ok_or_else(|| {
            bad("could not fetch the CA certificate (was one set?): no default issuer currently configured")
        })?;
    let csr = if is_sign {
        let csr = parse_csr(&util::string_field(body, "csr"))?;
        if role.key_type != "any" && csr.key_type != role.key_type {
            return Err(bad(format!("role requires keys of type {}", role.key_type)));
        }
        Some(csr)
    } else {
        None
    };

    // Names (GenerateCreationBundle).
    let mut cn = String::new();
    if let Some(c) = csr.as_ref().filter(|_| role.use_csr_common_name) {
        cn = c.cn.clone();
    }
    if cn.is_empty() {
        cn = util::string_field(body, "common_name");
        if cn.is_empty() && role.require_cn {
            return Err(bad(
                "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
            ));
        }
    }
    let from_csr = csr.as_ref().filter(|_| role.use_csr_sans);
    let mut dns: Vec<String> = from_csr.map(|c| c.dns.clone()).unwrap_or_default();
    let exclude_cn = util::bool_field(body, "exclude_cn_from_sans", false).map_err(bad)?;
    if !cn.is_empty() && !exclude_cn && !cn.contains('@') && is_hostname(&cn) {
        dns.push(cn.to_ascii_lowercase());
    }
    if from_csr.is_none() {
        let mut alt = util::string_list(body.get("alt_names"));
        alt.sort();
        alt.dedup();
        for a in alt {
            if !a.contains('@') && is_hostname(&a) {
                dns.push(a.to_ascii_lowercase());
            }
        }
    }
    if !cn.is_empty() && validate_names(role, std::slice::from_ref(&cn)).is_some() {
        return Err(bad(format!("common name {cn} not allowed by this role")));
    }
    if let Some(badname) = validate_names(role, &dns) {
        return Err(bad(format!(
            "subject alternate name {badname} not allowed by this role"
        )));
    }
    let mut uris: Vec<String> = Vec::new();
    if let Some(c) = from_csr {
        if !c.uris.is_empty() {
            if role.allowed_uri_sans.is_empty() {
                return Err(bad("URI Subject Alternative Names are not allowed in this role, but were provided via CSR"));
            }
            for u in &c.uris {
                if !role.allowed_uri_sans.iter().any(|a| util::glob_match(a, u)) {
                    return Err(bad("URI Subject Alternative Names were provided via CSR which are not valid for this role"));
                }
                uris.push(u.clone());
            }
        }
    } else {
        let uri_alt = util::string_list(body.get("uri_sans"));
        if !uri_alt.is_empty() {
            if role.allowed_uri_sans.is_empty() {
                return Err(bad("URI Subject Alternative Names are not allowed in this role, but were provided via the API"));
            }
            for u in uri_alt {
                if !role
                    .allowed_uri_sans
                    .iter()
                    .any(|a| util::glob_match(a, &u))
                {
                    return Err(bad("URI Subject Alternative Names were provided via the API which are not valid for this role"));
                }
                if !u.contains(':') {
                    return Err(bad(format!(
                        "the provided URI Subject Alternative Name {u:?} is not a valid URI"
                    )));
                }
                uris.push(u);
            }
        }
    }

    // TTL (GetCertificateNotAfter) and the issuer's leaf_not_after_behavior=err.
    let mut warnings = Vec::new();
    let mut ttl = util::duration_field(body, "ttl").map_err(bad)?;
    if ttl == 0 && role.ttl > 0 {
        ttl = role.ttl;
    }
    let max_ttl = if role.max_ttl > 0 {
        role.max_ttl
    } else {
        SYSTEM_MAX_TTL
    };
    if ttl == 0 {
        ttl = SYSTEM_MAX_TTL;
    }
    if ttl > max_ttl {
        warnings.push(format!(
            "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
            go_duration(ttl),
            go_duration(max_ttl)
        ));
        ttl = max_ttl;
    }
    let now = now_unix();
    let not_after = now + ttl;
    if not_after > ca_not_after {
        return Err(bad(format!(
            "cannot satisfy request, as TTL would result in notAfter of {} that is beyond the expiration of the CA certificate at {}",
            util::rfc3339(not_after),
            util::rfc3339(ca_not_after)
        )));
    }

    // Certificate.
    let serial = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if !cn.is_empty() {
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = odt(now.saturating_sub(role.not_before_duration));
    params.not_after = odt(not_after);
    params.is_ca = IsCa::NoCa;
    params.use_authority_key_identifier_extension = true;
    let mut seen = std::collections::HashSet::new();
    for d in dns.iter().filter(|d| seen.insert((*d).clone())) {
        params.subject_alt_names.push(SanType::DnsName(
            d.as_str()
                .try_into()
                .map_err(|_| bad(format!("invalid DNS name {d}")))?,
        ));
    }
    for u in &uris {
        params
            .subject_alt_names
            .push(SanType::URI(u.as_str().try_into().map_err(|_| {
                bad(format!(
                    "the provided URI Subject Alternative Name {u:?} is not a valid URI"
                ))
            })?));
    }
    let leaf_key_type = csr
        .as_ref()
        .map(|c| c.key_type)
        .unwrap_or(role.key_type.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if leaf_key_type == "rsa" {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    if role.server_flag {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if role.client_flag {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    let ca = pki
        .ca
        .as_ref()
        .ok_or_else(|| bad("no default issuer currently configured"))?;
    let fail = |e: rcgen::Error| VaultError::new(500, format!("error signing certificate: {e}"));
    let (cert, key) = match csr {
        Some(mut c) => {
            c.params.params = params;
            (c.params.signed_by(&ca.issuer).map_err(fail)?, None)
        }
        None => {
            let key = new_key(&role.key_type, role.key_bits)?;
            (params.signed_by(&key, &ca.issuer).map_err(fail)?, Some(key))
        }
    };
    let ca_pem = ca.pem.clone();
    let mut data = json!({
        "expiration": not_after,
        "serial_number": colon_hex(&serial),
        "certificate": cert.pem().trim_end(),
        "issuing_ca": ca_pem.trim_end(),
        "ca_chain": [ca_pem.trim_end()],
    });
    if let Some(key) = key {
        data["private_key"] = json!(key.serialize_pem().trim_end());
        data["private_key_type"] = json!(role.key_type);
    }
    Ok(envelope(data, warnings))
}

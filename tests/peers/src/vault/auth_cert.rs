//! The `cert` auth method: trusted certificates (`certs/<name>`) and `login` against the
//! client certificate chain presented on the TLS connection
//! (`builtin/credential/cert/path_login.go`, `path_certs.go`).

use std::collections::HashMap;

use serde_json::{json, Value};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use super::policy::Op;
use super::server::{envelope, Reply};
use super::util::{self, now_unix};
use super::{bad, VaultError};

/// A trusted certificate entry.
#[derive(Debug, Clone)]
struct CertEntry {
    pem: String,
    der: Vec<u8>,
    policies: Vec<String>,
    ttl: u64,
    max_ttl: u64,
    display_name: String,
}

/// One `cert` auth mount.
#[derive(Debug, Default)]
pub(crate) struct CertMount {
    certs: HashMap<String, CertEntry>,
}

/// Admin paths: `certs/<name>` (write/read/delete) and `certs` (list).
pub(crate) fn admin(
    m: &mut CertMount,
    sub: &str,
    op: Op,
    body: &Value,
) -> Result<Reply, VaultError> {
    if sub == "certs" && op == Op::List {
        let mut keys: Vec<&String> = m.certs.keys().collect();
        keys.sort();
        return Ok(envelope(json!({ "keys": keys }), vec![]));
    }
    let Some(name) = sub.strip_prefix("certs/") else {
        return Err(VaultError::new(404, ""));
    };
    match op {
        Op::Write => {
            let pem_text = util::string_field(body, "certificate");
            let block = pem::parse(pem_text.trim())
                .map_err(|_| bad("failed to parse certificate"))?;
            X509Certificate::from_der(block.contents())
                .map_err(|e| bad(format!("failed to parse certificate: {e}")))?;
            let mut policies = util::string_list(body.get("token_policies"));
            if policies.is_empty() {
                policies = util::string_list(body.get("policies"));
            }
            let entry = CertEntry {
                pem: pem_text.clone(),
                der: block.contents().to_vec(),
                policies,
                ttl: util::duration_alias(body, &["token_ttl", "ttl"]).map_err(bad)?,
                max_ttl: util::duration_alias(body, &["token_max_ttl", "max_ttl"]).map_err(bad)?,
                display_name: util::string_field(body, "display_name"),
            };
            m.certs.insert(name.to_string(), entry);
            Ok(Reply::Empty)
        }
        Op::Read => m
            .certs
            .get(name)
            .map(|c| {
                envelope(
                    json!({ "certificate": c.pem, "token_policies": c.policies, "policies": c.policies,
                            "token_ttl": c.ttl, "token_max_ttl": c.max_ttl, "display_name": c.display_name }),
                    vec![],
                )
            })
            .ok_or_else(|| VaultError {
                status: 404,
                errors: vec![],
            }),
        Op::Delete => {
            m.certs.remove(name);
            Ok(Reply::Empty)
        }
        Op::List => Err(VaultError::unsupported()),
    }
}

fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer() == parent.subject() && child.verify_signature(Some(parent.public_key())).is_ok()
}

fn usable_for_client_auth(cert: &X509Certificate<'_>) -> bool {
    let now = now_unix() as i64;
    if cert.validity().not_before.timestamp() > now || cert.validity().not_after.timestamp() < now {
        return false;
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Login: returns (policies, ttl, max_ttl, metadata, display name).
pub(crate) fn login(
    m: &CertMount,
    body: &Value,
    chain: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<(Vec<String>, u64, u64, Value, String), VaultError> {
    let invalid =
        || VaultError::bad_request("invalid certificate or no client certificate supplied");
    let Some(leaf_der) = chain.first() else {
        return Err(VaultError::bad_request(
            "client certificate must be supplied",
        ));
    };
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|_| invalid())?;
    if !usable_for_client_auth(&leaf) {
        return Err(invalid());
    }
    let intermediates: Vec<X509Certificate<'_>> = chain[1..]
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
        .collect();
    let wanted = util::string_field(body, "name");
    let mut names: Vec<&String> = m.certs.keys().collect();
    names.sort();
    for name in names {
        if !wanted.is_empty() && *name != wanted {
            continue;
        }
        let entry = &m.certs[name];
        let Ok((_, trusted)) = X509Certificate::from_der(&entry.der) else {
            continue;
        };
        let matched = entry.der.as_slice() == leaf_der.as_ref()
            || (trusted.is_ca() && issued_by(&leaf, &trusted))
            || intermediates
                .iter()
                .any(|i| i.is_ca() && issued_by(&leaf, i) && issued_by(i, &trusted));
        if !matched {
            continue;
        }
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut ski = String::new();
        let mut aki = String::new();
        for ext in leaf.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => ski = hex(k.0),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a
                        .key_identifier
                        .as_ref()
                        .map(|k| hex(k.0))
                        .unwrap_or_default()
                }
                _ => {}
            }
        }
        let meta = json!({
            "cert_name": name,
            "common_name": cn,
            "serial_number": leaf.raw_serial_as_string().replace(':', ""),
            "subject_key_id": ski,
            "authority_key_id": aki,
        });
        let display = if entry.display_name.is_empty() {
            name.clone()
        } else {
            entry.display_name.clone()
        };
        return Ok((
            entry.policies.clone(),
            entry.ttl,
            entry.max_ttl,
            meta,
            display,
        ));
    }
    Err(invalid())
}

//! The PKI secrets engine's endpoints: `issue`/`sign` bodies, their answers, and the mount's CA
//! (`ca/pem`, `ca_chain`).

use ca_core::x509::{is_self_issued, parse_pem_certs};
use ca_core::IssueRequest;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

/// The body of `POST <pki>/issue/<role>` or `POST <pki>/sign/<role>` for `request`: the URI SANs
/// of the identity, the rendered CN (left out of the SANs) when there is one, the TTL of
/// `dpCert.rotation.expiration`, PEM, and for `sign` the CSR.
pub(crate) fn request_body(request: &IssueRequest, csr_pem: Option<String>) -> Value {
    let identity = request.identity();
    let mut body = json!({
        "uri_sans": request.uri_sans().join(","),
        "ttl": format!("{}s", request.lifetime().as_secs().max(1)),
        "format": "pem",
        "exclude_cn_from_sans": true,
    });
    if let Some(cn) = request.common_name() {
        body["common_name"] = Value::String(cn.to_owned());
    }
    if !identity.dns_sans().is_empty() {
        body["alt_names"] = Value::String(identity.dns_sans().join(","));
    }
    match csr_pem {
        Some(csr) => body["csr"] = Value::String(csr),
        None => body["private_key_format"] = Value::String("pkcs8".into()),
    }
    body
}

/// What `issue`/`sign` answered.
#[derive(Debug)]
pub(crate) struct Issued {
    /// The leaf, then the intermediates Vault sent (roots and the leaf itself left out).
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// `private_key` (issue only).
    pub(crate) private_key: Option<zeroize::Zeroizing<String>>,
    /// `warnings` (a TTL clamped to the role's `max_ttl`, ...).
    pub(crate) warnings: Vec<String>,
}

/// Reads an `issue`/`sign` answer: `data.certificate`, `data.ca_chain` (an array since Vault
/// 1.11, in which the leaf may appear), `data.issuing_ca`, `data.private_key`.
pub(crate) fn parse_issued(answer: &Value) -> Result<Issued, String> {
    let data = answer.get("data").ok_or("no data in Vault's answer")?;
    let leaf_pem = data
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or("no data.certificate in Vault's answer")?;
    let leaf = parse_pem_certs(leaf_pem.as_bytes())
        .map_err(|e| format!("data.certificate {e}"))?
        .into_iter()
        .next()
        .ok_or("data.certificate is empty")?;
    let mut extra: Vec<CertificateDer<'static>> = Vec::new();
    match data.get("ca_chain") {
        Some(Value::Array(items)) => {
            for item in items.iter().filter_map(Value::as_str) {
                extra.extend(
                    parse_pem_certs(item.as_bytes()).map_err(|e| format!("data.ca_chain {e}"))?,
                );
            }
        }
        Some(Value::String(s)) => {
            extra.extend(parse_pem_certs(s.as_bytes()).map_err(|e| format!("data.ca_chain {e}"))?)
        }
        _ => {}
    }
    if extra.is_empty() {
        if let Some(ca) = data.get("issuing_ca").and_then(Value::as_str) {
            extra.extend(
                parse_pem_certs(ca.as_bytes()).map_err(|e| format!("data.issuing_ca {e}"))?,
            );
        }
    }
    let mut chain = vec![leaf];
    for c in extra {
        // The leaf may be repeated in ca_chain; roots belong in the trust bundle only.
        if c != chain[0] && !is_self_issued(&c) && !chain.contains(&c) {
            chain.push(c);
        }
    }
    let private_key = data
        .get("private_key")
        .and_then(Value::as_str)
        .map(|k| zeroize::Zeroizing::new(k.to_owned()));
    let warnings = answer
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .take(8)
                .map(|s| s.chars().take(256).collect())
                .collect()
        })
        .unwrap_or_default();
    Ok(Issued {
        chain,
        private_key,
        warnings,
    })
}

/// The trust anchors of the mount: the self-issued certificates of `ca/pem` + `ca_chain`, or,
/// when Vault's chain stops below its root (an intermediate mount whose root was never
/// imported), the top of the chain.
pub(crate) fn anchors(
    ca_pem: &[u8],
    chain_pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut all: Vec<CertificateDer<'static>> = Vec::new();
    for (what, pem) in [("ca/pem", ca_pem), ("ca_chain", chain_pem)] {
        if pem.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        for c in parse_pem_certs(pem).map_err(|e| format!("{what} {e}"))? {
            if !all.contains(&c) {
                all.push(c);
            }
        }
    }
    if all.is_empty() {
        return Err("the PKI mount has no CA (ca/pem is empty): generate or import one".into());
    }
    let roots: Vec<_> = all.iter().filter(|c| is_self_issued(c)).cloned().collect();
    if roots.is_empty() {
        // ca_chain lists the issuer first and its parents after it.
        let top = all.last().cloned().into_iter().collect();
        return Ok(top);
    }
    Ok(roots)
}

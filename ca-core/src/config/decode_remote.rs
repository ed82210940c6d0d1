//! `conf` of the remote backends, whose CA lives upstream: vault, acmpca and certmanager.

use super::decode::{required_source, template, Fields};
use super::{
    AcmpcaConf, AwsAuthType, AwsCredentials, CertmanagerConf, VaultAuth, VaultConf, VaultMode,
};
use crate::error::{echo, Violations};

pub(super) fn decode_vault(mut f: Fields<'_>, v: &mut Violations) -> Option<VaultConf> {
    if f.has("fromDp") {
        v.add(f.at("fromDp"), "is not supported: use fromCp");
        let _ = f.get("fromDp");
    }
    let Some(mut cp) = f.obj("fromCp", v) else {
        if !f.has("fromCp") {
            v.add(f.at("fromCp"), "has to be defined");
        }
        f.finish(v);
        return None;
    };
    let agent_address = cp.str("agentAddress", v).filter(|s| !s.trim().is_empty());
    let address = cp.str("address", v).filter(|s| !s.trim().is_empty());
    for (key, value) in [("address", &address), ("agentAddress", &agent_address)] {
        if let Some(a) = value {
            if !(a.starts_with("http://") || a.starts_with("https://"))
                || a.len() <= "https://".len()
            {
                v.add(
                    cp.at(key),
                    format!("\"{a}\" must be an http:// or https:// URL"),
                );
            }
        }
    }
    if address.is_none() && agent_address.is_none() {
        v.add(cp.at("address"), "cannot be empty");
    }
    let namespace = cp.str("namespace", v).filter(|s| !s.trim().is_empty());
    let pki = cp.required_str("pki", v);
    let role = cp.required_str("role", v);
    // Both go into the request path (`/v1/<pki>/issue/<role>`): segments only, so a Mesh cannot
    // point a request at another Vault path or add a query.
    for (key, value, slashes) in [("pki", &pki, true), ("role", &role, false)] {
        if let Some(reason) = value.as_deref().and_then(|s| path_problem(s, slashes)) {
            v.add(cp.at(key), reason);
        }
    }
    let mode = match cp.str("mode", v).as_deref() {
        None | Some("issue") => VaultMode::Issue,
        Some("sign") => VaultMode::Sign,
        Some(other) => {
            v.add(
                cp.at("mode"),
                format!("\"{}\" is not supported (issue or sign)", echo(other)),
            );
            VaultMode::Issue
        }
    };
    let common_name = template(&mut cp, v);

    let mut tls_ca_cert = None;
    let mut tls_skip_verify = false;
    let mut tls_server_name = None;
    if let Some(mut tls) = cp.obj("tls", v) {
        if tls.has("caCert") {
            tls_ca_cert = tls.data_source("caCert", v);
        }
        tls_skip_verify = tls.bool("skipVerify", v).unwrap_or(false);
        tls_server_name = tls.str("serverName", v).filter(|s| !s.is_empty());
        tls.finish(v);
    }

    let auth_at = cp.at("auth");
    let mut auth = None;
    let mut auth_ok = true;
    match cp.obj("auth", v) {
        Some(mut a) => {
            let set: Vec<&str> = ["token", "tls", "aws"]
                .into_iter()
                .filter(|k| a.has(k))
                .collect();
            if set.len() != 1 && agent_address.is_none() {
                v.add(&auth_at, "exactly one of token, tls, aws must be set");
                auth_ok = false;
            } else if set.len() > 1 {
                v.add(&auth_at, "at most one of token, tls, aws may be set");
                auth_ok = false;
            }
            if a.has("token") {
                auth = a.data_source("token", v).map(VaultAuth::Token);
            }
            if let Some(mut t) = a.obj("tls", v) {
                let key = required_source(&mut t, "clientKey", v);
                let cert = required_source(&mut t, "clientCert", v);
                t.finish(v);
                if let (Some(client_key), Some(client_cert)) = (key, cert) {
                    auth = Some(VaultAuth::Tls {
                        client_key,
                        client_cert,
                    });
                }
            }
            if let Some(mut aws) = a.obj("aws", v) {
                let kind = match aws.str("type", v).as_deref() {
                    None | Some("IAM") => AwsAuthType::Iam,
                    Some("EC2") => AwsAuthType::Ec2,
                    Some(other) => {
                        v.add(
                            aws.at("type"),
                            format!("\"{other}\" is not supported (IAM or EC2)"),
                        );
                        AwsAuthType::Iam
                    }
                };
                let role = aws.str("role", v).filter(|s| !s.is_empty());
                let iam_server_id_header =
                    aws.str("iamServerIdHeader", v).filter(|s| !s.is_empty());
                aws.finish(v);
                auth = Some(VaultAuth::Aws {
                    kind,
                    role,
                    iam_server_id_header,
                });
            }
            a.finish(v);
        }
        None => {
            if agent_address.is_none() && !cp.has("auth") {
                v.add(&auth_at, "exactly one of token, tls, aws must be set");
                auth_ok = false;
            }
        }
    }
    cp.finish(v);
    f.finish(v);
    if !auth_ok {
        return None;
    }
    Some(VaultConf {
        address: address.or_else(|| agent_address.clone())?,
        agent_address,
        namespace,
        pki: pki?,
        role: role?,
        mode,
        common_name,
        tls_ca_cert,
        tls_skip_verify,
        tls_server_name,
        auth,
    })
}

/// Why `value` cannot be a Vault path (a mount of `/`-separated segments when `slashes`, else
/// one segment): empty segments, `.`/`..`, and `?`, `#`, `%` or `\\` are refused, as are
/// control characters and white space.
fn path_problem(value: &str, slashes: bool) -> Option<String> {
    let shown = echo(value);
    let segments: Vec<&str> = if slashes {
        // One leading or trailing '/' is harmless (`/pki/`).
        let inner = value.strip_prefix('/').unwrap_or(value);
        inner
            .strip_suffix('/')
            .unwrap_or(inner)
            .split('/')
            .collect()
    } else {
        vec![value]
    };
    if !slashes && value.contains('/') {
        return Some(format!("\"{shown}\" must be one path segment (no '/')"));
    }
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Some(format!(
            "\"{shown}\" must be a Vault path: no empty, '.' or '..' segments"
        ));
    }
    if value
        .chars()
        .any(|c| matches!(c, '?' | '#' | '%' | '\\') || c.is_control() || c.is_whitespace())
    {
        return Some(format!(
            "\"{shown}\" must be a Vault path: '?', '#', '%', '\\', white space and control characters are not allowed"
        ));
    }
    None
}

pub(super) fn decode_acmpca(mut f: Fields<'_>, v: &mut Violations) -> Option<AcmpcaConf> {
    let arn_at = f.at("arn");
    let arn = f.required_str("arn", v);
    if let Some(a) = &arn {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "acm-pca"
            && parts[5].starts_with("certificate-authority/");
        if !ok {
            v.add(&arn_at, format!("\"{a}\" is not an ACM PCA certificate authority ARN (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)"));
        }
    }
    let common_name = template(&mut f, v);
    // Optional in meshca: without it the bundle is GetCertificateAuthorityCertificate's.
    let ca_cert = if f.has("caCert") {
        f.data_source("caCert", v)
    } else {
        None
    };
    let mut credentials = None;
    if let Some(mut auth) = f.obj("auth", v) {
        if let Some(mut c) = auth.obj("awsCredentials", v) {
            let access_key = required_source(&mut c, "accessKey", v);
            let access_key_secret = required_source(&mut c, "accessKeySecret", v);
            c.finish(v);
            if let (Some(access_key), Some(access_key_secret)) = (access_key, access_key_secret) {
                credentials = Some(AwsCredentials {
                    access_key,
                    access_key_secret,
                });
            }
        }
        auth.finish(v);
    }
    f.finish(v);
    Some(AcmpcaConf {
        arn: arn?,
        common_name,
        ca_cert,
        credentials,
    })
}

pub(super) fn decode_certmanager(mut f: Fields<'_>, v: &mut Violations) -> Option<CertmanagerConf> {
    let mut issuer = None;
    match f.obj("issuerRef", v) {
        Some(mut r) => {
            let name = r.required_str("name", v);
            let kind = r
                .str("kind", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Issuer".into());
            let group = r
                .str("group", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "cert-manager.io".into());
            r.finish(v);
            issuer = name.map(|n| (n, kind, group));
        }
        None => {
            if !f.has("issuerRef") {
                v.add(f.at("issuerRef"), "has to be defined");
            }
        }
    }
    let common_name = template(&mut f, v);
    let ca_cert = if f.has("caCert") {
        f.data_source("caCert", v)
    } else {
        None
    };
    let auto_approve = f.bool("autoApprove", v).unwrap_or(false);
    let dns_at = f.at("dnsNames");
    let dns_names = f.string_list("dnsNames", v);
    for (i, d) in dns_names.iter().enumerate() {
        if crate::name::check_dns_name(d).is_err() {
            v.add(
                format!("{dns_at}[{i}]"),
                format!("\"{d}\" is not a valid DNS name"),
            );
        }
    }
    f.finish(v);
    let (issuer_name, issuer_kind, issuer_group) = issuer?;
    Some(CertmanagerConf {
        issuer_name,
        issuer_kind,
        issuer_group,
        common_name,
        ca_cert,
        dns_names,
        auto_approve,
    })
}

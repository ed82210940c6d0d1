//! Vault's answers turned into errors that say what to fix.

use crate::conf::VaultMode;
use ca_core::UpstreamError;
use ca_core::{Error, IssueRequest};
use reqwest::{Method, StatusCode};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::auth::AuthError;
use crate::client::CallError;
use crate::pki::Issued;
use crate::Settings;

/// Whether Vault said "permission denied" (a token it does not know, or a policy).
pub(crate) fn is_forbidden(e: &CallError) -> bool {
    matches!(e, CallError::Status { status, .. } if *status == StatusCode::FORBIDDEN)
}

fn vault_says(e: &CallError) -> String {
    match e {
        CallError::Status { status, errors } if errors.is_empty() => {
            format!("Vault answered {status}")
        }
        CallError::Status { status, errors } => {
            format!("Vault answered {}: {}", status.as_u16(), errors.join("; "))
        }
        other => other.to_string(),
    }
}

/// Failures every call shares: sealed, unreachable, TLS, timeouts, 5xx.
fn common(
    backend: &str,
    conf: &Settings,
    doing: &str,
    e: CallError,
    timeout: std::time::Duration,
) -> Result<Error, CallError> {
    match &e {
        CallError::Status { status, .. }
            if *status == StatusCode::SERVICE_UNAVAILABLE && e.text().contains("sealed") =>
        {
            Ok(UpstreamError::unavailable(
                backend,
                format!(
                    "Vault at {} is sealed: unseal it (vault operator unseal) ({doing})",
                    conf.address
                ),
            )
            .into())
        }
        CallError::Status { status, .. }
            if status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS =>
        {
            Ok(UpstreamError::unavailable(backend, doing)
                .with_source(e)
                .into())
        }
        CallError::Transport(t) => {
            let hint = if t.contains("certificate") || t.contains("Certificate") {
                " (check tls.caCert and tls.serverName)"
            } else {
                ""
            };
            Ok(
                UpstreamError::unavailable(backend, format!("{doing}{hint}"))
                    .with_source(e)
                    .into(),
            )
        }
        CallError::Timeout(_) => Ok(UpstreamError::timeout(backend, doing, timeout).into()),
        CallError::Decode(_) => Ok(UpstreamError::bad_answer(backend, doing, e).into()),
        CallError::Status { .. } => Err(e),
    }
}

/// A failed call to `method /v1/<path>` with a token of `auth`.
pub(crate) fn call_error(
    backend: &str,
    conf: &Settings,
    auth: &str,
    method: &Method,
    path: &str,
    e: CallError,
) -> Error {
    let doing = format!("{method} {}/v1/{path}", conf.address);
    let e = match common(backend, conf, &doing, e, std::time::Duration::ZERO) {
        Ok(err) => return err,
        Err(e) => e,
    };
    let text = e.text();
    let says = vault_says(&e);
    let (pki, role) = (&conf.pki, &conf.role);
    let refused = |reason: String| Error::from(UpstreamError::refused(backend.to_owned(), reason));
    let CallError::Status { status, .. } = &e else {
        return refused(format!("{doing}: {says}"));
    };
    if *status == StatusCode::FORBIDDEN {
        return refused(format!(
            "Vault denied {method} /v1/{path} (permission denied): the token of {auth} must be \
             valid and its policy must allow the path: path \"{path}\" {{ capabilities = \
             [\"create\", \"update\"] }} ({says})"
        ));
    }
    if text.contains("unknown role") || text.contains("no role found") {
        return refused(format!(
            "PKI mount `{pki}` has no role `{role}`: create it with `vault write \
             {pki}/roles/{role} ...` ({says})"
        ));
    }
    if text.contains("uri subject alternative name") || text.contains("uri_sans") {
        return refused(format!(
            "role `{role}` does not allow the data plane's URI SANs: set \
             allowed_uri_sans=\"spiffe://<mesh>/*,kuma://*\" (vault write {pki}/roles/{role} \
             allowed_uri_sans=...) ({says})"
        ));
    }
    if text.contains("common_name field is required") {
        return refused(format!(
            "role `{role}` requires a common name: set require_cn=false on it, or set \
             commonName on the backend ({says})"
        ));
    }
    if text.contains("common name") && text.contains("not allowed") {
        return refused(format!(
            "role `{role}` does not allow the rendered common name: allow it with \
             allowed_domains/allow_subdomains (or allow_any_name) on the role ({says})"
        ));
    }
    if text.contains("ttl") || text.contains("notafter") || text.contains("expiration") {
        return refused(format!(
            "Vault refused the certificate's lifetime (dpCert.rotation.expiration): lower it, \
             or raise the role's max_ttl / renew the mount's CA ({says})"
        ));
    }
    if *status == StatusCode::NOT_FOUND {
        return refused(format!(
            "Vault has no /v1/{path}: is `{pki}` the path of a PKI secrets engine (and the \
             namespace right)? ({says})"
        ));
    }
    refused(format!("Vault refused {method} /v1/{path} ({says})"))
}

/// No token could be had.
pub(crate) fn auth_error(backend: &str, conf: &Settings, auth: &str, e: AuthError) -> Error {
    let AuthError { doing, error } = e;
    let error = match common(backend, conf, &doing, error, std::time::Duration::ZERO) {
        Ok(err) => return err,
        Err(e) => e,
    };
    let text = error.text();
    let says = vault_says(&error);
    let hint = if doing.contains("lookup-self") && text.contains("permission denied") {
        "the token is invalid, expired or revoked".to_owned()
    } else if text.contains("signaturedoesnotmatch")
        || text.contains("invalidclienttokenid")
        || text.contains("error making upstream request")
    {
        "STS rejected the signed sts:GetCallerIdentity: check the AWS credentials the default \
         chain finds, and that Vault's sts_endpoint is the endpoint meshca signs for \
         (AWS_ENDPOINT_URL_STS)"
            .to_owned()
    } else if text.contains("iam_server_id_header") || text.contains("x-vault-aws-iam-server-id") {
        "the X-Vault-AWS-IAM-Server-ID header does not match Vault's \
         iam_server_id_header_value: set auth.aws.iamServerIdHeader to it"
            .to_owned()
    } else if doing.contains("auth/cert") {
        "the client certificate must be trusted by an entry of `vault write \
         auth/cert/certs/<name> certificate=@ca.pem token_policies=...`"
            .to_owned()
    } else if doing.contains("auth/aws") {
        "the IAM principal must be bound to the Vault role (`vault write auth/aws/role/<role> \
         auth_type=iam bound_iam_principal_arn=...`)"
            .to_owned()
    } else {
        format!("check {auth}")
    };
    Error::from(UpstreamError::refused(
        backend.to_owned(),
        format!("{doing} failed: {hint} ({says})"),
    ))
}

/// The leaf Vault made has every URI SAN asked for (a role whose `allowed_uri_sans` does not
/// cover them may drop them) and, on the `sign` path, nothing of the CSR's own.
pub(crate) fn check_sans(
    backend: &str,
    conf: &Settings,
    request: &IssueRequest,
    issued: &Issued,
) -> Result<(), Error> {
    let Some(leaf) = issued.chain.first() else {
        return Ok(());
    };
    let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
        return Ok(()); // core reports an unparsable leaf
    };
    let mut uris: Vec<&str> = Vec::new();
    let mut others = 0;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(u),
                _ => others += 1,
            }
        }
    }
    let (pki, role) = (&conf.pki, &conf.role);
    let missing: Vec<&String> = request
        .uri_sans()
        .iter()
        .filter(|u| !uris.contains(&u.as_str()))
        .collect();
    if let Some(first) = missing.first() {
        let mesh = request.identity().mesh();
        return Err(Error::from(UpstreamError::refused(
            backend.to_owned(),
            format!(
                "Vault's certificate lacks the requested URI SAN {first}{}: role `{role}` must \
                 allow them: vault write {pki}/roles/{role} \
                 allowed_uri_sans=\"spiffe://{mesh}/*,kuma://*\"",
                if missing.len() > 1 {
                    format!(" (and {} more)", missing.len() - 1)
                } else {
                    String::new()
                }
            ),
        )));
    }
    if conf.mode == VaultMode::Sign {
        let extra_uri = uris
            .iter()
            .any(|u| !request.uri_sans().iter().any(|w| w == u));
        let extra_dns = others > request.identity().dns_sans().len();
        let cn = cert.subject().iter_common_name().next().is_some();
        if extra_uri || extra_dns || (cn && request.common_name().is_none()) {
            return Err(Error::from(UpstreamError::refused(
                backend.to_owned(),
                format!(
                    "Vault copied names from the data plane's CSR into the certificate: set \
                     use_csr_common_name=false use_csr_sans=false on role `{role}` (vault write \
                     {pki}/roles/{role} ...)"
                ),
            )));
        }
    }
    Ok(())
}

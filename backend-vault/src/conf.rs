//! `conf` of a vault backend (`fromCp`), its decoder, and what it asks of the network.

use std::sync::Arc;

use ca_core::config::{BackendConfig, Fields};
use ca_core::{echo, CommonNameTemplate, DataSource, Upstream, Violations};

/// `conf.fromCp` of a vault backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VaultConf {
    /// `address`.
    pub address: String,
    /// `agentAddress`: a local Vault agent that authenticates for us.
    pub agent_address: Option<String>,
    /// `namespace` (Vault Enterprise).
    pub namespace: Option<String>,
    /// `pki`: the PKI secrets engine mount.
    pub pki: String,
    /// `role`.
    pub role: String,
    /// `mode` (meshca's extension): which PKI endpoint issues.
    pub mode: VaultMode,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `tls.caCert`.
    pub tls_ca_cert: Option<DataSource>,
    /// `tls.skipVerify`.
    pub tls_skip_verify: bool,
    /// `tls.serverName`.
    pub tls_server_name: Option<String>,
    /// `auth`; `None` only with `agentAddress`.
    pub auth: Option<VaultAuth>,
}

/// `conf.fromCp.mode`: which endpoint of the PKI mount issues data plane certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VaultMode {
    /// `issue` (default, as Kong Mesh): `POST <pki>/issue/<role>`; Vault makes the key and it
    /// travels to the data plane through meshca.
    #[default]
    Issue,
    /// `sign`: `POST <pki>/sign/<role>` with the data plane's CSR; the key never leaves the data
    /// plane.
    Sign,
}

/// `conf.fromCp.auth`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VaultAuth {
    /// `token`.
    Token(DataSource),
    /// `tls`: client certificate auth.
    Tls {
        /// `clientKey`.
        client_key: DataSource,
        /// `clientCert`.
        client_cert: DataSource,
    },
    /// `aws`.
    Aws {
        /// `type`.
        kind: AwsAuthType,
        /// `role`.
        role: Option<String>,
        /// `iamServerIdHeader`.
        iam_server_id_header: Option<String>,
    },
}

/// `auth.aws.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AwsAuthType {
    /// `IAM` (default).
    #[default]
    Iam,
    /// `EC2`.
    Ec2,
}

impl VaultConf {
    /// Decodes `conf` (`fromCp` with `address` or `agentAddress`, `pki`, `role`, `mode`,
    /// `commonName`, `tls`, exactly one `auth`), reporting every violation into `v` at Kuma's
    /// field paths.
    pub fn decode(f: Fields<'_>, v: &mut Violations) -> Option<Arc<Self>> {
        decode(f, v).map(Arc::new)
    }
}

impl BackendConfig for VaultConf {
    fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        let mut s: Vec<(&'static str, &DataSource)> = Vec::new();
        if let Some(ca) = &self.tls_ca_cert {
            s.push(("fromCp.tls.caCert", ca));
        }
        match &self.auth {
            Some(VaultAuth::Token(t)) => s.push(("fromCp.auth.token", t)),
            Some(VaultAuth::Tls {
                client_key,
                client_cert,
            }) => {
                s.push(("fromCp.auth.tls.clientKey", client_key));
                s.push(("fromCp.auth.tls.clientCert", client_cert));
            }
            Some(VaultAuth::Aws { .. }) | None => {}
        }
        s
    }

    fn upstreams(&self) -> Vec<Upstream> {
        // With an agent, requests go to the agent only.
        vec![match &self.agent_address {
            Some(agent) => Upstream::Vault {
                field: "agentAddress",
                url: agent.clone(),
            },
            None => Upstream::Vault {
                field: "address",
                url: self.address.clone(),
            },
        }]
    }

    fn common_name(&self) -> Option<&CommonNameTemplate> {
        self.common_name.as_ref()
    }

    /// A Vault reached over `http://` or with `tls.skipVerify`: the mesh's token or client key
    /// would cross the network unprotected.
    fn remote_violations(&self, at: &str, v: &mut Violations) {
        for (field, url) in [
            ("address", Some(&self.address)),
            ("agentAddress", self.agent_address.as_ref()),
        ] {
            let Some(url) = url else { continue };
            if url.trim_start().to_ascii_lowercase().starts_with("http://") {
                v.add(
                    format!("{at}.conf.fromCp.{field}"),
                    "http:// is not accepted in a Mesh sent over the network: use https://",
                );
            }
        }
        if self.tls_skip_verify {
            v.add(
                format!("{at}.conf.fromCp.tls.skipVerify"),
                "is not accepted in a Mesh sent over the network: give tls.caCert instead",
            );
        }
    }
}

fn decode(mut f: Fields<'_>, v: &mut Violations) -> Option<VaultConf> {
    if f.has("fromDp") {
        v.add(f.at("fromDp"), "is not supported: use fromCp");
        f.ignore(&["fromDp"]);
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
    let common_name = cp.common_name(v);

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
                let key = t.required_data_source("clientKey", v);
                let cert = t.required_data_source("clientCert", v);
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

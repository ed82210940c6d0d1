//! What every Vault-API peer of the suites shares: the auth methods, the README's (Kong Mesh's
//! docs) role, policy and Mesh YAML, building the backend as the registry does, and the
//! conformance fixture ([`VaultFixture`]) over any [`VaultApiPeer`] (real OpenBao,
//! `crate::openbao`, or OpenBao behind the fault and aws-auth front, `crate::vault`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_vault::{Timing, VaultCa};
use ca_core::config::Mesh;
use ca_core::{BuildSpec, CertificateAuthority, Error, MeshName, OverlaySecretStore, SourcePolicy};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::Fixture;

/// How the backend authenticates to Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `auth.token`: a renewable token of the mesh's policy.
    Token,
    /// `auth.tls`: a client certificate trusted by `auth/cert`.
    Cert,
    /// `auth.aws`: IAM, signed with an IAM user's key made in moto (IAM auth enforced).
    Aws,
}

/// The role every mesh's mount has.
pub const ROLE: &str = "dataplane-proxies";
/// The `iam_server_id_header_value` of the aws auth method.
pub const SERVER_ID: &str = "vault.example.com";

/// The role's `key_type` and the backend's `mode`.
#[derive(Clone, Copy, Debug)]
pub struct Role {
    /// `issue` or `sign`.
    pub mode: &'static str,
    /// The role's `key_type` (`ec`, `rsa`; `sign` needs `any` for CSRs of every type).
    pub key_type: &'static str,
    /// The role's `allowed_uri_sans`; `None`: `spiffe://<mesh>/*,kuma://*`.
    pub allowed_uri_sans: Option<&'static str>,
}

/// The `auth:` block (YAML, at 8 spaces) of a token.
pub fn token_auth_yaml(token: &str) -> String {
    format!("        auth:\n          token:\n            inlineString: {token}\n")
}

/// The `auth:` block (YAML, at 8 spaces) of a TLS client certificate and key (PEM).
pub fn cert_auth_yaml(cert: &str, key: &str) -> String {
    format!(
        "        auth:\n          tls:\n            clientCert:\n              inlineString: |\n{}            clientKey:\n              inlineString: |\n{}",
        indent(cert, 16),
        indent(key, 16)
    )
}

/// The `dataplane-proxies` role for `mesh`, as the README (Kong Mesh's docs) writes it.
pub fn role_body(mesh: &str, role: Role) -> serde_json::Value {
    let sans = role
        .allowed_uri_sans
        .map_or_else(|| format!("spiffe://{mesh}/*,kuma://*"), str::to_owned);
    let mut r = json!({
        "allowed_uri_sans": sans,
        "key_usage": "KeyUsageKeyAgreement,KeyUsageDigitalSignature",
        "ext_key_usage": "ExtKeyUsageServerAuth,ExtKeyUsageClientAuth",
        "client_flag": true,
        "require_cn": false,
        "allowed_domains": "mesh",
        "allow_subdomains": true,
        "basic_constraints_valid_for_non_ca": true,
        "max_ttl": "720h",
        "ttl": "720h",
        "key_type": role.key_type,
    });
    if role.mode == "sign" {
        r["use_csr_common_name"] = json!(false);
        r["use_csr_sans"] = json!(false);
    }
    r
}

/// The `meshca` policy: the issue and sign paths of every mesh's mount.
pub fn policy_hcl<'a>(meshes: impl Iterator<Item = &'a String>) -> String {
    meshes
        .map(|m| {
            // As Kong Mesh's docs write it, leading '/' included.
            format!(
                "path \"/pki-{m}/issue/{ROLE}\"\n{{\n  capabilities = [\"create\", \"update\"]\n}}\n\
                 path \"/pki-{m}/sign/{ROLE}\" {{ capabilities = [\"create\", \"update\"] }}\n"
            )
        })
        .collect()
}

/// Mesh YAML with one vault backend at `address` (TLS trusting `ca_pem`) on `pki-<mesh>`;
/// `extra` goes into `fromCp`.
pub fn mesh_yaml(
    address: &str,
    ca_pem: &str,
    mesh: &str,
    mode: &str,
    auth_yaml: &str,
    extra: &str,
) -> String {
    format!(
        "type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: vault-1\n  backends:\n  - name: vault-1\n    type: vault\n    dpCert:\n      rotation:\n        expiration: 24h\n    conf:\n      fromCp:\n        address: {address}\n        pki: pki-{mesh}\n        role: {ROLE}\n        mode: {mode}\n        tls:\n          caCert:\n            inlineString: |\n{}{extra}{auth_yaml}",
        indent(ca_pem, 14),
    )
}

/// Builds the vault backend of `yaml` as the registry does.
pub async fn build(yaml: &str, lifetime: Duration) -> Result<VaultCa, Error> {
    let mesh = Mesh::from_yaml(yaml, &crate::all_backends())?;
    let backend = mesh.enabled_backend().expect("enabled backend");
    let conf: &backend_vault::VaultConf = backend.conf_as()?;
    let sources = SourcePolicy::local();
    let spec = BuildSpec::from_parts(
        "mtls.backends[0].conf",
        &mesh.name,
        &backend.name,
        Timing::new(
            backend.dp_cert_request_timeout,
            Duration::from_secs(10),
            lifetime,
        ),
        Arc::new(OverlaySecretStore::new(None)),
        &sources,
    );
    VaultCa::load_at(&spec, conf).await
}

/// A client CA, and a leaf of it for TLS client auth: (CA PEM, cert PEM, key PEM).
pub fn client_cert() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "meshca client CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["meshca-cp".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "meshca-cp");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// `text`'s lines indented by `n` spaces (a YAML block scalar's body).
pub fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

/// The error with its causes, as the issuer prints it.
pub fn chain(e: &dyn std::error::Error) -> String {
    ca_core::error_chain(e)
}

/// A server that speaks Vault's API to the conformance fixture: real OpenBao
/// ([`crate::openbao::Peer`]) or OpenBao behind the front ([`crate::vault::Peer`]). Both set up the same mounts, roles, auth
/// blocks and Mesh YAML, so one fixture serves both.
#[async_trait]
pub trait VaultApiPeer: std::fmt::Debug + Send + Sync + 'static {
    /// The fixture's name for `auth` and the role's `mode`.
    fn fixture_name(auth: Auth, mode: &str) -> &'static str;
    /// A server with `auth` set up.
    async fn start(auth: Auth) -> Arc<Self>;
    /// A PKI mount named after `mesh` with `role`.
    async fn mount(&self, mesh: &str, role: Role);
    /// The `fromCp.auth` block of `auth`.
    async fn auth_yaml(&self, auth: Auth) -> String;
    /// A Mesh whose enabled backend is this server's mount for `mesh`.
    fn mesh_yaml(&self, mesh: &str, mode: &str, auth_yaml: &str, extra: &str) -> String;
    /// The backend of `yaml`'s enabled backend.
    async fn build(&self, yaml: &str, lifetime: Duration) -> Result<VaultCa, Error>;
}

/// The vault backend in the conformance suite, against the peer `P`.
#[derive(Debug)]
pub struct VaultFixture<P> {
    auth: Auth,
    role: Role,
    peer: tokio::sync::OnceCell<Arc<P>>,
}

impl<P: VaultApiPeer> VaultFixture<P> {
    /// `auth` with Vault's `issue` endpoint and a role of `key_type`.
    pub fn issue(auth: Auth, key_type: &'static str) -> Self {
        Self {
            auth,
            role: Role {
                mode: "issue",
                key_type,
                allowed_uri_sans: None,
            },
            peer: tokio::sync::OnceCell::new(),
        }
    }

    /// `auth` with `fromCp.mode: sign` (a role with `key_type=any`).
    pub fn sign(auth: Auth) -> Self {
        Self {
            auth,
            role: Role {
                mode: "sign",
                key_type: "any",
                allowed_uri_sans: None,
            },
            peer: tokio::sync::OnceCell::new(),
        }
    }

    async fn peer(&self) -> &Arc<P> {
        self.peer.get_or_init(|| P::start(self.auth)).await
    }
}

#[async_trait]
impl<P: VaultApiPeer> Fixture for VaultFixture<P> {
    fn name(&self) -> &'static str {
        P::fixture_name(self.auth, self.role.mode)
    }

    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let peer = self.peer().await;
        peer.mount(mesh.as_str(), self.role).await;
        let auth = peer.auth_yaml(self.auth).await;
        let yaml = peer.mesh_yaml(mesh.as_str(), self.role.mode, &auth, "");
        Arc::new(peer.build(&yaml, lifetime).await.unwrap())
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        // A role that does not allow this mesh's SPIFFE IDs: the server refuses, and the
        // message says how to fix the role.
        let peer = self.peer().await;
        let broken = format!("broken-{}", mesh.as_str());
        peer.mount(
            &broken,
            Role {
                allowed_uri_sans: Some("spiffe://elsewhere/*"),
                ..self.role
            },
        )
        .await;
        let auth = peer.auth_yaml(self.auth).await;
        let yaml = peer.mesh_yaml(&broken, self.role.mode, &auth, "").replace(
            &format!("name: {broken}\n"),
            &format!("name: {}\n", mesh.as_str()),
        );
        let ca = peer
            .build(&yaml, Duration::from_secs(3600))
            .await
            .map(|c| Arc::new(c) as Arc<dyn CertificateAuthority>);
        (ca, "allowed_uri_sans")
    }

    fn accepts_csrs(&self) -> bool {
        self.role.mode == "sign"
    }

    fn backdate(&self) -> Duration {
        // The role's not_before_duration (30 s by default, as Vault's and OpenBao's).
        Duration::from_secs(30)
    }
}

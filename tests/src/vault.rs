//! The vault backend against the hand-written Vault API test server (`meshca-peers`), for what
//! OpenBao cannot do here: aws (IAM) auth and injected faults. Set up with the commands of the
//! README (Kong Mesh's docs) that server has: a PKI mount per mesh with a root, the
//! `dataplane-proxies` role, and token or aws auth (no ACL policies, no cert auth: those run
//! against OpenBao, `crate::openbao`). Also the setup shared with `crate::openbao`: role body,
//! policy, mesh YAML, client certificate.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use backend_vault::{Timing, VaultCa};
use ca_core::config::Mesh;
use ca_core::{BuildSpec, CertificateAuthority, Error, MeshName, OverlaySecretStore, SourcePolicy};
use meshca_peers::{AwsKey, Moto, VaultOptions, VaultServer};
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

/// A Vault test server (and moto, for aws auth) set up for meshca.
pub struct Peer {
    /// The Vault API test server.
    pub vault: VaultServer,
    /// moto, for `Auth::Aws`.
    pub moto: Option<Moto>,
    /// The IAM user whose key signs the aws login.
    pub aws_key: Option<AwsKey>,
    meshes: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("vault", &self.vault.address())
            .finish()
    }
}

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

impl Peer {
    /// Starts Vault (and moto for aws auth) and enables `auth`.
    pub async fn start(auth: Auth) -> Arc<Peer> {
        let (moto, aws_key) = if auth == Auth::Aws {
            let moto = Moto::start().await;
            let key = moto
                .create_user_with_key(
                    "meshca-cp",
                    Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#),
                )
                .await;
            (Some(moto), Some(key))
        } else {
            (None, None)
        };
        let vault = VaultServer::start(VaultOptions {
            sts_endpoint: moto.as_ref().map(Moto::endpoint),
        })
        .await;
        match auth {
            Auth::Token => {}
            Auth::Cert => panic!("cert auth runs against OpenBao (meshca_tests::openbao)"),
            Auth::Aws => {
                let moto = moto.as_ref().expect("moto");
                let key = aws_key.as_ref().expect("key");
                vault.write("sys/auth/aws", json!({ "type": "aws" })).await;
                vault
                    .write(
                        "auth/aws/config/client",
                        json!({ "sts_endpoint": moto.endpoint(), "sts_region": "us-east-1", "iam_server_id_header_value": SERVER_ID }),
                    )
                    .await;
                vault
                    .write(
                        "auth/aws/role/meshca",
                        json!({ "auth_type": "iam", "bound_iam_principal_arn": [key.arn], "token_policies": "meshca", "token_ttl": "1h" }),
                    )
                    .await;
            }
        }
        Arc::new(Peer {
            vault,
            moto,
            aws_key,
            meshes: Mutex::new(HashSet::new()),
        })
    }

    /// The README's setup for `mesh`: `vault secrets enable -path=pki-<mesh> pki`, a root,
    /// the role, and the `meshca` policy (extended with this mesh's path). Once per mesh.
    pub async fn mount(&self, mesh: &str, role: Role) {
        if !self.meshes.lock().unwrap().insert(mesh.to_owned()) {
            return;
        }
        let pki = format!("pki-{mesh}");
        let v = &self.vault;
        v.write(&format!("sys/mounts/{pki}"), json!({ "type": "pki" }))
            .await;
        v.write(
            &format!("{pki}/root/generate/internal"),
            json!({ "common_name": format!("{mesh} mesh root"), "ttl": "87600h", "key_type": "ec" }),
        )
        .await;
        let r = role_body(mesh, role);
        v.write(&format!("{pki}/roles/{ROLE}"), r).await;
        // No `meshca` policy: this server has no ACLs (OpenBao's are tested in openbao.rs).
    }

    /// A token of the `meshca` policy: `vault token create -policy=meshca -ttl=<ttl>`.
    pub async fn token(&self, ttl: &str, renewable: bool, explicit_max_ttl: &str) -> String {
        let a = self
            .vault
            .write(
                "auth/token/create",
                json!({ "policies": ["meshca"], "ttl": ttl, "renewable": renewable, "explicit_max_ttl": explicit_max_ttl }),
            )
            .await;
        a["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// The `auth:` block (YAML, at 8 spaces) for `auth`, with a fresh token for `Auth::Token`.
    pub async fn auth_yaml(&self, auth: Auth) -> String {
        match auth {
            Auth::Token => {
                token_auth_yaml(&self.token("1h", true, "").await)
            }
            Auth::Cert => panic!("cert auth runs against OpenBao (meshca_tests::openbao)"),
            Auth::Aws => format!(
                "        auth:\n          aws:\n            role: meshca\n            iamServerIdHeader: {SERVER_ID}\n"
            ),
        }
    }

    /// Mesh YAML with one vault backend on `pki-<mesh>`; `extra` goes into `fromCp`.
    pub fn mesh_yaml(&self, mesh: &str, mode: &str, auth_yaml: &str, extra: &str) -> String {
        mesh_yaml(
            &self.vault.address(),
            &self.vault.tls_ca_pem(),
            mesh,
            mode,
            auth_yaml,
            extra,
        )
    }

    /// An SDK config with the IAM user's key, for moto's STS.
    pub fn aws_sdk(&self) -> Option<SdkConfig> {
        let key = self.aws_key.as_ref()?;
        let moto = self.moto.as_ref()?;
        Some(crate::acmpca::moto_sdk(moto, Some(key), "us-east-1"))
    }

    /// The backend of `yaml` as a control plane holds it: built as the registry does, its trust
    /// bundle kept by [`ca_core::CachedBundle`] (what the meshca manager wraps every backend in).
    pub async fn held(
        &self,
        yaml: &str,
        lifetime: Duration,
    ) -> Result<ca_core::CachedBundle, Error> {
        let ca = self.build(yaml, lifetime).await?;
        Ok(ca_core::CachedBundle::new(
            Arc::new(ca),
            Duration::from_secs(300),
        ))
    }

    /// Builds the backend from `yaml` as the registry does.
    pub async fn build(&self, yaml: &str, lifetime: Duration) -> Result<VaultCa, Error> {
        let ca = build(yaml, lifetime).await?;
        Ok(match self.aws_sdk() {
            Some(sdk) => ca.with_aws_sdk_config(sdk),
            None => ca,
        })
    }
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

/// A server that speaks Vault's API to the conformance fixture: the hand-written test server
/// ([`Peer`]) or real OpenBao ([`crate::openbao::Peer`]). Both set up the same mounts, roles, auth
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

#[async_trait]
impl VaultApiPeer for Peer {
    fn fixture_name(auth: Auth, mode: &str) -> &'static str {
        match (auth, mode) {
            (Auth::Token, "issue") => "vault (token, issue)",
            (Auth::Token, _) => "vault (token, sign)",
            (Auth::Cert, "issue") => "vault (cert, issue)",
            (Auth::Cert, _) => "vault (cert, sign)",
            (Auth::Aws, "issue") => "vault (aws, issue)",
            (Auth::Aws, _) => "vault (aws, sign)",
        }
    }
    async fn start(auth: Auth) -> Arc<Self> {
        Peer::start(auth).await
    }
    async fn mount(&self, mesh: &str, role: Role) {
        Peer::mount(self, mesh, role).await;
    }
    async fn auth_yaml(&self, auth: Auth) -> String {
        Peer::auth_yaml(self, auth).await
    }
    fn mesh_yaml(&self, mesh: &str, mode: &str, auth_yaml: &str, extra: &str) -> String {
        Peer::mesh_yaml(self, mesh, mode, auth_yaml, extra)
    }
    async fn build(&self, yaml: &str, lifetime: Duration) -> Result<VaultCa, Error> {
        Peer::build(self, yaml, lifetime).await
    }
}

/// The vault backend in the conformance suite, against the peer `P`.
#[derive(Debug)]
pub struct VaultFixture<P> {
    auth: Auth,
    role: Role,
    peer: tokio::sync::OnceCell<Arc<P>>,
}

/// The vault backend against the hand-written Vault API test server.
pub type Vault = VaultFixture<Peer>;

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

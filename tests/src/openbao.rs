//! The vault backend against a real OpenBao ([`meshca_peers::openbao::OpenBao`]) set up for
//! meshca as the README (Kong Mesh's docs) says: token or cert auth, a PKI mount per mesh with
//! a root, the `dataplane-proxies` role and the `meshca` policy.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend_vault::VaultCa;
use ca_core::Error;
use serde_json::json;

pub use meshca_peers::openbao::{binary, Audited, OpenBao, ROOT_TOKEN};

use crate::vault_api::{self as vault, Auth, Role, VaultApiPeer, VaultFixture, ROLE};

/// OpenBao set up for meshca as the README (Kong Mesh's docs) says, with one auth method.
pub struct Peer {
    /// The server.
    pub bao: OpenBao,
    /// Client certificate and key (PEM) for `Auth::Cert`.
    pub client: Option<(String, String)>,
    meshes: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("bao", &self.bao).finish()
    }
}

impl Peer {
    /// Starts OpenBao and enables `auth` (token or cert; OpenBao has no built-in aws auth).
    pub async fn start(auth: Auth) -> Arc<Peer> {
        let bao = OpenBao::start().await;
        let mut client = None;
        match auth {
            Auth::Token => {}
            Auth::Cert => {
                let (ca_pem, cert_pem, key_pem) = vault::client_cert();
                bao.write(None, "sys/auth/cert", json!({ "type": "cert" }))
                    .await;
                bao.write(
                    None,
                    "auth/cert/certs/meshca",
                    json!({ "certificate": ca_pem, "token_policies": "meshca", "token_ttl": "1h" }),
                )
                .await;
                client = Some((cert_pem, key_pem));
            }
            Auth::Aws => panic!("OpenBao has no aws auth method built in"),
        }
        bao.clear_requests();
        Arc::new(Peer {
            bao,
            client,
            meshes: Mutex::new(HashSet::new()),
        })
    }

    /// `bao secrets enable -path=pki-<mesh> pki`, a root, the role, and the `meshca` policy
    /// (extended with this mesh's paths). Once per mesh.
    pub async fn mount(&self, mesh: &str, role: Role) {
        if !self.meshes.lock().unwrap().insert(mesh.to_owned()) {
            return;
        }
        let pki = format!("pki-{mesh}");
        let b = &self.bao;
        b.write(None, &format!("sys/mounts/{pki}"), json!({ "type": "pki" }))
            .await;
        b.write(
            None,
            &format!("{pki}/root/generate/internal"),
            json!({ "common_name": format!("{mesh} mesh root"), "ttl": "87600h", "key_type": "ec" }),
        )
        .await;
        b.write(
            None,
            &format!("{pki}/roles/{ROLE}"),
            vault::role_body(mesh, role),
        )
        .await;
        let policy = vault::policy_hcl(self.meshes.lock().unwrap().iter());
        b.write(None, "sys/policies/acl/meshca", json!({ "policy": policy }))
            .await;
        b.clear_requests();
    }

    /// A token of the `meshca` policy: `bao token create -policy=meshca -ttl=<ttl>`.
    pub async fn token(&self, ttl: &str, renewable: bool, explicit_max_ttl: &str) -> String {
        let a = self
            .bao
            .write(
                None,
                "auth/token/create",
                json!({ "policies": ["meshca"], "ttl": ttl, "renewable": renewable, "explicit_max_ttl": explicit_max_ttl }),
            )
            .await;
        self.bao.clear_requests();
        a["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// The `auth:` block (YAML, at 8 spaces) for `auth`, with a fresh token for `Auth::Token`.
    pub async fn auth_yaml(&self, auth: Auth) -> String {
        match auth {
            Auth::Token => vault::token_auth_yaml(&self.token("1h", true, "").await),
            Auth::Cert => {
                let (cert, key) = self.client.as_ref().unwrap();
                vault::cert_auth_yaml(cert, key)
            }
            Auth::Aws => panic!("OpenBao has no aws auth method built in"),
        }
    }

    /// Mesh YAML with one vault backend on `pki-<mesh>` of this server (`tls.caCert`: its CA).
    pub fn mesh_yaml(&self, mesh: &str, mode: &str, auth_yaml: &str, extra: &str) -> String {
        vault::mesh_yaml(
            &self.bao.address(),
            &self.bao.tls_ca_pem(),
            mesh,
            mode,
            auth_yaml,
            extra,
        )
    }

    /// The backend of `yaml` as a control plane holds it (in [`ca_core::CachedBundle`]).
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
        vault::build(yaml, lifetime).await
    }
}

#[async_trait]
impl VaultApiPeer for Peer {
    fn fixture_name(auth: Auth, mode: &str) -> &'static str {
        match (auth, mode) {
            (Auth::Token, "issue") => "openbao (token, issue)",
            (Auth::Token, _) => "openbao (token, sign)",
            (Auth::Cert, "issue") => "openbao (cert, issue)",
            (Auth::Cert, _) => "openbao (cert, sign)",
            (Auth::Aws, _) => "openbao (aws)",
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

/// The vault backend against OpenBao in the conformance suite.
pub type OpenBaoFixture = VaultFixture<Peer>;

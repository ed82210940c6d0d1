//! The vault backend against real OpenBao behind [`VaultFront`], the hand-written front for
//! what OpenBao cannot do here: aws (IAM) auth, which is not among OpenBao's built-in auth
//! methods, and injected faults (sealed, 5xx, resets, a stopped server). Everything else —
//! PKI, tokens, ACL policies — is OpenBao's own: the front forwards it. Set up with the
//! commands of the README (Kong Mesh's docs), as [`crate::openbao::Peer`] does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use backend_vault::VaultCa;
use ca_core::Error;
use meshca_peers::{AwsKey, FrontOptions, Moto, VaultFront};
use serde_json::json;

pub use crate::vault_api::{
    build, cert_auth_yaml, chain, client_cert, indent, mesh_yaml, policy_hcl, role_body,
    token_auth_yaml, Auth, Role, VaultApiPeer, VaultFixture, ROLE, SERVER_ID,
};

/// OpenBao set up for meshca, behind the front the backend talks to (and moto, for aws auth).
pub struct Peer {
    /// The front the backend talks to: faults, the request log, aws auth.
    pub vault: VaultFront,
    /// OpenBao behind it, with the mounts, roles, policy and tokens.
    pub bao: Arc<crate::openbao::Peer>,
    /// moto, for `Auth::Aws`.
    pub moto: Option<Moto>,
    /// The IAM user whose key signs the aws login.
    pub aws_key: Option<AwsKey>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("vault", &self.vault.address())
            .field("bao", &self.bao)
            .finish()
    }
}

impl Peer {
    /// Starts OpenBao, the front before it (and moto for aws auth) and enables `auth`: token
    /// and cert in OpenBao, aws in the front (its logins mint OpenBao tokens of the role's
    /// policies).
    pub async fn start(auth: Auth) -> Arc<Peer> {
        let bao =
            crate::openbao::Peer::start(if auth == Auth::Aws { Auth::Token } else { auth }).await;
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
        let vault = VaultFront::start(
            bao.bao.upstream(),
            FrontOptions {
                sts_endpoint: moto.as_ref().map(Moto::endpoint),
            },
        )
        .await;
        if auth == Auth::Aws {
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
        vault.clear_requests();
        Arc::new(Peer {
            vault,
            bao,
            moto,
            aws_key,
        })
    }

    /// The README's setup for `mesh` in OpenBao (mount, root, role, `meshca` policy). Once per
    /// mesh.
    pub async fn mount(&self, mesh: &str, role: Role) {
        self.bao.mount(mesh, role).await;
    }

    /// A token of the `meshca` policy: `bao token create -policy=meshca -ttl=<ttl>`.
    pub async fn token(&self, ttl: &str, renewable: bool, explicit_max_ttl: &str) -> String {
        self.bao.token(ttl, renewable, explicit_max_ttl).await
    }

    /// The `auth:` block (YAML, at 8 spaces) for `auth`, with a fresh token for `Auth::Token`.
    pub async fn auth_yaml(&self, auth: Auth) -> String {
        match auth {
            Auth::Aws => format!(
                "        auth:\n          aws:\n            role: meshca\n            iamServerIdHeader: {SERVER_ID}\n"
            ),
            _ => self.bao.auth_yaml(auth).await,
        }
    }

    /// Mesh YAML with one vault backend on `pki-<mesh>`, addressed to the front; `extra` goes
    /// into `fromCp`.
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

    /// Builds the backend from `yaml` as the registry does (with the IAM user's key for aws).
    pub async fn build(&self, yaml: &str, lifetime: Duration) -> Result<VaultCa, Error> {
        let ca = build(yaml, lifetime).await?;
        Ok(match self.aws_sdk() {
            Some(sdk) => ca.with_aws_sdk_config(sdk),
            None => ca,
        })
    }
}

#[async_trait]
impl VaultApiPeer for Peer {
    fn fixture_name(auth: Auth, mode: &str) -> &'static str {
        match (auth, mode) {
            (Auth::Token, "issue") => "vault front (token, issue)",
            (Auth::Token, _) => "vault front (token, sign)",
            (Auth::Cert, "issue") => "vault front (cert, issue)",
            (Auth::Cert, _) => "vault front (cert, sign)",
            (Auth::Aws, "issue") => "vault front (aws, issue)",
            (Auth::Aws, _) => "vault front (aws, sign)",
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

/// The vault backend against OpenBao behind the front (aws auth, which OpenBao lacks).
pub type Vault = VaultFixture<Peer>;

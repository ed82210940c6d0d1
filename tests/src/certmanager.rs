//! The certmanager backend against the Kubernetes API test server
//! ([`meshca_peers::KubeApiServer`]): CertificateRequests validated against cert-manager's CRD
//! schema, signed by the server's cert-manager stand-in (CA issuer + default approver).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_certmanager::{CertmanagerCa, Timing, DEFAULT_NAMESPACE};
use ca_core::config::Mesh;
use ca_core::{BuildSpec, CertificateAuthority, Error, MeshName, OverlaySecretStore, SourcePolicy};
use meshca_peers::KubeApiServer;

use crate::vault::indent;
use crate::Fixture;

/// The Issuer every peer has in [`DEFAULT_NAMESPACE`].
pub const ISSUER: &str = "mesh-ca";

/// A Kubernetes API test server with an Issuer [`ISSUER`] in the system namespace.
#[derive(Debug)]
pub struct Peer {
    /// The server.
    pub server: KubeApiServer,
}

impl Peer {
    /// Starts a server (its own test CA) with the Issuer.
    pub async fn start() -> Arc<Peer> {
        let server = KubeApiServer::start().await;
        server.add_issuer(DEFAULT_NAMESPACE, ISSUER);
        Arc::new(Peer { server })
    }

    /// A `kube` client of the server (plain HTTP on 127.0.0.1).
    pub fn client(&self) -> kube::Client {
        client_of(&self.server.url())
    }

    /// Mesh YAML with one certmanager backend `cm-1` (`requestTimeout` as given); `ca_pem`
    /// becomes `caCert`; `extra` goes into `conf` (6 spaces).
    pub fn mesh_yaml(
        mesh: &str,
        request_timeout: &str,
        ca_pem: Option<&str>,
        extra: &str,
    ) -> String {
        let ca = ca_pem
            .map(|p| format!("      caCert:\n        inlineString: |\n{}", indent(p, 10)))
            .unwrap_or_default();
        format!(
            "type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: cm-1\n  backends:\n  - name: cm-1\n    type: certmanager\n    dpCert:\n      rotation:\n        expiration: 24h\n      requestTimeout: {request_timeout}\n    conf:\n      issuerRef:\n        name: {ISSUER}\n{ca}{extra}"
        )
    }

    /// Builds the backend from `yaml` as the registry does, with this server's client.
    pub async fn build(&self, yaml: &str, lifetime: Duration) -> Result<CertmanagerCa, Error> {
        build_with(yaml, lifetime, self.client()).await
    }
}

/// A `kube` client of `url`.
pub fn client_of(url: &str) -> kube::Client {
    // As a kubeconfig whose context names Kuma's system namespace.
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = DEFAULT_NAMESPACE.to_owned();
    kube::Client::try_from(config).unwrap()
}

/// Builds the backend of `yaml`'s enabled backend with `client`.
pub async fn build_with(
    yaml: &str,
    lifetime: Duration,
    client: kube::Client,
) -> Result<CertmanagerCa, Error> {
    let mesh = Mesh::from_yaml(yaml, &crate::all_backends())?;
    let backend = mesh.enabled_backend().expect("enabled backend");
    let conf: &backend_certmanager::CertmanagerConf = backend.conf_as()?;
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
    let ca = CertmanagerCa::load_at(&spec, conf).await?;
    Ok(ca.with_client(client))
}

/// The certmanager backend in the conformance suite: one API server (so one CA) per mesh,
/// `caCert` set to its CA.
#[derive(Debug, Default)]
pub struct Certmanager {
    peers: tokio::sync::Mutex<HashMap<String, Arc<Peer>>>,
}

impl Certmanager {
    /// A fixture that starts servers on first use.
    pub fn new() -> Self {
        Self::default()
    }

    async fn peer(&self, mesh: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock().await;
        if let Some(p) = peers.get(mesh) {
            return p.clone();
        }
        let p = Peer::start().await;
        peers.insert(mesh.to_owned(), p.clone());
        p
    }
}

#[async_trait]
impl Fixture for Certmanager {
    fn name(&self) -> &'static str {
        "certmanager (Kubernetes API test server)"
    }

    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let peer = self.peer(mesh.as_str()).await;
        let yaml = Peer::mesh_yaml(mesh.as_str(), "10s", Some(&peer.server.ca_pem()), "");
        Arc::new(peer.build(&yaml, lifetime).await.unwrap())
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        // An Issuer that does not exist: health() says so.
        let peer = self.peer(mesh.as_str()).await;
        let yaml = Peer::mesh_yaml(mesh.as_str(), "10s", Some(&peer.server.ca_pem()), "")
            .replace(&format!("name: {ISSUER}"), "name: no-such-issuer");
        let ca = peer
            .build(&yaml, Duration::from_secs(3600))
            .await
            .map(|c| Arc::new(c) as Arc<dyn CertificateAuthority>);
        (ca, "there is no cert-manager Issuer no-such-issuer")
    }

    fn honours_validity(&self) -> bool {
        // cert-manager signs from the moment of signing (no backdating) for spec.duration;
        // tests/certmanager.rs checks the duration itself.
        false
    }

    fn csr_names_pass_through(&self) -> bool {
        true
    }
}

/// Writes a kubeconfig for the API server at `url` (namespace `kuma-system`, a bearer token the
/// test server ignores) to `dir/kubeconfig`, for processes that find Kubernetes on their own.
pub fn write_kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {DEFAULT_NAMESPACE}\n\
         current-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

//! [`CertmanagerFactory`]: certmanager backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::{backend_path, Backend, BackendConfig, Fields, Timing};
use ca_core::{BackendFactory, BuildContext, BuildFuture, Built, MeshName, Violations};

use crate::conf::CertmanagerConf;
use crate::{CertmanagerCa, DEFAULT_NAMESPACE};

/// Builds `type: certmanager` backends.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CertmanagerFactory {
    client: Option<kube::Client>,
    namespace: Option<String>,
}

impl std::fmt::Debug for CertmanagerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertmanagerFactory")
            .field("client", &self.client.is_some())
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl CertmanagerFactory {
    /// Backends that make their Kubernetes client (in-cluster, else kubeconfig) on first use
    /// and create requests in [`DEFAULT_NAMESPACE`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Backends share `client` instead of making their own.
    #[must_use]
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Backends create their CertificateRequests in `namespace`.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The namespace requests are created in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

impl BackendFactory for CertmanagerFactory {
    fn backend_type(&self) -> &str {
        "certmanager"
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        CertmanagerConf::decode(conf, v).map(|c| c as Arc<dyn BackendConfig>)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let conf: &CertmanagerConf = backend.conf_as()?;
            let mut ca = CertmanagerCa::load_at(
                &format!("{}.conf", backend_path(index)),
                mesh,
                backend.name.clone(),
                conf,
                Timing::of(backend),
                ctx.store.as_ref(),
                &ctx.sources,
            )
            .await?
            .with_namespace(self.namespace());
            if let Some(client) = &self.client {
                ca = ca.with_client(client.clone());
            }
            Ok(Built::new(Arc::new(ca), Vec::new()))
        })
    }
}

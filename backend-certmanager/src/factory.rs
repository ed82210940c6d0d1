//! [`CertmanagerFactory`]: certmanager backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::Fields;
use ca_core::{BuildSpec, Built, Error, TypedFactory, Violations};

use crate::conf::CertmanagerConf;
use crate::CertmanagerCa;

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
    /// and create requests in the process's namespace, else the client's default one
    /// ([`crate::DEFAULT_NAMESPACE`] says how).
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

    /// The namespace requests are created in, when one is named.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

impl TypedFactory for CertmanagerFactory {
    const TYPE: &'static str = "certmanager";
    type Conf = CertmanagerConf;

    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<CertmanagerConf>> {
        CertmanagerConf::decode(conf, v)
    }

    async fn build_backend(
        &self,
        spec: BuildSpec<'_>,
        conf: &CertmanagerConf,
    ) -> Result<Built, Error> {
        let mut ca = CertmanagerCa::load_at(&spec, conf).await?;
        if let Some(namespace) = &self.namespace {
            ca = ca.with_namespace(namespace.clone());
        }
        if let Some(client) = &self.client {
            ca = ca.with_client(client.clone());
        }
        Ok(Built::of(ca))
    }
}

//! [`ProvidedFactory`]: provided backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::{backend_path, Backend, BackendConfig, Fields};
use ca_core::{BackendFactory, BuildContext, BuildFuture, Built, MeshName, Violations};

use crate::conf::ProvidedConf;
use crate::ProvidedCa;

/// Builds `type: provided` backends: the operator's CA, read and validated once when built.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct ProvidedFactory;

impl ProvidedFactory {
    /// The factory.
    pub fn new() -> Self {
        Self
    }
}

impl BackendFactory for ProvidedFactory {
    fn backend_type(&self) -> &str {
        "provided"
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        ProvidedConf::decode(conf, v).map(|c| c as Arc<dyn BackendConfig>)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let conf: &ProvidedConf = backend.conf_as()?;
            let ca = ProvidedCa::load_at(
                &format!("{}.conf", backend_path(index)),
                mesh,
                backend.name.clone(),
                conf,
                backend.dp_cert_expiration,
                ctx.store.as_ref(),
                &ctx.sources,
            )
            .await?;
            let warnings = ca.warnings().to_vec();
            Ok(Built::new(Arc::new(ca), warnings))
        })
    }
}

//! [`BuiltinFactory`]: builtin backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::{Backend, BackendConfig, Fields};
use ca_core::{BackendFactory, BuildContext, BuildFuture, Built, MeshName, Violations};

use crate::conf::BuiltinConf;
use crate::BuiltinCa;

/// Builds `type: builtin` backends: a CA per mesh and backend, persisted in the context's store.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct BuiltinFactory;

impl BuiltinFactory {
    /// The factory.
    pub fn new() -> Self {
        Self
    }
}

impl BackendFactory for BuiltinFactory {
    fn backend_type(&self) -> &str {
        "builtin"
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        BuiltinConf::decode(conf, v).map(|c| c as Arc<dyn BackendConfig>)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        _index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let conf: &BuiltinConf = backend.conf_as()?;
            let ca = BuiltinCa::new(
                mesh.clone(),
                backend.name.clone(),
                conf.clone(),
                ctx.store.clone(),
            );
            Ok(Built::new(Arc::new(ca), Vec::new()))
        })
    }
}

//! [`BuiltinFactory`]: builtin backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::Fields;
use ca_core::{BuildSpec, Built, Error, TypedFactory, Violations};

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

impl TypedFactory for BuiltinFactory {
    const TYPE: &'static str = "builtin";
    type Conf = BuiltinConf;

    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<BuiltinConf>> {
        BuiltinConf::decode(conf, v)
    }

    async fn build_backend(&self, spec: BuildSpec<'_>, conf: &BuiltinConf) -> Result<Built, Error> {
        Ok(Built::of(BuiltinCa::new(
            spec.mesh().clone(),
            spec.name().clone(),
            conf.clone(),
            spec.shared_store(),
        )))
    }
}

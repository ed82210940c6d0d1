//! [`ProvidedFactory`]: provided backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::Fields;
use ca_core::{BuildSpec, Built, Error, TypedFactory, Violations};

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

impl TypedFactory for ProvidedFactory {
    const TYPE: &'static str = "provided";
    type Conf = ProvidedConf;

    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<ProvidedConf>> {
        ProvidedConf::decode(conf, v)
    }

    async fn build_backend(
        &self,
        spec: BuildSpec<'_>,
        conf: &ProvidedConf,
    ) -> Result<Built, Error> {
        let ca = ProvidedCa::load_at(&spec, conf).await?;
        let warnings = ca.warnings().to_vec();
        Ok(Built::new(Arc::new(ca), warnings))
    }
}

//! [`VaultFactory`]: vault backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::{backend_path, Backend, BackendConfig, Fields, Timing};
use ca_core::{BackendFactory, BuildContext, BuildFuture, Built, MeshName, Violations};

use crate::conf::VaultConf;
use crate::VaultCa;

/// Builds `type: vault` backends.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VaultFactory {
    aws_sdk: Option<aws_config::SdkConfig>,
}

impl VaultFactory {
    /// Backends that load the default AWS credential chain on first use of `auth.aws`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Backends with `auth.aws` sign their login with the credentials, region and endpoint of
    /// `sdk` (see [`VaultCa::with_aws_sdk_config`]).
    #[must_use]
    pub fn with_aws_sdk_config(mut self, sdk: aws_config::SdkConfig) -> Self {
        self.aws_sdk = Some(sdk);
        self
    }
}

impl BackendFactory for VaultFactory {
    fn backend_type(&self) -> &str {
        "vault"
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        VaultConf::decode(conf, v).map(|c| c as Arc<dyn BackendConfig>)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let conf: &VaultConf = backend.conf_as()?;
            let mut ca = VaultCa::load_at(
                &format!("{}.conf", backend_path(index)),
                mesh,
                backend.name.clone(),
                conf,
                Timing::of(backend),
                ctx.store.as_ref(),
                &ctx.sources,
            )
            .await?;
            if let Some(sdk) = &self.aws_sdk {
                ca = ca.with_aws_sdk_config(sdk.clone());
            }
            let warnings = ca.warnings().to_vec();
            Ok(Built::new(Arc::new(ca), warnings))
        })
    }
}

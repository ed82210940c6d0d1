//! [`VaultFactory`]: vault backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use ca_core::config::Fields;
use ca_core::{BuildSpec, Built, Error, TypedFactory, Violations};

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

impl TypedFactory for VaultFactory {
    const TYPE: &'static str = "vault";
    type Conf = VaultConf;

    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<VaultConf>> {
        VaultConf::decode(conf, v)
    }

    async fn build_backend(&self, spec: BuildSpec<'_>, conf: &VaultConf) -> Result<Built, Error> {
        let mut ca = VaultCa::load_at(&spec, conf).await?;
        if let Some(sdk) = &self.aws_sdk {
            ca = ca.with_aws_sdk_config(sdk.clone());
        }
        let warnings = ca.warnings().to_vec();
        Ok(Built::new(Arc::new(ca), warnings))
    }
}

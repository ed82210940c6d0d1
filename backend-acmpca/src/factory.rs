//! [`AcmpcaFactory`]: acmpca backends for a [`Registry`](ca_core::Registry).

use std::sync::Arc;

use aws_config::SdkConfig;
use ca_core::config::Fields;
use ca_core::{BuildSpec, Built, Error, TypedFactory, Violations};

use crate::conf::AcmpcaConf;
use crate::limit::RateLimit;
use crate::AcmpcaCa;

/// Builds `type: acmpca` backends.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcmpcaFactory {
    aws_sdk: Option<SdkConfig>,
    rate_limit: Option<RateLimit>,
}

impl AcmpcaFactory {
    /// Backends that use the default AWS credential chain (unless their `conf` names
    /// credentials) and ACM PCA's default rate limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Backends use `sdk` (credentials, region, endpoint) where they would load the default
    /// chain; see [`AcmpcaCa::with_aws_sdk_config`].
    #[must_use]
    pub fn with_aws_sdk_config(mut self, sdk: SdkConfig) -> Self {
        self.aws_sdk = Some(sdk);
        self
    }

    /// Backends issue at most at `limit`; see [`AcmpcaCa::with_rate_limit`].
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
}

impl TypedFactory for AcmpcaFactory {
    const TYPE: &'static str = "acmpca";
    type Conf = AcmpcaConf;

    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<AcmpcaConf>> {
        AcmpcaConf::decode(conf, v)
    }

    async fn build_backend(&self, spec: BuildSpec<'_>, conf: &AcmpcaConf) -> Result<Built, Error> {
        let mut ca = AcmpcaCa::load_at(&spec, conf).await?;
        if let Some(sdk) = &self.aws_sdk {
            ca = ca.with_aws_sdk_config(sdk.clone());
        }
        if let Some(limit) = self.rate_limit {
            ca = ca.with_rate_limit(limit);
        }
        Ok(Built::of(ca))
    }
}

//! [`BackendConfig`]: what the rest of meshca may ask of a backend's decoded `conf`, whatever
//! crate owns its type.

use std::any::Any;
use std::fmt;

use crate::datasource::DataSource;
use crate::error::Violations;
use crate::template::CommonNameTemplate;
use crate::upstream::Upstream;

/// A backend's `conf`, decoded by its [`BackendFactory`](crate::registry::BackendFactory).
///
/// Each backend crate owns its config type and implements this trait for it; the methods tell
/// the control plane what the config reaches (data sources, upstreams) so that a Mesh from the
/// network can be checked before anything is read or contacted. Every method has a default that
/// fits a backend whose CA is local and which reads nothing (the builtin CA).
///
/// Implementations must not print key material in `Debug`.
pub trait BackendConfig: fmt::Debug + Send + Sync + Any {
    /// Every data source of the `conf`, with its field path under `conf`
    /// (`fromCp.auth.token`, `auth.awsCredentials.accessKey`, ...).
    fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        Vec::new()
    }

    /// The upstreams the backend contacts (none for a CA whose key meshca holds).
    fn upstreams(&self) -> Vec<Upstream> {
        Vec::new()
    }

    /// `commonName`, for backends that have one.
    fn common_name(&self) -> Option<&CommonNameTemplate> {
        None
    }

    /// DNS names every certificate carries besides the identity's (certmanager's `dnsNames`).
    fn dns_names(&self) -> &[String] {
        &[]
    }

    /// What a Mesh that arrived over the network may not ask of this backend, whatever the
    /// upstream (a Vault over `http://`, say), reported at `{at}.conf.<field>`; `at` is the
    /// backend's path, `mtls.backends[i]`.
    fn remote_violations(&self, at: &str, v: &mut Violations) {
        let _ = (at, v);
    }

    /// What is accepted from a Mesh sent over the network but not honoured for it, as warnings
    /// naming `{at}.conf.<field>` (certmanager's `autoApprove`).
    fn remote_warnings(&self, at: &str) -> Vec<String> {
        let _ = at;
        Vec::new()
    }
}

impl dyn BackendConfig {
    /// The config as its concrete type: what a factory does with the `conf` it decoded.
    pub fn downcast_ref<T: BackendConfig>(&self) -> Option<&T> {
        let any: &dyn Any = self;
        any.downcast_ref()
    }
}

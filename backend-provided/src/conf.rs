//! `conf` of a provided backend, and its decoder.

use std::sync::Arc;

use ca_core::config::{BackendConfig, Fields};
use ca_core::{DataSource, Violations};

/// `conf` of a provided backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProvidedConf {
    /// `cert`: the CA certificate, optionally followed by its parents.
    pub cert: DataSource,
    /// `key`: the CA's private key.
    pub key: DataSource,
}

impl ProvidedConf {
    /// A config reading the CA certificate (chain) from `cert` and its key from `key`.
    pub fn new(cert: DataSource, key: DataSource) -> Self {
        Self { cert, key }
    }

    /// Decodes `conf` (`cert`, `key`: both data sources, both required), reporting into `v`.
    pub fn decode(mut f: Fields<'_>, v: &mut Violations) -> Option<Arc<Self>> {
        let cert = f.required_data_source("cert", v);
        let key = f.required_data_source("key", v);
        f.finish(v);
        Some(Arc::new(Self {
            cert: cert?,
            key: key?,
        }))
    }
}

impl BackendConfig for ProvidedConf {
    fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        vec![("cert", &self.cert), ("key", &self.key)]
    }
}

//! `conf` of a builtin backend, and its decoder.

use std::sync::Arc;
use std::time::Duration;

use ca_core::config::{BackendConfig, Fields, DEFAULT_CA_EXPIRATION};
use ca_core::{KeyType, Violations};

/// `conf` of a builtin backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltinConf {
    /// The CA key: `caCert.keyType` (ECDSA P-256 by default) or RSA with `caCert.RSAbits`.
    pub ca_key: KeyType,
    /// `caCert.expiration` (default 10y).
    pub ca_expiration: Duration,
}

impl Default for BuiltinConf {
    fn default() -> Self {
        Self {
            ca_key: KeyType::EcdsaP256,
            ca_expiration: DEFAULT_CA_EXPIRATION,
        }
    }
}

/// The CA key meshca holds and reads nothing: every default of [`BackendConfig`] fits.
impl BackendConfig for BuiltinConf {}

impl BuiltinConf {
    /// The same config with a CA key of type `key`.
    #[must_use]
    pub fn with_ca_key(mut self, key: KeyType) -> Self {
        self.ca_key = key;
        self
    }

    /// The same config with CA certificates valid for `expiration`.
    #[must_use]
    pub fn with_ca_expiration(mut self, expiration: Duration) -> Self {
        self.ca_expiration = expiration;
        self
    }

    /// Decodes `conf` (`caCert.keyType`, `caCert.RSAbits`, `caCert.expiration`), reporting into
    /// `v`; `None` when it cannot be used.
    pub fn decode(mut f: Fields<'_>, v: &mut Violations) -> Option<Arc<Self>> {
        let mut conf = Self::default();
        let mut ok = true;
        if let Some(mut ca) = f.obj("caCert", v) {
            let bits_at = ca.at("RSAbits");
            let bits = ca.u32("RSAbits", v);
            if let Some(b) = bits {
                if ![2048, 3072, 4096].contains(&b) {
                    v.add(
                        &bits_at,
                        format!("{b} is not supported: use 2048, 3072 or 4096"),
                    );
                    ok = false;
                }
            }
            let kt_at = ca.at("keyType");
            match ca.str("keyType", v).as_deref() {
                None => conf.ca_key = bits.map_or(KeyType::EcdsaP256, KeyType::Rsa),
                Some("ecdsa-p256") => {
                    if bits.is_some() {
                        v.add(&bits_at, "applies only to keyType rsa");
                        ok = false;
                    }
                    conf.ca_key = KeyType::EcdsaP256;
                }
                Some("rsa") => conf.ca_key = KeyType::Rsa(bits.unwrap_or(2048)),
                Some(other) => {
                    v.add(
                        &kt_at,
                        format!("\"{other}\" is not a key type (ecdsa-p256 or rsa)"),
                    );
                    ok = false;
                }
            }
            // Kuma accepts `0s`; the CA it makes is then refused when the backend is checked.
            if let Some(d) = ca.duration("expiration", v) {
                conf.ca_expiration = d.get();
            }
            ca.finish(v);
        }
        f.finish(v);
        ok.then(|| Arc::new(conf))
    }
}

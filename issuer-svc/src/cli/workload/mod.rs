//! `meshca agent --workload-api-socket`: the SPIFFE Workload API on a Unix socket, so that any
//! SPIFFE-aware workload (go-spiffe, py-spiffe, java-spiffe, spiffe-helper) gets its X.509-SVID
//! and bundle from meshca with no meshca-specific code.
//!
//! The agent asks the issuer for an SVID (one URI SAN, `spiffe://<mesh>/<service>`) for its own
//! key and checks it as it checks every answer; [`WorkloadApi::publish`] then hands it to every
//! open `FetchX509SVID` and `FetchX509Bundles` stream ([`server`]). A stream gets a message at
//! once, then one for every new SVID and (bundles) every change of roots, such as both roots
//! during a CA switch. While the issuer is away the last SVID is served until it expires; it is
//! never served expired: a stream whose SVID expires ends with `Unavailable`, and new calls get
//! `Unavailable` until a fresh one arrives (clients retry with backoff, as the SPIFFE Workload
//! Endpoint specification says).

mod authority;
mod proto;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca_core::spiffe::SPIFFE_SCHEME;
use ca_core::{PrivateKey, SecretBytes, SpiffeId};
use tokio::sync::watch;

pub(crate) use server::{serve, WorkloadSocket, WorkloadSocketError};

use super::trust::Verified;

/// What the Workload API serves: the agent's X.509-SVID, its key and the trust bundle.
pub(crate) struct Svid {
    /// `spiffe://<mesh>/<service>`.
    spiffe_id: String,
    /// `spiffe://<mesh>`: the key of the bundle maps.
    trust_domain_id: String,
    /// DER certificates, concatenated: the leaf, then intermediates.
    chain_der: Vec<u8>,
    /// PKCS#8 DER.
    key_der: SecretBytes,
    /// DER roots, concatenated.
    bundle_der: Vec<u8>,
    not_after: SystemTime,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Whether it is still valid at `now`.
    fn valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }
}

/// The SVID the agent holds, shared with the Workload API's streams.
#[derive(Debug)]
pub(crate) struct WorkloadApi {
    current: watch::Sender<Option<Arc<Svid>>>,
}

impl WorkloadApi {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            current: watch::Sender::new(None),
        })
    }

    /// Serves `v` (checked by the agent: for `key`, for exactly our SPIFFE ID, chaining to its
    /// bundle) on every open stream from now on.
    pub(crate) fn publish(&self, v: &Verified, key: &PrivateKey) -> Result<(), String> {
        let chain = ca_core::x509::parse_pem_certs(v.chain_pem.as_bytes())?;
        let id: SpiffeId = v
            .spiffe_id
            .parse()
            .map_err(|e: ca_core::Error| e.to_string())?;
        let trust_domain_id = format!("{SPIFFE_SCHEME}{}", id.trust_domain());
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(v.not_after).unwrap_or_default());
        let svid = Svid {
            spiffe_id: v.spiffe_id.clone(),
            trust_domain_id,
            chain_der: chain
                .iter()
                .flat_map(|c| c.as_ref().iter().copied())
                .collect(),
            key_der: key.to_pkcs8_der(),
            bundle_der: v
                .bundle
                .certs()
                .iter()
                .flat_map(|c| c.as_ref().iter().copied())
                .collect(),
            not_after,
        };
        self.current.send_replace(Some(Arc::new(svid)));
        Ok(())
    }

    fn subscribe(&self) -> watch::Receiver<Option<Arc<Svid>>> {
        self.current.subscribe()
    }
}

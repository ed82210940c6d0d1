//! The Kuma / Kong Mesh `Mesh` resource, as far as mTLS is concerned.
//!
//! Both YAML forms users have are accepted:
//!
//! ```yaml
//! type: Mesh                     # Universal
//! name: default
//! mtls:
//!   enabledBackend: ca-1
//!   backends:
//!     - name: ca-1
//!       type: builtin
//! ```
//!
//! ```yaml
//! apiVersion: kuma.io/v1alpha1   # Kubernetes
//! kind: Mesh
//! metadata:
//!   name: default
//! spec:
//!   mtls: { ... }
//! ```
//!
//! [`Mesh::from_yaml`] decodes and validates in one pass (each backend's `conf` by the
//! [`BackendFactory`](crate::BackendFactory) a [`Registry`](crate::Registry) holds for its type) and returns **all** violations, each as
//! `field path: message` (paths relative to the Mesh spec: `mtls.backends[0].conf...`). Unknown
//! fields inside `mtls` are errors; the other top-level sections of a Mesh (`tracing`, `logging`,
//! `metrics`, `networking`, `routing`, `constraints`, ...) are accepted and ignored, so a user's
//! existing Mesh files load unchanged — except Kuma's cross-section rule that involves mTLS:
//! `routing.zoneEgress: true` needs `mtls.enabledBackend` (`mtls: has to be set when zoneEgress
//! enabled`).
pub(crate) mod conf;
mod decode_mesh;
pub(crate) mod fields;
mod limits;
pub(crate) mod model;

pub use conf::BackendConfig;
pub use fields::Fields;
pub use limits::{check_yaml_limits, MAX_YAML_BYTES, MAX_YAML_NESTING};
pub use model::{
    backend_path, Backend, Fingerprint, Mesh, MeshForm, Mode, Mtls, Timing, DEFAULT_CA_EXPIRATION,
    DEFAULT_DP_CERT_EXPIRATION, DEFAULT_REQUEST_TIMEOUT,
};

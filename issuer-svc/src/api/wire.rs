//! Domain values to the wire: the only place that maps library results to `meshca.v1` messages.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use ca_core::config::Mesh;
use ca_core::{Error, IssuedCertificate};
use meshca::{Rotated, Validation, WatchReceiver};
use tonic::Status;

use crate::api::watches::WatchSlot;

use crate::proto::{
    NotContacted, TestCertificateSummary, ValidateBackendResponse, Violation,
    WatchCertificateResponse,
};

/// The wire form of an issued certificate.
pub(crate) fn certificate(
    cert: &IssuedCertificate,
    trust_bundle_pem: String,
    rotate_at: SystemTime,
    backend: &str,
) -> crate::proto::IssuedCertificate {
    crate::proto::IssuedCertificate {
        cert_chain_pem: cert.chain_pem(),
        private_key_pem: cert
            .key_pem()
            .and_then(|k| k.expose_str())
            .map(str::to_owned)
            .unwrap_or_default(),
        trust_bundle_pem,
        not_before: unix(cert.not_before()),
        not_after: unix(cert.not_after()),
        rotate_at: unix(rotate_at),
        backend: backend.to_owned(),
        serial: cert.serial_hex().to_owned(),
        uri_sans: cert.identity().uri_sans(),
        shortened: cert.shortened(),
    }
}

fn rotated(r: Rotated) -> WatchCertificateResponse {
    WatchCertificateResponse {
        certificate: Some(certificate(
            &r.certificate,
            r.trust_bundle_pem,
            r.rotate_at,
            &r.backend,
        )),
        reason: r.reason.as_str().into(),
    }
}

/// A `WatchCertificate` stream: the scheduler's domain values, mapped as they are read. It holds
/// its identity's watch slot, and ends with PermissionDenied when `ends` resolves (the lease of
/// the bootstrap token it was opened with ran out). Before each certificate is sent the caller's
/// authorization is asked again (`allowed`): a caller the reloaded `--authz` file no longer
/// allows gets its refusal, and the stream ends.
pub(crate) struct WatchStream {
    rx: WatchReceiver,
    _slot: WatchSlot,
    ends: Option<Pin<Box<dyn Future<Output = &'static str> + Send>>>,
    allowed: Box<dyn Fn() -> Result<(), Status> + Send + Sync>,
    done: bool,
}

impl WatchStream {
    pub(crate) fn new(
        rx: WatchReceiver,
        slot: WatchSlot,
        ends: Option<Pin<Box<dyn Future<Output = &'static str> + Send>>>,
        allowed: impl Fn() -> Result<(), Status> + Send + Sync + 'static,
    ) -> Self {
        Self {
            rx,
            _slot: slot,
            ends,
            allowed: Box::new(allowed),
            done: false,
        }
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("rx", &self.rx)
            .field("token_bound", &self.ends.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl tokio_stream::Stream for WatchStream {
    type Item = Result<WatchCertificateResponse, Status>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return std::task::Poll::Ready(None);
        }
        if let Some(ends) = this.ends.as_mut() {
            if let std::task::Poll::Ready(reason) = ends.as_mut().poll(cx) {
                this.done = true;
                return std::task::Poll::Ready(Some(Err(Status::from(
                    crate::api::status::ApiError::Denied(reason.to_owned()),
                ))));
            }
        }
        let next = std::task::ready!(this.rx.poll_recv(cx));
        if next.is_some() {
            if let Err(refused) = (this.allowed)() {
                this.done = true;
                return std::task::Poll::Ready(Some(Err(refused)));
            }
        }
        std::task::Poll::Ready(next.map(|r| {
            r.map(rotated)
                .map_err(|e| crate::api::status::ApiError::from(e).into())
        }))
    }
}

/// The response for a Mesh with violations (or another error, reported at `mtls`).
pub(crate) fn invalid(e: Error) -> ValidateBackendResponse {
    invalid_at(e, "mtls")
}

/// The response for a Mesh with violations, each at its own path; another error is reported at
/// `other_field`.
fn invalid_at(e: Error, other_field: &str) -> ValidateBackendResponse {
    let violations = match e {
        Error::InvalidConfig(v) => v
            .iter()
            .map(|v| Violation {
                field: v.field.clone(),
                message: v.message.clone(),
            })
            .collect(),
        other => vec![Violation {
            field: other_field.into(),
            message: crate::api::status::message(&other),
        }],
    };
    ValidateBackendResponse {
        ok: false,
        violations,
        test_certificate: None,
        warnings: Vec::new(),
        not_contacted: Vec::new(),
    }
}

/// The response for what [`meshca::Manager::validate`] found for `mesh`. Violations already
/// carry their full field paths (`mtls.backends[0].conf.cert`); another error of a backend is
/// reported at `mtls.backends` as Kuma does; a failed test certificate at the enabled backend
/// (`mtls.backends[i]`).
pub(crate) fn validation(
    mesh: &Mesh,
    result: Result<Validation, Error>,
) -> ValidateBackendResponse {
    let v = match result {
        Ok(v) => v,
        // An error that is not a config problem (the store failing, ...) goes where Kuma's mesh
        // validator puts a CA manager's: `mtls.backends`.
        Err(e) => return invalid_at(e, "mtls.backends"),
    };
    let not_contacted: Vec<NotContacted> = v
        .not_contacted
        .iter()
        .map(|n| NotContacted {
            field: ca_core::config::backend_path(n.index),
            backend: n.backend.to_string(),
            reason: n.reason.clone(),
        })
        .collect();
    let mut v = v;
    for n in &not_contacted {
        v.warnings.push(format!("{}: {}", n.field, n.reason));
    }
    let Some((index, _)) = v.backend else {
        let mut warnings = v.warnings;
        warnings.push(format!(
            "mesh `{}` has no enabled backend: mTLS is off",
            mesh.name
        ));
        return ValidateBackendResponse {
            ok: true,
            violations: Vec::new(),
            test_certificate: None,
            warnings,
            not_contacted,
        };
    };
    let mut resp = ValidateBackendResponse {
        ok: true,
        violations: Vec::new(),
        test_certificate: None,
        warnings: v.warnings,
        not_contacted,
    };
    match v.test_certificate {
        None => {}
        Some(Ok(t)) => {
            let c = &t.certificate;
            let (subject, issuer) = c
                .chain()
                .first()
                .and_then(|d| x509_parser::parse_x509_certificate(d).ok())
                .map(|(_, x)| (x.subject().to_string(), x.issuer().to_string()))
                .unwrap_or_default();
            let backend = mesh.enabled_backend();
            resp.test_certificate = Some(TestCertificateSummary {
                mesh: mesh.name.to_string(),
                backend: backend.map(|b| b.name.to_string()).unwrap_or_default(),
                backend_type: backend
                    .map(|b| b.backend_type().to_string())
                    .unwrap_or_default(),
                uri_sans: c.identity().uri_sans(),
                subject,
                issuer,
                serial: c.serial_hex().to_owned(),
                not_before: unix(c.not_before()),
                not_after: unix(c.not_after()),
            });
        }
        Some(Err(e)) => {
            return ValidateBackendResponse {
                ok: false,
                violations: vec![Violation {
                    field: ca_core::config::backend_path(index),
                    message: format!(
                        "test certificate failed: {}",
                        crate::api::status::message(&e)
                    ),
                }],
                test_certificate: None,
                warnings: resp.warnings,
                not_contacted: resp.not_contacted,
            };
        }
    }
    resp
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

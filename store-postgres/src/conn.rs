//! `--postgres-url`: what to connect to, how TLS is checked, and the pool.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;

/// Why a PostgreSQL URL cannot be used. Never holds the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("is not a URL ({0})")]
    Syntax(#[source] url::ParseError),
    /// Another scheme than `postgres` / `postgresql`.
    #[error("has scheme `{0}`: use postgres://USER:PASSWORD@HOST:PORT/DATABASE")]
    Scheme(String),
    /// A part the URL must have.
    #[error("has no {0}")]
    Missing(&'static str),
    /// A query parameter meshca does not know.
    #[error(
        "has parameter `{0}`, which meshca does not know (sslmode, sslrootcert, connect_timeout)"
    )]
    Parameter(String),
    /// A bad `sslmode`.
    #[error("has sslmode `{0}`: one of disable, require, verify-full")]
    SslMode(String),
    /// TLS without a CA to check the server against.
    #[error("has sslmode {0} but no sslrootcert: meshca checks the server's certificate against that CA file")]
    NoRootCert(&'static str),
    /// The CA file.
    #[error("names sslrootcert {path}, which cannot be used: {reason}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bad `connect_timeout`.
    #[error("has connect_timeout `{0}`: whole seconds, 1 to 60")]
    ConnectTimeout(String),
}

/// How the server's TLS certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// No TLS (`sslmode=disable`): for a database on loopback or a private link.
    Disable,
    /// TLS, the chain checked against `sslrootcert`, not the host name (libpq's `verify-ca`;
    /// meshca never sends credentials over TLS it did not verify).
    Require,
    /// TLS, the chain and the host name checked (`verify-full`).
    VerifyFull,
}

/// A parsed `postgres://` URL. `Debug` and `Display` leave the password out.
#[derive(Clone)]
pub struct PostgresUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    root_cert: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    shown: String,
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresUrl")
            .field("url", &self.shown)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PostgresUrl {
    /// Parses `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...&sslrootcert=FILE`
    /// (`connect_timeout=SECONDS`, default 5). `sslrootcert` is read here.
    ///
    /// # Errors
    /// [`UrlError`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = url::Url::parse(text.trim()).map_err(UrlError::Syntax)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        let host = url.host_str().ok_or(UrlError::Missing("host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let user = url.username();
        if user.is_empty() {
            return Err(UrlError::Missing("user"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = decode(user);
        let dbname = url.path().trim_start_matches('/');
        let dbname = if dbname.is_empty() {
            user.clone()
        } else {
            decode(dbname)
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(url.port().unwrap_or(5432))
            .user(&user)
            .dbname(&dbname)
            .application_name("meshca")
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = url.password() {
            config.password(decode(p));
        }
        let mut tls = Tls::Require;
        let mut root: Option<PathBuf> = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" => {
                    tls = match &*v {
                        "disable" => Tls::Disable,
                        "require" | "verify-ca" => Tls::Require,
                        "verify-full" => Tls::VerifyFull,
                        other => return Err(UrlError::SslMode(other.to_owned())),
                    }
                }
                "sslrootcert" => root = Some(PathBuf::from(&*v)),
                "connect_timeout" => {
                    let secs = v
                        .parse::<u64>()
                        .ok()
                        .filter(|s| (1..=60).contains(s))
                        .ok_or_else(|| UrlError::ConnectTimeout(v.to_string()))?;
                    config.connect_timeout(Duration::from_secs(secs));
                }
                other => return Err(UrlError::Parameter(other.to_owned())),
            }
        }
        let root_cert = match (tls, root) {
            (Tls::Disable, _) => None,
            (mode, None) => {
                return Err(UrlError::NoRootCert(if mode == Tls::Require {
                    "require"
                } else {
                    "verify-full"
                }))
            }
            (_, Some(path)) => Some(read_roots(&path)?),
        };
        config.ssl_mode(if tls == Tls::Disable {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        let port = url.port().unwrap_or(5432);
        let shown = format!("postgres://{user}@{host}:{port}/{dbname} ({tls:?})");
        Ok(Self {
            config,
            tls,
            root_cert,
            shown,
        })
    }

    /// How TLS is checked.
    pub fn tls(&self) -> Tls {
        self.tls
    }

    /// A pool of at most `size` connections; each statement bounded by `statement_timeout`.
    pub(crate) fn pool(&self, size: usize, statement_timeout: Duration) -> Result<Pool, String> {
        let mut config = self.config.clone();
        config.options(format!(
            "-c statement_timeout={} -c lock_timeout={}",
            statement_timeout.as_millis(),
            statement_timeout.as_millis()
        ));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match (&self.root_cert, self.tls) {
            (Some(roots), mode) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(
                    roots,
                    mode == Tls::VerifyFull,
                )?);
                Manager::from_config(config, tls, manager_config)
            }
            (None, _) => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(statement_timeout))
            .create_timeout(Some(statement_timeout))
            .recycle_timeout(Some(statement_timeout))
            .build()
            .map_err(|e| format!("the connection pool: {e}"))
    }
}

impl PostgresUrl {
    /// One connection of its own (not pooled) that LISTENs on `channel`: the payloads of its
    /// notifications arrive on the receiver (at most `buffered` waiting; more are dropped, a
    /// reader that relists on any notification loses nothing). The receiver ends when the
    /// connection does. The client must be kept: dropping it closes the connection.
    pub(crate) async fn listen(
        &self,
        channel: &str,
        buffered: usize,
        timeout: Duration,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<String>), String> {
        let (tx, rx) = tokio::sync::mpsc::channel(buffered.max(1));
        let connect = async {
            match &self.root_cert {
                Some(roots) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(
                        roots,
                        self.tls == Tls::VerifyFull,
                    )?);
                    let (client, conn) =
                        self.config.connect(tls).await.map_err(|e| e.to_string())?;
                    tokio::spawn(forward_notifications(conn, channel.to_owned(), tx));
                    Ok::<_, String>(client)
                }
                None => {
                    let (client, conn) = self
                        .config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(forward_notifications(conn, channel.to_owned(), tx));
                    Ok(client)
                }
            }
        };
        let client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| format!("no connection within {timeout:?}"))??;
        // A channel name is an identifier: quoted, so only this one is listened to.
        let listen = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
        tokio::time::timeout(timeout, client.batch_execute(&listen))
            .await
            .map_err(|_| format!("LISTEN took longer than {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        Ok((client, rx))
    }
}

/// Drives `conn`, sending the payloads of notifications on `channel` to `tx`, until the
/// connection ends (or the receiver is gone).
async fn forward_notifications<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    channel: String,
    tx: tokio::sync::mpsc::Sender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let message = std::future::poll_fn(|cx| conn.poll_message(cx)).await;
        match message {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) if n.channel() == channel => {
                match tx.try_send(n.payload().to_owned()) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the LISTEN connection ended");
                return;
            }
            None => return,
        }
    }
}

fn read_roots(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, UrlError> {
    let bad = |reason: String| UrlError::RootCert {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > ca_core::SourcePolicy::MAX_BYTES as u64 {
        return Err(bad("larger than 1 MiB".into()));
    }
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs: Vec<_> = pem::parse_many(&text)
        .map_err(|e| bad(format!("not PEM ({e})")))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| rustls_pki_types::CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(bad("holds no CERTIFICATE".into()));
    }
    Ok(certs)
}

/// rustls on aws-lc-rs trusting only `roots`; without `check_name` the host name is not
/// compared (the chain still is).
fn client_config(
    roots: &[rustls_pki_types::CertificateDer<'static>],
    check_name: bool,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        // A root rustls cannot use is left out; an empty store refuses every server.
        let _ = store.add(r.clone());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    if check_name {
        return Ok(builder.with_root_certificates(store).with_no_client_auth());
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| format!("sslrootcert holds no usable CA ({e})"))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
        .with_no_client_auth())
}

/// libpq's `verify-ca`: the chain must verify to the roots; a name mismatch is forgiven.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_never_show_the_password() {
        let u = PostgresUrl::parse("postgres://kuma:s%40cret@127.0.0.1:6543/kuma?sslmode=disable")
            .unwrap();
        assert_eq!(u.tls(), Tls::Disable);
        assert_eq!(
            u.to_string(),
            "postgres://kuma@127.0.0.1:6543/kuma (Disable)"
        );
        assert!(!format!("{u:?}").contains("cret"));
        assert_eq!(
            u.config.get_password(),
            Some(&b"s@cret"[..]),
            "percent-decoded"
        );
        for (bad, says) in [
            ("mysql://a@b/c", "scheme `mysql`"),
            ("postgres://b/c", "no user"),
            ("postgres://a:pw@b/c?sslmode=prefer", "sslmode `prefer`"),
            ("postgres://a:pw@b/c", "no sslrootcert"),
            (
                "postgres://a:pw@b/c?sslmode=disable&host=x",
                "parameter `host`",
            ),
            (
                "postgres://a:pw@b/c?sslmode=verify-full&sslrootcert=/nonexistent",
                "/nonexistent",
            ),
            (
                "postgres://a:pw@b/c?sslmode=disable&connect_timeout=0",
                "connect_timeout",
            ),
        ] {
            let e = PostgresUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}

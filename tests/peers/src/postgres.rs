//! A real PostgreSQL server: Debian's `postgresql` package (`/usr/lib/postgresql/<major>/bin`,
//! the newest major; `$MESHCA_PG_BIN` names another directory), which scripts/test installs.
//! Each [`Postgres`] has its own cluster in a temporary directory (`initdb` with a random
//! scram-sha-256 password for the superuser `meshca`), listens on a free port of 127.0.0.1 and
//! on a unix socket in that directory (never `/var/run/postgresql`), and optionally speaks TLS
//! only, with a certificate of its own CA.
//!
//! PostgreSQL refuses to run as root: when the tests are root, `initdb`, `postgres` and `pg_ctl`
//! run as the user `nobody` (`setpriv`, from util-linux), who owns the directory.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{SimpleQueryMessage, Socket};

/// The superuser `initdb` makes, and the database [`Postgres::start`] creates.
pub const USER: &str = "meshca";

/// How long the server may take to answer a login after it is started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a stop may take before the postmaster is killed.
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// How a [`Postgres`] is set up.
#[derive(Clone, Debug, Default)]
pub struct PostgresOptions {
    /// TLS only: `ssl=on` with a server certificate (127.0.0.1 and `localhost`) of a CA of its
    /// own ([`Postgres::ca_pem`]), and `pg_hba.conf` allowing `hostssl` logins only.
    pub tls: bool,
}

/// A running PostgreSQL server on 127.0.0.1, with its own cluster; killed (with its backends)
/// on drop.
pub struct Postgres {
    postmaster: Option<Child>,
    /// Owns the directory: the cluster (`data/`), the socket, the log, TLS files.
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    tls: Option<Tls>,
    /// Where the log of the last postmaster started begins.
    log_from: usize,
}

/// The server's TLS: its CA, and a client config trusting it.
struct Tls {
    ca_pem: String,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("tls", &self.tls.is_some())
            .field("running", &self.postmaster.is_some())
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === impl Postgres ===

impl Postgres {
    /// Makes a cluster (`initdb`), starts `postgres` on a free port of 127.0.0.1, waits until
    /// `meshca` can log in (30 s at most), and creates the database `meshca`. Panics, with the
    /// server's log, when it does not come up; or, saying how to get it, when PostgreSQL is not
    /// installed.
    pub async fn start(opts: PostgresOptions) -> Postgres {
        let bin = bin_dir();
        let run_as = if is_root() { Some(nobody()) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("meshca-pg-")
            .tempdir_in(temp_parent(run_as.is_some()))
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = opts.tls.then(|| write_tls(dir.path()));
        if let Some((uid, gid)) = run_as {
            for p in [dir.path(), &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
            if opts.tls {
                for f in ["server.crt", "server.key"] {
                    std::os::unix::fs::chown(dir.path().join(f), Some(uid), Some(gid)).unwrap();
                }
            }
        }

        let mut pg = Postgres {
            postmaster: None,
            bin,
            run_as,
            port: 0,
            password,
            tls,
            log_from: 0,
            dir,
        };
        pg.initdb(&pwfile).await;
        std::fs::remove_file(&pwfile).unwrap();
        pg.write_hba();

        let mut last = String::new();
        // A free port may be taken before postgres binds it: retry on another.
        for _ in 0..3 {
            pg.port = free_port();
            pg.spawn();
            match pg.wait_ready().await {
                Ok(()) => {
                    pg.create_database().await;
                    return pg;
                }
                Err(e) if e.contains("could not bind") || e.contains("could not create listen") => {
                    pg.shutdown();
                    last = e;
                }
                Err(e) => {
                    pg.shutdown();
                    panic!("PostgreSQL did not start: {e}");
                }
            }
        }
        panic!("PostgreSQL did not start 3 times: {last}");
    }

    /// `postgres://meshca:<password>@127.0.0.1:<port>/meshca`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{USER}",
            self.password, self.port
        )
    }

    /// The password of `meshca`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The TCP port on 127.0.0.1 (the same across [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA (PEM) of the server's certificate, when started with
    /// [`tls`](PostgresOptions::tls).
    pub fn ca_pem(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// The server's log so far (stdout and stderr of every postmaster started here).
    pub fn log(&self) -> String {
        let log = std::fs::read(self.dir.path().join("postgres.log")).unwrap_or_default();
        String::from_utf8_lossy(&log).into_owned()
    }

    /// Stops the server as `pg_ctl stop -m fast` does (sessions are ended, a shutdown
    /// checkpoint is written) and waits until it is gone. Panics when it is not running.
    pub async fn stop(&mut self) {
        assert!(self.postmaster.is_some(), "PostgreSQL is not running");
        let mut pg_ctl = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30", "-D"]);
        pg_ctl.arg(self.data_dir());
        let out = tokio::process::Command::from(pg_ctl)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.reap(STOP_WITHIN).await;
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and returns once it is dead (its
    /// backends notice and exit by themselves; the next start recovers from the WAL). Panics
    /// when it is not running.
    pub async fn kill(&mut self) {
        let child = self.postmaster.as_mut().expect("PostgreSQL is not running");
        let _ = child.kill();
        self.reap(STOP_WITHIN).await;
    }

    /// Starts the server again after [`stop`](Self::stop) or [`kill`](Self::kill): the same
    /// cluster, the same port, waiting until `meshca` can log in (30 s at most). Panics, with
    /// the log, when it does not come up, or when it is running.
    pub async fn start_again(&mut self) {
        assert!(self.postmaster.is_none(), "PostgreSQL is running");
        let end = Instant::now() + READY_WITHIN;
        loop {
            self.spawn();
            match self.wait_ready().await {
                Ok(()) => return,
                // After a kill, backends may not have noticed yet that their postmaster died:
                // the new one refuses to start while they hold the old shared memory; and the
                // port is free only once the old listener is closed.
                Err(e)
                    if Instant::now() < end
                        && (e.contains("still in use")
                            || e.contains("already exists")
                            || e.contains("could not bind")
                            || e.contains("could not create listen")) =>
                {
                    self.shutdown();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    self.shutdown();
                    panic!("PostgreSQL did not start again: {e}");
                }
            }
        }
    }

    /// Logs in to the database `meshca` as `meshca` over TCP (TLS, verified against
    /// [`ca_pem`](Self::ca_pem), when the server has it), running the connection on a task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_to(USER).await
    }

    /// [`execute`](Self::execute), returning PostgreSQL's error.
    pub async fn try_execute(
        &self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        let client = self.connect().await?;
        let messages = client.simple_query(sql).await?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Runs `sql` (one or more statements, the simple query protocol) in a new session on the
    /// database `meshca`; the rows it returned, each column as text (`None`: NULL). Panics with
    /// PostgreSQL's error.
    pub async fn execute(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// The log of the last postmaster started.
    fn last_log(&self) -> String {
        let log = std::fs::read(self.dir.path().join("postgres.log")).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_from..).unwrap_or(&log)).into_owned()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command of the PostgreSQL installation, as the user that owns the cluster.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut c = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        for v in [
            "PGDATA",
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSSLMODE",
            "PGOPTIONS",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = self.command("pg_ctl");
        c.args(args);
        c
    }

    async fn initdb(&self, pwfile: &Path) {
        let mut c = self.command("initdb");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "--auth=scram-sha-256", "--no-locale"])
            .args(["--encoding=UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = tokio::process::Command::from(c)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run initdb (setpriv when root): {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Only `meshca`, only over TCP from 127.0.0.1 (TLS only when the server has it), with
    /// scram-sha-256.
    fn write_hba(&self) {
        let kind = if self.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        std::fs::write(
            self.data_dir().join("pg_hba.conf"),
            format!("{kind} all {USER} 127.0.0.1/32 scram-sha-256\n"),
        )
        .unwrap();
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        self.log_from = std::fs::read(self.dir.path().join("postgres.log")).map_or(0, |l| l.len());
        let mut c = self.command("postgres");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "logging_collector=off"]);
        if self.tls.is_some() {
            c.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ));
        }
        let child = c
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn postgres (setpriv when root): {e}"));
        self.postmaster = Some(child);
    }

    /// Waits until `meshca` can log in and run `SELECT 1` over TCP, or the postmaster exits
    /// (`Err` with the log), or [`READY_WITHIN`] passes (`Err`).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let end = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.postmaster.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.postmaster = None;
                    return Err(format!(
                        "postgres exited with {status}:\n{}",
                        self.last_log()
                    ));
                }
            }
            let login = tokio::time::timeout(Duration::from_secs(5), async {
                let client = self.connect_to("postgres").await?;
                client.simple_query("SELECT 1").await
            })
            .await;
            let last = match login {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => format!("{e:?}"),
                Err(_) => "a login took over 5 s".to_owned(),
            };
            if Instant::now() > end {
                return Err(format!(
                    "no login on 127.0.0.1:{} within {READY_WITHIN:?} (last: {last}):\n{}",
                    self.port,
                    self.last_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_database(&self) {
        let client = self
            .connect_to("postgres")
            .await
            .unwrap_or_else(|e| panic!("log in to postgres: {e:?}"));
        client
            .simple_query(&format!("CREATE DATABASE {USER}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {USER}: {e:?}"));
    }

    async fn connect_to(
        &self,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .password(&self.password)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        match &self.tls {
            Some(tls) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, conn) = config.connect(RustlsConnect(tls.client.clone())).await?;
                tokio::spawn(conn);
                Ok(client)
            }
            None => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    }

    /// Waits for the postmaster to exit; SIGKILL after `limit`.
    async fn reap(&mut self, limit: Duration) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        let end = Instant::now() + limit;
        while !reaped(&mut child, end) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the postmaster as `pg_ctl stop -m immediate` does (`pg_ctl kill QUIT`: it ends its
    /// backends and exits), waiting (blocking) up to [`STOP_WITHIN`], then SIGKILL.
    fn shutdown(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = self
                .pg_ctl(&["kill", "QUIT", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let end = Instant::now() + STOP_WITHIN;
        while !reaped(&mut child, end) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// === helpers ===

/// `$MESHCA_PG_BIN`, or the `bin` of the newest major in `/usr/lib/postgresql`. Panics, saying
/// how to get PostgreSQL, when there is none.
fn bin_dir() -> PathBuf {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_ctl"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os("MESHCA_PG_BIN") {
        let d = PathBuf::from(d);
        assert!(
            has_all(&d),
            "MESHCA_PG_BIN={} has no initdb, postgres and pg_ctl",
            d.display()
        );
        return d;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: the suites need Debian's server binaries in \
             /usr/lib/postgresql/<major>/bin (scripts/test installs them; or apt-get install \
             postgresql, or set MESHCA_PG_BIN to a directory with initdb, postgres and pg_ctl)"
        ),
    }
}

/// One look at a postmaster that is stopping: whether it is gone, having exited, or been killed
/// (and reaped) because `end` has passed.
fn reaped(child: &mut Child, end: Instant) -> bool {
    match child.try_wait() {
        Ok(Some(_)) | Err(_) => true,
        Ok(None) if Instant::now() > end => {
            let _ = child.kill();
            let _ = child.wait();
            true
        }
        Ok(None) => false,
    }
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `nobody` (65534 where `/etc/passwd` does not say).
fn nobody() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|l| {
                let mut f = l.split(':');
                if f.next()? != "nobody" {
                    return None;
                }
                let (uid, gid) = (f.nth(1)?, f.next()?);
                Some((uid.parse().ok()?, gid.parse().ok()?))
            })
        })
        .unwrap_or((65534, 65534))
}

/// Where the cluster's directory goes: `$CARGO_TARGET_TMPDIR` when it is set and usable, else
/// the system's temporary directory. As root the cluster belongs to `nobody`, who must reach it
/// (every ancestor searchable by others); the socket's path must stay short (108 bytes).
fn temp_parent(for_other_user: bool) -> PathBuf {
    let usable = |d: &Path| {
        d.is_absolute()
            && d.is_dir()
            && d.as_os_str().len() < 60
            && (!for_other_user
                || d.ancestors().all(|a| {
                    std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
                }))
    };
    std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .filter(|d| usable(d))
        .unwrap_or_else(std::env::temp_dir)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A CA and a server certificate (127.0.0.1, `localhost`) signed by it; writes `server.crt`
/// (the server's certificate, then the CA's) and `server.key` (0600) into `dir`.
fn write_tls(dir: &Path) -> Tls {
    let crate::test_ca::ServerCert {
        ca: ca_cert,
        cert,
        key,
    } = crate::test_ca::server_cert("meshca PostgreSQL test CA", "localhost");

    std::fs::write(
        dir.join("server.crt"),
        format!("{}{}", cert.pem(), ca_cert.pem()),
    )
    .unwrap();
    let key_path = dir.join("server.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Tls {
        ca_pem: ca_cert.pem(),
        client: Arc::new(client),
    }
}

// === TLS for tokio-postgres, over rustls ===

/// Connects with rustls (aws-lc-rs), verifying the server against the config's roots, with
/// `tls-server-end-point` channel binding (SCRAM-SHA-256-PLUS).
#[derive(Clone)]
struct RustlsConnect(Arc<rustls::ClientConfig>);

struct RustlsHandshake {
    config: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
}

struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsHandshake> {
        let name =
            rustls_pki_types::ServerName::try_from(domain.to_owned()).map_err(io::Error::other)?;
        Ok(RustlsHandshake {
            config: self.0.clone(),
            name,
        })
    }
}

impl TlsConnect<Socket> for RustlsHandshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // RFC 5929: the hash of the server's certificate, SHA-256 for ECDSA P-256 with SHA-256
        // (what rcgen signs with).
        match self.0.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => ChannelBinding::tls_server_end_point(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)
                    .as_ref()
                    .to_vec(),
            ),
            _ => ChannelBinding::none(),
        }
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

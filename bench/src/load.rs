//! The load generator.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{CertificateProfile, IssueCertificateRequest, Tag};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which service to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// meshca `IssueCertificate` over mTLS gRPC.
    Meshca,
    /// `cfssl serve` `/api/v1/cfssl/sign` over HTTP/1.1.
    Cfssl,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The service to drive.
    #[arg(long, value_enum)]
    target: Target,
    /// host:port of the service.
    #[arg(long)]
    addr: String,
    /// meshca's TLS directory (`<data-dir>/tls`) with ca.pem, admin.pem, admin-key.pem.
    #[arg(long, default_value = "meshca-data/tls")]
    tls_dir: PathBuf,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run (after a one-second warm-up that is not measured).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests instead (0: run for --duration).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Pre-made CSRs to cycle through.
    #[arg(long, default_value_t = 256)]
    csrs: usize,
    /// The server's pid, to report its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Append the figures as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Don't draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) target: Target,
    pub(crate) concurrency: usize,
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) server_cpu_seconds: Option<f64>,
    pub(crate) server_cpu_percent: Option<f64>,
    pub(crate) server_rss_mib: Option<f64>,
    pub(crate) server_peak_rss_mib: Option<f64>,
    pub(crate) first_error: Option<String>,
}

enum Client {
    Meshca(IssuerClient<Channel>),
    Cfssl(Http1),
}

impl Client {
    async fn connect(args: &LoadArgs, tls: Option<&ClientTlsConfig>) -> Result<Self, BoxError> {
        match args.target {
            Target::Meshca => {
                let mut ep =
                    Endpoint::from_shared(format!("https://{}", args.addr))?.tcp_nodelay(true);
                if let Some(tls) = tls {
                    ep = ep.tls_config(tls.clone())?;
                }
                Ok(Self::Meshca(IssuerClient::new(ep.connect().await?)))
            }
            Target::Cfssl => Ok(Self::Cfssl(Http1::connect(&args.addr).await?)),
        }
    }

    async fn request(&mut self, csr: &Csr, worker: usize) -> Result<(), BoxError> {
        match self {
            Self::Meshca(c) => {
                let req = IssueCertificateRequest {
                    mesh: "default".into(),
                    tags: vec![Tag {
                        name: "kuma.io/service".into(),
                        value: format!("bench-{worker}"),
                    }],
                    csr: csr.der.clone(),
                    profile: CertificateProfile::Kuma.into(),
                };
                let resp = c.issue_certificate(req).await?.into_inner();
                if resp.certificate.is_none_or(|c| c.cert_chain_pem.is_empty()) {
                    return Err("empty certificate".into());
                }
                Ok(())
            }
            Self::Cfssl(h) => {
                let body = h.post("/api/v1/cfssl/sign", &csr.cfssl_body).await?;
                if !body.windows(14).any(|w| w == b"\"success\":true") {
                    return Err(format!(
                        "cfssl said: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )
                    .into());
                }
                Ok(())
            }
        }
    }
}

struct Csr {
    der: Vec<u8>,
    cfssl_body: Vec<u8>,
}

fn csr_pool(n: usize) -> Result<Vec<Csr>, BoxError> {
    (0..n.max(1))
        .map(|_| {
            let key = rcgen::KeyPair::generate()?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            let pem = csr.pem()?;
            let body = serde_json::to_vec(&serde_json::json!({ "certificate_request": pem }))?;
            Ok(Csr {
                der: csr.der().to_vec(),
                cfssl_body: body,
            })
        })
        .collect()
}

pub(crate) fn tls_config(dir: &std::path::Path) -> Result<ClientTlsConfig, BoxError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")?))
        .identity(Identity::from_pem(
            read("admin.pem")?,
            read("admin-key.pem")?,
        ))
        .domain_name("localhost"))
}

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// (VmRSS, VmHWM) of a process in MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

pub(crate) fn run(args: LoadArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(drive(&args))?;
    println!(
        "\n{:<8} {:>5} clients  {:>9} req  {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p999 {:>7.2} ms  errors {}{}",
        format!("{:?}", result.target).to_lowercase(),
        result.concurrency,
        result.requests,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.p999_ms,
        result.errors,
        match (result.server_cpu_percent, result.server_peak_rss_mib) {
            (Some(cpu), Some(rss)) => format!("  server CPU {cpu:.0}%  peak RSS {rss:.1} MiB"),
            _ => String::new(),
        }
    );
    if let Some(e) = &result.first_error {
        println!("first error: {e}");
    }
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{}", serde_json::to_string(&result)?)?;
    }
    if result.requests == 0 {
        return Err("no request succeeded".into());
    }
    Ok(())
}

async fn drive(args: &LoadArgs) -> Result<RunResult, BoxError> {
    let pool = Arc::new(csr_pool(args.csrs)?);
    let tls = match args.target {
        Target::Meshca => Some(tls_config(&args.tls_dir)?),
        Target::Cfssl => None,
    };
    let mut clients = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        clients.push(Client::connect(args, tls.as_ref()).await?);
    }

    // Warm-up: one second, not measured.
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let limit = args.requests;
    let mut tasks = Vec::new();
    for (w, mut client) in clients.into_iter().enumerate() {
        let (pool, measuring, stop, done, errors) = (
            pool.clone(),
            measuring.clone(),
            stop.clone(),
            done.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(4096);
            let mut first_error = None;
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7) % pool.len();
                let start = Instant::now();
                let r = client.request(&pool[i], w).await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match r {
                    Ok(()) => {
                        lat.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if limit > 0 && n >= limit {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = args.server_pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(if limit > 0 {
            limit
        } else {
            (args.duration * 10.0) as u64
        })
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{:?} x{}", args.target, args.concurrency).to_lowercase());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = done.load(Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        bar.set_message(format!(
            "{n} req, {:.0} req/s, {} errors",
            n as f64 / secs.max(1e-9),
            errors.load(Ordering::Relaxed)
        ));
        if limit > 0 {
            bar.set_position(n);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        } else {
            bar.set_position((secs * 10.0) as u64);
            if secs >= args.duration {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = args.server_pid.and_then(cpu_seconds);
    bar.finish_and_clear();

    let mut lat = Vec::new();
    let mut first_error = None;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        if first_error.is_none() {
            first_error = e;
        }
    }
    lat.sort_unstable();
    let requests = lat.len() as u64;
    let server_cpu_seconds = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rss = args.server_pid.and_then(rss_mib);
    Ok(RunResult {
        target: args.target,
        concurrency: args.concurrency,
        seconds,
        requests,
        errors: errors.load(Ordering::Relaxed),
        rps: requests as f64 / seconds,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        server_cpu_seconds,
        server_cpu_percent: server_cpu_seconds.map(|c| 100.0 * c / seconds),
        server_rss_mib: rss.map(|r| r.0),
        server_peak_rss_mib: rss.map(|r| r.1),
        first_error,
    })
}

/// A minimal HTTP/1.1 keep-alive client: enough for cfssl's JSON API, without pulling an HTTP
/// client stack into the comparison.
struct Http1 {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Http1 {
    async fn connect(addr: &str) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(8192),
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>, BoxError> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body);
        self.stream.write_all(&req).await?;

        // Read the head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(format!("HTTP status: {}", head.lines().next().unwrap_or_default()).into());
        }
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        self.buf.drain(..head_end);
        if let Some(len) = header("content-length:") {
            let len: usize = len.parse()?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            return Ok(self.buf.drain(..len).collect());
        }
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    return Ok(body);
                }
            }
        }
        Err("response has neither Content-Length nor chunked encoding".into())
    }

    async fn fill(&mut self) -> Result<(), BoxError> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

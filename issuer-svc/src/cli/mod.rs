//! The `meshca` command line: arguments and dispatch here; the gRPC client in [`client`], work
//! on local files in [`local`], certificate summaries in [`inspect`].

pub(crate) mod agent;
pub(crate) mod client;
pub(crate) mod inspect;
mod local;
mod token;
mod trust;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use self::client::issue_remote;
use self::local::{issue_local, validate};
use crate::error::CliError;
use crate::files::{write_private, write_public, IoError};
use crate::flags::parse_tags;
use crate::serve::args::{ServeArgs, StoreKind};

const EXAMPLES: &str = "\
Examples:
  # Run a zone issuer with zero configuration: mesh `default`, builtin CA, mTLS with a bootstrap
  # CA and an admin client certificate in ./meshca-data.
  meshca serve

  # Ask it for a certificate (uses ./meshca-data/tls/admin*.pem to authenticate).
  meshca issue --mesh default --tag kuma.io/service=web --out-dir ./certs

  # Look at what you got, and check it against the trust bundle.
  meshca inspect ./certs/cert.pem --bundle ./certs/bundle.pem

  # Check a Mesh before applying it: every violation, then a test certificate.
  meshca validate --config mesh.yaml

  # Keep a proxy's certificate fresh, bootstrapped with a one-identity token (no operator key on
  # the proxy's side): mint the token, then run the agent beside nginx.
  meshca token create --tag kuma.io/service=web --valid-for 1h --out web.token
  meshca agent --token-file web.token --ca-cert ./meshca-data/tls/ca.pem \\
    --tag kuma.io/service=web --out-dir /etc/nginx/mesh --on-change 'nginx -s reload'

Exit status: 0 on success, 1 on any failure or violation, 2 on a usage error.";

/// meshca: a certificate authority for Kuma-style service meshes.
///
/// `meshca serve` runs the per-zone issuer (gRPC API `meshca.v1.Issuer`, mTLS by default);
/// the other commands talk to it or work on files.
#[derive(Debug, Parser)]
#[command(name = "meshca", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format (logs go to stderr). With `json` every line meshca writes is a JSON object:
    /// the logs, serve's startup lines on stdout and the final error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `issuer_svc=debug`); RUST_LOG overrides it.
    /// Default: `info` for serve, `warn` for the other commands.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the zone issuer.
    ///
    /// With no arguments: mesh `default` with a builtin CA `ca-1`, data in ./meshca-data, gRPC
    /// (mTLS) on 127.0.0.1:5690, metrics on 127.0.0.1:5691. On first start it creates a bootstrap
    /// CA, a server certificate for localhost and an admin client certificate in
    /// DATA_DIR/tls/ (keys 0600). It prints `meshca: grpc listening on ADDR` and
    /// `meshca: metrics listening on ADDR` with the bound addresses, then `meshca: ready`.
    Serve(ServeArgs),
    /// Get a certificate: from a running issuer (default), or locally from a Mesh file (--config).
    ///
    /// Writes OUT_DIR/cert.pem (leaf, then chain), OUT_DIR/key.pem (0600, when meshca generated
    /// the key, i.e. without --csr) and OUT_DIR/bundle.pem (the mesh's trust bundle).
    Issue(IssueArgs),
    /// Validate Mesh YAML: every violation, then a test certificate from the enabled backend.
    ///
    /// Nothing is persisted: a builtin CA made for the test certificate lives in memory only.
    Validate(ValidateArgs),
    /// Summarize a certificate or bundle (PEM): subject, SANs, issuer, validity, key, SHA-256.
    Inspect(InspectArgs),
    /// Keep one identity's certificate fresh in files a proxy reads.
    ///
    /// Generates the key locally, asks the issuer with a CSR, holds a WatchCertificate stream and
    /// writes OUT_DIR/cert.pem, key.pem (0600) and bundle.pem atomically on every rotation and CA
    /// change, then runs --on-change. Every answer is checked first (the agent's key, exactly its
    /// SANs, its own dates, a chain to a bundle that keeps a root already trusted); a refused one
    /// is written nowhere. Reconnects with backoff. --once writes one and exits.
    Agent(agent::AgentArgs),
    /// Bootstrap tokens: one identity's first certificate without an operator key.
    Token(token::TokenArgs),
    /// Print a shell completion script to stdout.
    ///
    /// bash: `source <(meshca completions bash)`, or save it as
    /// /usr/share/bash-completion/completions/meshca; zsh: save it as `_meshca` in a directory
    /// of $fpath; fish: save it as ~/.config/fish/completions/meshca.fish.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) to stdout: meshca's, or one command's (`meshca man serve`).
    ///
    /// `meshca man | man -l -`, or `meshca man > /usr/share/man/man1/meshca.1`.
    Man {
        /// The command whose page to print (its page is `meshca-COMMAND(1)`).
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// The issuer's gRPC address (`127.0.0.1:5690` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:5690", conflicts_with = "config")]
    server: String,
    /// Issue locally from this Mesh YAML instead of asking a server (builtin CAs persist in
    /// DATA_DIR/secrets, like the server's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The mesh.
    #[arg(long, default_value = "default")]
    mesh: String,
    /// A tag of the identity, KEY=VALUE; repeat it. `kuma.io/service` is required.
    #[arg(long = "tag", value_name = "KEY=VALUE", required = true)]
    tags: Vec<String>,
    /// A PKCS#10 CSR (PEM or DER) for your own key; without it meshca generates a P-256 key.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Issue an X.509-SVID: the SPIFFE ID as the only URI SAN, no `kuma://` SANs (the tags must
    /// be one `kuma.io/service` value).
    #[arg(long)]
    svid: bool,
    /// Where to write cert.pem, key.pem and bundle.pem.
    #[arg(long)]
    out_dir: PathBuf,
    /// Data directory holding the bootstrap client credentials (DATA_DIR/tls/).
    #[arg(long, default_value = "./meshca-data")]
    data_dir: PathBuf,
    /// CA that signed the server certificate (default DATA_DIR/tls/ca.pem).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (default DATA_DIR/tls/admin.pem).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client key (default DATA_DIR/tls/admin-key.pem).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Talk to a server started with --insecure-plaintext (loopback addresses only).
    #[arg(long, conflicts_with_all = ["ca_cert", "client_cert", "client_key"])]
    plaintext: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The Mesh YAML (several `---` separated Meshes allowed).
    #[arg(long)]
    config: PathBuf,
    /// Only check the configuration; do not issue a test certificate.
    #[arg(long)]
    no_test_cert: bool,
    /// Read mesh secrets (for `secret:` data sources) from DATA_DIR/secrets.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A PEM file with one or more certificates.
    file: PathBuf,
    /// Also check that the first certificate chains to this bundle (PEM), using the others in
    /// FILE as intermediates.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

/// The commands whose every flag can also be set from a `MESHCA_*` environment variable.
const ENV_COMMANDS: [&str; 2] = ["serve", "agent"];

/// The `meshca` command line: the derived [`Cli`] with a `MESHCA_*` environment variable on every
/// flag of [`ENV_COMMANDS`] and on the global flags, as Kuma has `KUMA_*` for its settings.
/// Added here rather than one attribute per flag so that a new flag cannot forget it (a test
/// walks the tree all the same).
fn command() -> clap::Command {
    let mut cmd = Cli::command().mut_args(with_env);
    for name in ENV_COMMANDS {
        cmd = cmd.mut_subcommand(name, |c| c.mut_args(with_env));
    }
    cmd
}

/// `MESHCA_` + the long flag upper-cased, `-` as `_` (`--data-dir`: `MESHCA_DATA_DIR`).
fn env_name(long: &str) -> String {
    format!("MESHCA_{}", long.to_uppercase().replace('-', "_"))
}

fn with_env(arg: Arg) -> Arg {
    match arg.get_long() {
        Some(long) if !arg.is_positional() => {
            let name = env_name(long);
            arg.env(name)
        }
        _ => arg,
    }
}

/// Parses the command line (and the environment) as [`Cli`]; exits on a usage error.
fn parse() -> Cli {
    let matches = command()
        .try_get_matches()
        .unwrap_or_else(|e| usage_exit(&e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_exit(&e));
    if let (Command::Serve(a), Some(("serve", m))) = (&mut cli.command, matches.subcommand()) {
        // MESHCA_NAMESPACE also names the system namespace of the backends (cert-manager's
        // CertificateRequests), so a Deployment may set it whatever the store: from the
        // environment it is ignored with --store file or postgres instead of refused as the flag
        // is.
        if a.store != StoreKind::Kubernetes
            && m.value_source("namespace") == Some(clap::parser::ValueSource::EnvVariable)
        {
            a.namespace = None;
        }
    }
    cli
}

/// Ends the process on a usage error (exit status 2) or after `--help` / `--version` (0). With
/// `--log-format json` asked for (on the command line or as `MESHCA_LOG_FORMAT`), the error is
/// one JSON line like every other line meshca writes; help and version stay text.
fn usage_exit(e: &clap::Error) -> ! {
    if e.use_stderr() && json_asked() {
        crate::output::set_json(true);
        crate::output::fail(&format!("usage: {}", e.render().to_string().trim_end()));
        std::process::exit(e.exit_code());
    }
    e.exit()
}

/// Whether `--log-format json` is on the command line or in the environment, read before clap
/// could parse them.
fn json_asked() -> bool {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let on_line = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    let in_env = std::env::var(env_name("log-format")).is_ok_and(|v| v == "json");
    on_line || (in_env && !args.iter().any(|a| a.starts_with("--log-format")))
}

/// Runs the CLI.
pub(crate) fn main() -> ExitCode {
    let cli = parse();
    match &cli.command {
        Command::Completions { shell } => return completions(*shell),
        Command::Man { command } => return man(command.as_deref()),
        _ => {}
    }
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(
        cli.log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    crate::output::set_json(matches!(cli.log_format, LogFormat::Json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            crate::output::fail(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => crate::serve::serve(a).await,
            Command::Issue(a) => issue(a).await,
            Command::Validate(a) => validate(a).await,
            Command::Inspect(a) => {
                crate::cli::inspect::inspect(&a.file, a.bundle.as_deref()).map_err(CliError::from)
            }
            Command::Agent(a) => agent::agent(a).await.map_err(CliError::from),
            Command::Token(a) => token::token(a).await,
            // Answered above, before the runtime.
            Command::Completions { .. } | Command::Man { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::output::fail(&format!("error: {}", crate::error::chain(&e)));
            ExitCode::FAILURE
        }
    }
}

/// `meshca completions SHELL`. Generated at run time rather than at build time: the script
/// then always matches the binary at hand (also in an image that has nothing but the binary),
/// and the build needs no copy of the command tree.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "meshca", &mut out);
    write_stdout(&out)
}

/// `meshca man [COMMAND]`: the page of meshca, or of one of its commands.
fn man(name: Option<&str>) -> ExitCode {
    let mut cmd = command();
    cmd.build();
    let page = match name {
        None => cmd,
        Some(n) => match cmd.find_subcommand(n) {
            Some(sub) => sub
                .clone()
                .name(format!("meshca-{n}"))
                .version(env!("CARGO_PKG_VERSION")),
            None => {
                crate::output::fail(&format!(
                    "error: no command `{n}` (the commands: {})",
                    cmd.get_subcommands()
                        .map(|c| c.get_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return ExitCode::from(2);
            }
        },
    };
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(page).render(&mut out) {
        crate::output::fail(&format!("error: cannot render the man page: {e}"));
        return ExitCode::FAILURE;
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::output::fail(&format!("error: cannot write to stdout: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A SAN profile as the API spells it.
fn proto_profile(profile: ca_core::SanProfile) -> i32 {
    match profile {
        ca_core::SanProfile::Svid => crate::proto::CertificateProfile::Svid,
        _ => crate::proto::CertificateProfile::Kuma,
    }
    .into()
}

impl IssueArgs {
    /// The SAN profile asked for (`--svid`).
    fn profile(&self) -> ca_core::SanProfile {
        if self.svid {
            ca_core::SanProfile::Svid
        } else {
            ca_core::SanProfile::Kuma
        }
    }
}

/// Tags as the API spells them.
fn proto_tags(tags: &[(String, String)]) -> Vec<crate::proto::Tag> {
    tags.iter()
        .map(|(k, v)| crate::proto::Tag {
            name: k.clone(),
            value: v.clone(),
        })
        .collect()
}

async fn issue(a: IssueArgs) -> Result<(), CliError> {
    let tags = parse_tags(&a.tags)?;
    let csr = match &a.csr {
        Some(p) => Some(std::fs::read(p).map_err(IoError::at("read CSR", p))?),
        None => None,
    };
    let (chain, key, bundle, summary) = match &a.config {
        Some(config) => issue_local(config, &a, &tags, csr.as_deref()).await?,
        None => issue_remote(&a, &tags, csr.clone()).await?,
    };
    std::fs::create_dir_all(&a.out_dir).map_err(IoError::at("create", &a.out_dir))?;
    write_public(&a.out_dir.join("cert.pem"), chain.as_bytes())?;
    write_public(&a.out_dir.join("bundle.pem"), bundle.as_bytes())?;
    if let Some(k) = key {
        write_private(&a.out_dir.join("key.pem"), k.as_bytes())?;
    }
    println!("{summary}");
    println!(
        "wrote {}/cert.pem, {}bundle.pem",
        a.out_dir.display(),
        if csr.is_none() { "key.pem, " } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of serve and agent, global ones included, has its `MESHCA_*` variable: a new
    /// flag cannot forget it.
    #[test]
    fn every_serve_and_agent_flag_has_an_environment_variable() {
        let mut cmd = command();
        cmd.build();
        for name in ENV_COMMANDS {
            let sub = cmd
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
            let mut seen = 0;
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || id == "help" || id == "version" {
                    continue;
                }
                let long = arg
                    .get_long()
                    .unwrap_or_else(|| panic!("{name}: {id} has no long flag"));
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("{name} --{long} has no environment variable"));
                assert_eq!(
                    env.to_str(),
                    Some(env_name(long).as_str()),
                    "{name} --{long}"
                );
                assert!(env_name(long).starts_with("MESHCA_"));
                seen += 1;
            }
            assert!(seen > 5, "{name}: only {seen} flags seen");
        }
        assert_eq!(env_name("data-dir"), "MESHCA_DATA_DIR");
    }

    /// The variables are shown in `--help`.
    #[test]
    fn help_names_the_variables() {
        let mut cmd = command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        for var in [
            "MESHCA_DATA_DIR",
            "MESHCA_LISTEN",
            "MESHCA_TLS_CERT",
            "MESHCA_LOG_FORMAT",
        ] {
            assert!(
                help.contains(&format!("env: {var}")),
                "{var} missing:\n{help}"
            );
        }
    }

    /// The default ports stay clear of kuma-cp's 5676-5685 (5680 diagnostics, 5681 API), so both
    /// run on one host.
    #[test]
    fn default_ports_do_not_collide_with_kuma_cp() {
        let m = command()
            .try_get_matches_from(["meshca", "serve"])
            .expect("parses");
        let Command::Serve(a) = Cli::from_arg_matches(&m).expect("serve").command else {
            panic!("not serve")
        };
        assert_eq!(a.listen.port(), 5690);
        assert_eq!(a.metrics_listen.port(), 5691);
        for port in [a.listen.port(), a.metrics_listen.port()] {
            assert!(!(5676..=5685).contains(&port), "{port}");
        }
    }

    /// Repeated flags also take comma-separated values (the form an environment variable has).
    #[test]
    fn repeated_flags_split_on_commas() {
        let m = command()
            .try_get_matches_from([
                "meshca",
                "agent",
                "--tag",
                "kuma.io/service=web,version=v1",
                "--dns-name",
                "a.example,b.example",
                "--out-dir",
                "x",
            ])
            .expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("agent args");
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.tags_for_test(), ["kuma.io/service=web", "version=v1"]);
        let m = command()
            .try_get_matches_from([
                "meshca",
                "serve",
                "--server-name",
                "a.example,b.example",
                "--allow-vault-address",
                "https://v1:8200,https://v2:8200",
            ])
            .expect("parses");
        let Command::Serve(a) = Cli::from_arg_matches(&m).expect("serve").command else {
            panic!("not serve")
        };
        assert_eq!(a.server_name, ["a.example", "b.example"]);
        assert_eq!(
            a.allow_vault_address,
            ["https://v1:8200", "https://v2:8200"]
        );
    }
}

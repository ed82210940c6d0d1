//! `meshca-bench`: the load generator and report writer behind `scripts/bench`.
//!
//! - `load`: N concurrent clients, each on its own connection, send certificate requests built
//!   from a pool of pre-made CSRs (client key generation is not measured) to meshca's
//!   `IssueCertificate` over mTLS gRPC, or to `cfssl serve`'s `/api/v1/cfssl/sign`, for a fixed
//!   duration or count. Prints requests/s, p50/p99/p999 latency, errors, and the server's CPU and
//!   RSS (read from /proc for `--server-pid`), and appends the figures as one JSON line.
//! - `rotation`: the library's rotation scheduler in-process with many watched identities.
//! - `vault`: the vault backend against real OpenBao, next to builtin.
//! - `acmpca`: the acmpca backend against moto (IAM enforced): throughput, and a CA switch of
//!   many watched identities paced by the rate limit through a proxy emulating AWS's quota.
//! - `replicas`: N issuer processes with the Kubernetes store started at once, several rounds:
//!   one builtin CA and one bootstrap TLS CA each time, lost create races, time to ready.
//! - `yaml`: `Mesh::from_yaml` on hostile inputs up to the size cap: time grows linearly.
//! - `report`: turns the collected figures into `BENCHMARKS.md` and an SVG plot.

#![forbid(unsafe_code)]

mod acmpca;
mod load;
mod replicas;
mod report;
mod rotation;
mod vault;
mod yaml;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meshca-bench",
    about = "Load generator and benchmark report for meshca"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a CA service with concurrent clients and print (and record) its figures.
    Load(load::LoadArgs),
    /// Rotate many watched identities with the library's scheduler, in-process.
    Rotation(rotation::RotationArgs),
    /// Write BENCHMARKS.md and the plot from recorded figures.
    Report(report::ReportArgs),
    /// The vault backend against real OpenBao, next to builtin, in-process.
    Vault(vault::VaultArgs),
    /// The acmpca backend against moto (AWS emulator, IAM enforced), in-process: throughput, and
    /// many identities switching to it at once, paced by the rate limit.
    Acmpca(acmpca::AcmpcaArgs),
    /// N `meshca serve --store kubernetes` processes started at once against one Kubernetes API
    /// test server, several rounds: one builtin CA and one bootstrap TLS CA each time?
    Replicas(replicas::ReplicasArgs),
    /// Parse hostile Mesh YAML of growing size, up to the cap, and print the times.
    Yaml(yaml::YamlArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => load::run(args),
        Command::Rotation(args) => rotation::run(args),
        Command::Report(args) => report::run(args),
        Command::Vault(args) => vault::run(args),
        Command::Acmpca(args) => acmpca::run(args),
        Command::Replicas(args) => replicas::run(args),
        Command::Yaml(args) => yaml::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshca-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

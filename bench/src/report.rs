//! BENCHMARKS.md and the SVG plot, from the figures `scripts/bench` collected.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;

use crate::load::{RunResult, Target};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// JSON lines written by `meshca-bench load --json-out`.
    #[arg(long)]
    load: PathBuf,
    /// Criterion's output directory (`<target>/criterion`).
    #[arg(long)]
    criterion: PathBuf,
    /// A JSON object of reference figures and context written by scripts/bench
    /// (`openssl_p256_sign`, `openssl_p256_verify`, `openssl_rsa2048_sign`, `machine`, `versions`,
    /// and optionally `rotation`).
    #[arg(long)]
    context: PathBuf,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Where to write the plot (SVG); the report links to it by file name.
    #[arg(long, default_value = "benchmarks.svg")]
    svg: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Context {
    machine: String,
    versions: String,
    openssl_p256_sign: f64,
    openssl_p256_verify: f64,
    openssl_rsa2048_sign: f64,
    #[serde(default)]
    rotation: Option<serde_json::Value>,
    #[serde(default)]
    idle: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Mean time per iteration in nanoseconds, for a criterion benchmark id `group/function`.
fn criterion_mean_ns(dir: &std::path::Path, id: &str) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let e: Estimates = serde_json::from_str(&text).ok()?;
    Some(e.mean.point_estimate)
}

pub(crate) fn run(args: ReportArgs) -> Result<(), BoxError> {
    let ctx: Context = serde_json::from_str(&std::fs::read_to_string(&args.context)?)?;
    let runs: Vec<RunResult> = std::fs::read_to_string(&args.load)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;

    // Hardware limit for issue-from-CSR on P-256: one verify plus one sign, per core.
    let limit = 1.0 / (1.0 / ctx.openssl_p256_sign + 1.0 / ctx.openssl_p256_verify);
    let mut md = String::new();
    writeln!(md, "# meshca benchmarks\n")?;
    writeln!(md, "Written by `scripts/bench`; every figure below comes from the same run on the same machine.\n")?;
    writeln!(md, "- Machine: {}", ctx.machine)?;
    writeln!(md, "- Versions: {}\n", ctx.versions)?;
    writeln!(md, "## Reference points (per core)\n")?;
    writeln!(md, "| figure | value |\n|---|---|")?;
    writeln!(
        md,
        "| `openssl speed ecdsap256` sign | {:.0} /s |",
        ctx.openssl_p256_sign
    )?;
    writeln!(
        md,
        "| `openssl speed ecdsap256` verify | {:.0} /s |",
        ctx.openssl_p256_verify
    )?;
    writeln!(
        md,
        "| `openssl speed rsa2048` sign | {:.0} /s |",
        ctx.openssl_rsa2048_sign
    )?;
    writeln!(
        md,
        "| P-256 issue-from-CSR limit (1 verify + 1 sign) | {limit:.0} certs/s |\n"
    )?;

    writeln!(md, "## Library (criterion, one core)\n")?;
    writeln!(
        md,
        "| benchmark | mean | per second | vs openssl limit |\n|---|---|---|---|"
    )?;
    let ids = [
        (
            "builtin_p256/issue_from_csr",
            "builtin, P-256 CA, issue from CSR",
            Some(limit),
        ),
        (
            "builtin_p256/issue_generated_p256",
            "builtin, P-256 CA, generated P-256 key",
            None,
        ),
        (
            "builtin_rsa2048/issue_from_csr",
            "builtin, RSA-2048 CA, issue from CSR",
            Some(ctx.openssl_rsa2048_sign),
        ),
        (
            "builtin_rsa2048/issue_generated_p256",
            "builtin, RSA-2048 CA, generated P-256 key",
            None,
        ),
        (
            "provided_intermediate_p384/issue_from_csr",
            "provided intermediate (P-384), issue from CSR",
            None,
        ),
        (
            "provided_intermediate_p384/issue_generated_p256",
            "provided intermediate (P-384), generated key",
            None,
        ),
        ("parts/csr_verify", "CSR parse + signature verify", None),
        ("parts/template_render", "common-name template render", None),
        ("parts/identity_and_sans", "identity + SAN set", None),
    ];
    let mut lib_csr_rate = None;
    for (id, label, reference) in ids {
        if let Some(ns) = criterion_mean_ns(&args.criterion, id) {
            let rate = 1e9 / ns;
            if id == "builtin_p256/issue_from_csr" {
                lib_csr_rate = Some(rate);
            }
            let ratio =
                reference.map_or(String::from("—"), |r| format!("{:.0}%", 100.0 * rate / r));
            writeln!(md, "| {label} | {} | {rate:.0} | {ratio} |", fmt_ns(ns))?;
        }
    }

    writeln!(
        md,
        "\n## gRPC `IssueCertificate` vs `cfssl serve` (loopback, pre-made P-256 CSRs)\n"
    )?;
    writeln!(md, "Each client has its own connection; meshca over mTLS gRPC (HTTP/2), cfssl over HTTP/1.1 keep-alive. Server CPU is the server process's user+system time over the run (200% = both cores).\n")?;
    writeln!(md, "| clients | meshca req/s | meshca p50 / p99 / p999 ms | meshca CPU | cfssl req/s | cfssl p50 / p99 / p999 ms | cfssl CPU | meshca / cfssl |\n|---|---|---|---|---|---|---|---|")?;
    let mut by_c: BTreeMap<usize, (Option<&RunResult>, Option<&RunResult>)> = BTreeMap::new();
    for r in &runs {
        let e = by_c.entry(r.concurrency).or_default();
        match r.target {
            Target::Meshca => e.0 = Some(r),
            Target::Cfssl => e.1 = Some(r),
        }
    }
    let cell = |r: Option<&RunResult>| match r {
        Some(r) => (
            format!("{:.0}", r.rps),
            format!("{:.2} / {:.2} / {:.2}", r.p50_ms, r.p99_ms, r.p999_ms),
            r.server_cpu_percent
                .map_or("—".into(), |c| format!("{c:.0}%")),
        ),
        None => ("—".into(), "—".into(), "—".into()),
    };
    for (c, (m, f)) in &by_c {
        let (mr, ml, mc) = cell(*m);
        let (fr, fl, fc) = cell(*f);
        let ratio = match (m, f) {
            (Some(m), Some(f)) if f.rps > 0.0 => format!("{:.2}×", m.rps / f.rps),
            _ => "—".into(),
        };
        writeln!(
            md,
            "| {c} | {mr} | {ml} | {mc} | {fr} | {fl} | {fc} | {ratio} |"
        )?;
    }
    if let Some(rss) = runs
        .iter()
        .filter(|r| r.target == Target::Meshca)
        .filter_map(|r| r.server_peak_rss_mib)
        .reduce(f64::max)
    {
        writeln!(md, "\nmeshca peak RSS over the load runs: {rss:.1} MiB.")?;
    }
    let file_name = args
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    writeln!(
        md,
        "\n![requests/s and p99 against concurrency]({file_name})\n"
    )?;

    if let Some(rot) = &ctx.rotation {
        writeln!(md, "## Rotation of 100,000 watched identities\n")?;
        writeln!(md, "```json\n{}\n```\n", serde_json::to_string_pretty(rot)?)?;
    }
    if let Some(idle) = &ctx.idle {
        writeln!(md, "## Idle issuer tracking 100,000 identities\n")?;
        writeln!(
            md,
            "```json\n{}\n```\n",
            serde_json::to_string_pretty(idle)?
        )?;
    }

    writeln!(md, "## Targets\n")?;
    writeln!(
        md,
        "| figure | target | measured | met |\n|---|---|---|---|"
    )?;
    if let Some(rate) = lib_csr_rate {
        writeln!(md, "| library, builtin P-256, issue from CSR | ≥ 7,000 certs/s per core | {rate:.0} ({:.0}% of limit) | {} |", 100.0 * rate / limit, yes(rate >= 7000.0))?;
    }
    if let (Some(m), Some(f)) = by_c.get(&64).map_or((None, None), |e| *e) {
        writeln!(
            md,
            "| gRPC, 64 clients | ≥ 2× cfssl, p99 < 10 ms | {:.2}× cfssl, p99 {:.2} ms | {} |",
            m.rps / f.rps,
            m.p99_ms,
            yes(m.rps >= 2.0 * f.rps && m.p99_ms < 10.0)
        )?;
    }
    // The same tables on the terminal, as the summary of the run.
    println!("{md}");
    std::fs::write(&args.out, md)?;
    std::fs::write(&args.svg, svg(&by_c))?;
    println!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Picks one figure of a run.
type Pick = fn(&RunResult) -> f64;

/// Two panels, requests/s and p99 latency against concurrency (log2 x axis), meshca and cfssl.
fn svg(by_c: &BTreeMap<usize, (Option<&RunResult>, Option<&RunResult>)>) -> String {
    let (w, h, pad) = (900.0_f64, 380.0_f64, 60.0_f64);
    let panel_w = (w - 3.0 * pad) / 2.0;
    let panel_h = h - 2.0 * pad;
    let xs: Vec<f64> = by_c.keys().map(|c| (*c as f64).log2()).collect();
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::MAX, f64::min),
        xs.iter().copied().fold(f64::MIN, f64::max).max(1.0),
    );
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let series = |pick: Pick, which: Target| -> Vec<(f64, f64)> {
        by_c.iter()
            .filter_map(|(c, (m, f))| {
                let r = if which == Target::Meshca { *m } else { *f };
                r.map(|r| ((*c as f64).log2(), pick(r)))
            })
            .collect()
    };
    let panels: [(&str, Pick); 2] = [
        ("requests/s", |r| r.rps),
        ("p99 latency (ms)", |r| r.p99_ms),
    ];
    for (i, (title, pick)) in panels.into_iter().enumerate() {
        let x0 = pad + i as f64 * (panel_w + pad);
        let y0 = pad;
        let m = series(pick, Target::Meshca);
        let f = series(pick, Target::Cfssl);
        let ymax = m
            .iter()
            .chain(&f)
            .map(|p| p.1)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let px = |x: f64| {
            x0 + if xmax > xmin {
                (x - xmin) / (xmax - xmin) * panel_w
            } else {
                panel_w / 2.0
            }
        };
        let py = |y: f64| y0 + panel_h - y / ymax * panel_h;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{title}</text>"#,
            x0 + panel_w / 2.0,
            y0 - 20.0
        );
        let _ = write!(
            out,
            r##"<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#888"/>"##
        );
        for k in 0..=4 {
            let y = ymax * f64::from(k) / 4.0;
            let _ = write!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#444">{}</text>"##,
                x0 - 5.0,
                py(y) + 4.0,
                if ymax >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            );
        }
        for c in by_c.keys() {
            let x = px((*c as f64).log2());
            let _ = write!(
                out,
                r##"<text x="{x}" y="{}" text-anchor="middle" fill="#444">{c}</text>"##,
                y0 + panel_h + 16.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrent clients</text>"#,
            x0 + panel_w / 2.0,
            y0 + panel_h + 34.0
        );
        for (pts, color, name, dy) in [
            (&m, "#1f77b4", "meshca", 0.0),
            (&f, "#d62728", "cfssl", 16.0),
        ] {
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = write!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (x, y) in pts.iter() {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(*x),
                    py(*y)
                );
            }
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
                x0 + 8.0,
                y0 + 16.0 + dy
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

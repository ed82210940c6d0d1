//! `meshca-bench yaml`: how long `Mesh::from_yaml` takes on hostile inputs of growing size, up to
//! the 512 KiB cap — deep flow nesting behind a quote (the review's bypass of the old pre-check),
//! deep block nesting, wide flat mappings, long scalars and a real Mesh repeated — so that the
//! time can be seen to grow linearly with the input and never reach the quadratic parse the
//! depth check exists to avoid.

use std::time::{Duration, Instant};

use ca_core::config::{Mesh, MAX_YAML_BYTES};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct YamlArgs {
    /// Timed parses per input (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// One hostile shape: a name and a builder for about `n` bytes.
type Shape = (&'static str, fn(usize) -> String);

fn shapes() -> Vec<Shape> {
    vec![
        ("flow nesting behind a quote", |n| {
            let k = n.saturating_sub(64) / 2;
            format!(
                "type: Mesh\nname: x '\nmtls: {}{}\n",
                "[".repeat(k),
                "]".repeat(k)
            )
        }),
        ("flow nesting, 60 levels, repeated", |n| {
            let unit = format!("{}1{}, ", "[".repeat(60), "]".repeat(60));
            let items = n.saturating_sub(64) / unit.len();
            format!("type: Mesh\nname: x\nlabels: [{}]\n", unit.repeat(items))
        }),
        ("block sequences nested on one line", |n| {
            format!(
                "type: Mesh\nname: x\nmtls:\n  {}x\n",
                "- ".repeat(n.saturating_sub(64) / 2)
            )
        }),
        ("flat mapping of many keys", |n| {
            let mut s = String::from("type: Mesh\nname: x\nlabels:\n");
            let mut i = 0usize;
            while s.len() + 24 < n {
                s.push_str(&format!("  k{i}: v{i}\n"));
                i += 1;
            }
            s
        }),
        ("one long quoted scalar", |n| {
            format!(
                "type: Mesh\nname: x\nlabels: {{a: '{}'}}\n",
                "[{".repeat(n.saturating_sub(64) / 2)
            )
        }),
    ]
}

pub(crate) fn run(a: YamlArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runs = a.runs.max(1);
    let sizes = [
        MAX_YAML_BYTES / 8,
        MAX_YAML_BYTES / 4,
        MAX_YAML_BYTES / 2,
        MAX_YAML_BYTES,
    ];
    println!("Mesh::from_yaml, median of {runs} runs (release timings vary with the machine)");
    for (name, make) in shapes() {
        let mut line = format!("{name:<38}");
        for size in sizes {
            let text = make(size);
            let mut times: Vec<Duration> = (0..runs)
                .map(|_| {
                    let started = Instant::now();
                    let _ = std::hint::black_box(Mesh::from_yaml(
                        std::hint::black_box(&text),
                        &meshca::registry(),
                    ));
                    started.elapsed()
                })
                .collect();
            times.sort_unstable();
            let median = times[times.len() / 2];
            line.push_str(&format!(
                "  {:>4} KiB {:>9.2} ms",
                text.len() / 1024,
                median.as_secs_f64() * 1e3
            ));
        }
        println!("{line}");
    }
    Ok(())
}

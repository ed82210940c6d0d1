//! Smoke test of `meshca-bench replicas` with 3 replicas, 2 rounds (a second or two): every
//! figure is reported and each round ends with one builtin CA and one bootstrap TLS CA. It runs
//! the `meshca` binary next to `meshca-bench` (`cargo test --workspace` builds both). No timing
//! is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_replicas_reports_one_ca_per_round() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshca-bench"))
        .args(["replicas", "--replicas", "3", "--rounds", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replicas bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "round 2: all ready in",
        "lost the race",
        "builtin CAs served 1, bootstrap TLS CAs 1",
        "one builtin CA served by all replicas in 2 of 2 rounds, one bootstrap TLS CA in 2 of 2",
    ] {
        assert!(stdout.contains(figure), "{figure:?} missing in:\n{stdout}");
    }
}

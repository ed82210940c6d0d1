//! Smoke test of `meshca-bench rotation`: it runs and reports every figure. No timing
//! is asserted (benchmarks are not part of the test suite).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_rotation_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_meshca-bench"))
        .args([
            "rotation",
            "--identities",
            "200",
            "--lifetime-secs",
            "3",
            "--json-out",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rotation bench failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("--json-out is one JSON object");
    for key in [
        "identities",
        "lifetime_s",
        "register_s",
        "idle_rss_mib",
        "rotation_wall_s",
        "rotations_per_s_mean",
        "rotations_per_s_max_second",
        "max_to_mean_ratio",
        "peak_rss_mib",
        "errors",
        "cores",
    ] {
        assert!(v[key].is_number(), "{key} missing or not a number in {v}");
    }
    assert_eq!(v["identities"], 200);
    assert_eq!(v["lifetime_s"], 3);
    assert_eq!(v["errors"], 0);
}

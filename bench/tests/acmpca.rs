//! Smoke test of `meshca-bench acmpca` with a few identities (a few seconds): it runs against
//! moto (`MESHCA_PYTHON`, as the acmpca suites) and reports every figure. No timing is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_acmpca_reports_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshca-bench"))
        .args([
            "acmpca",
            "--seconds",
            "1",
            "--concurrency",
            "1",
            "--identities",
            "20",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "acmpca bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "certs/s",
        "p99",
        "rotated: 20 of 20",
        "IssueCertificate reaching moto:",
        "busiest 1 s window",
        "throttled answers",
        "retries (attempts - certificates)",
        "errors: 0",
    ] {
        assert!(stdout.contains(figure), "{figure:?} missing in:\n{stdout}");
    }
}

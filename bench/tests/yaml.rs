//! Smoke test of `meshca-bench yaml --runs 1`: every hostile shape is parsed at every size up to
//! the cap and a figure printed for each. No timing is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_yaml_prints_a_time_for_every_shape_and_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshca-bench"))
        .args(["yaml", "--runs", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for row in rows {
        assert_eq!(row.matches(" ms").count(), 4, "{row}");
        assert!(
            row.contains(" 512 KiB") || row.contains(" 511 KiB"),
            "{row}"
        );
    }
}

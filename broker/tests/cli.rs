//! The command line: `check-config`, `--print-default-config`, and a bad
//! configuration file refusing to start.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

use std::process::Command;

fn edgemq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgemq"))
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nmax_connections = 10\n[limits]\nmax_inflihgt = 3\n",
    )
    .expect("write");
    let out = edgemq()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:4: key `limits.max_inflihgt`", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn default_config_prints_and_checks_clean() {
    let out = edgemq()
        .arg("--print-default-config")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("max_inflight = 100"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("default.toml");
    std::fs::write(&path, text).expect("write");
    let out = edgemq()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn broker_refuses_to_start_with_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sys]\ninterval_secs = -1\n").expect("write");
    let out = edgemq()
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2: key `sys.interval_secs`"), "{stderr}");
}

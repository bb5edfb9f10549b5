//! The `edgemq` command line: embedded defaults, `--print-default-config`,
//! `check-config`, and configuration errors that name the file, line and key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgemq_tests::{edgemq_command, run};

fn edgemq(args: &[&str]) -> std::process::Output {
    run(edgemq_command().args(args), Duration::from_secs(60)).unwrap()
}

#[test]
fn printed_defaults_pass_check_config() {
    let out = edgemq(&["--print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for section in [
        "[server]",
        "[[listener]]",
        "[limits]",
        "[storage]",
        "[sys]",
        "[log]",
    ] {
        assert!(
            text.contains(section),
            "{section} missing from the default config"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, text).unwrap();
    let out = edgemq(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cases = [
        (
            "[limits]\nmax_inflight = 10\nmax_packet_size = \"big\"\n",
            "3",
            "max_packet_size",
        ),
        (
            "[server]\nworker_threads = 1\n\n[storage]\ndurabilty = \"sync\"\n",
            "5",
            "durabilty",
        ),
        (
            "[[listener]]\naddress = \"not an address\"\n",
            "2",
            "address",
        ),
    ];
    for (text, line, key) in cases {
        std::fs::write(&path, text).unwrap();
        for args in [
            vec!["check-config", path.to_str().unwrap()],
            vec!["--config", path.to_str().unwrap()],
        ] {
            let out = edgemq(&args);
            assert!(!out.status.success(), "{args:?} accepted {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("bad.toml"), "no file name in {err}");
            assert!(err.contains(line), "no line {line} in {err}");
            assert!(err.contains(key), "no key {key} in {err}");
        }
    }
}

#[test]
fn invalid_storage_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[log]\nlevel = \"info\"\n\n[storage]\nsegment_size = 1000\n",
    )
    .unwrap();
    let out = edgemq(&["check-config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.toml:5") && err.contains("storage.segment_size"),
        "{err}"
    );
}

#[test]
fn check_config_reads_the_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    edgemq_tests::make_pki(dir.path());
    let path = dir.path().join("tls.toml");
    let listener = |cert: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8883\"\nprotocol = \"mqtts\"\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path().join(cert).to_str().unwrap(),
            dir.path().join("server.key").to_str().unwrap()
        )
    };
    std::fs::write(&path, listener("server.pem")).unwrap();
    let out = edgemq(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&path, listener("missing.pem")).unwrap();
    let out = edgemq(&["check-config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listener 127.0.0.1:8883") && err.contains("missing.pem"),
        "{err}"
    );
}

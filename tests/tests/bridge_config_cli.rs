//! The bridge keys of issue 12 (`dead_letter_topic`, `orphan_lanes`) in
//! `edgemq --print-default-config` and checked by `edgemq check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgemq_tests::{edgemq_command, run};

fn edgemq(args: &[&str]) -> std::process::Output {
    run(edgemq_command().args(args), Duration::from_secs(60)).unwrap()
}

/// The default config with its commented `[[bridge]]` example turned on.
fn default_with_bridge_example() -> String {
    let out = edgemq(&["--print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut in_bridge = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("# Cloud uplink bridges") {
            in_bridge = true;
            lines.push(line.to_string());
            continue;
        } else if in_bridge && !line.starts_with('#') {
            in_bridge = false;
        }
        match line.strip_prefix("# ") {
            Some(rest) if in_bridge && !rest.starts_with('#') => lines.push(rest.to_string()),
            _ => lines.push(line.to_string()),
        }
    }
    // The bridge tables must come last in TOML: move them after the rest.
    let start = lines.iter().position(|l| l == "[[bridge]]").unwrap();
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.is_empty() || l.starts_with("[log]"))
            .unwrap();
    let bridge: Vec<String> = lines.drain(start..end).collect();
    lines.extend(bridge);
    lines.join("\n") + "\n"
}

#[test]
fn default_config_documents_the_new_bridge_keys_and_they_check() {
    let text = default_with_bridge_example();
    assert!(text.contains("\ndead_letter_topic = "), "{text}");
    assert!(text.contains("\norphan_lanes = \"drain\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, &text).unwrap();
    let out = edgemq(&["check-config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_bridge_keys_name_file_line_and_key() {
    let base = "[[bridge]]\nname = \"cloud\"\naddress = \"127.0.0.1:1883\"\nclient_id = \"gw\"\n";
    let rule = "\n[[bridge.forward]]\nfilter = \"sensors/#\"\n";
    let cases = [
        ("orphan_lanes = \"sideways\"\n", "5", "orphan_lanes"),
        ("dead_letter_topic = \"dead/#\"\n", "5", "dead_letter_topic"),
        (
            "dead_letter_topic = \"$SYS/dead\"\n",
            "5",
            "dead_letter_topic",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (extra, line, key) in cases {
        let text = format!("{base}{extra}{rule}");
        std::fs::write(&path, &text).unwrap();
        let out = edgemq(&["check-config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "accepted {text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml"), "no file name in {err}");
        assert!(err.contains(&format!(":{line}")), "no line {line} in {err}");
        assert!(err.contains(key), "no key {key} in {err}");
    }
}

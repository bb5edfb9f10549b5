//! Interoperability with paho-mqtt (Python), an independent MQTT client
//! implementation: QoS 0/1/2 in 3.1.1 and 5, v5 will delay interval with a
//! reconnect cancelling it, and v5 properties passed through.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

use std::process::Command;
use std::time::Duration;

use edgemq_tests::{require_tool, run, Broker};

fn paho(check: &str) {
    require_tool("python3");
    let probe = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .output();
    assert!(
        probe.map(|o| o.status.success()).unwrap_or(false),
        "paho-mqtt is not installed: run scripts/install-deps.sh"
    );
    let broker = Broker::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/paho_interop.py");
    let out = run(
        Command::new("python3").args([script, &broker.port.to_string(), check]),
        Duration::from_secs(60),
    )
    .expect("paho script");
    assert!(
        out.status.success(),
        "paho {check} failed: {}{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
}

#[test]
fn paho_qos_levels_both_versions() {
    paho("qos");
}

#[test]
fn paho_will_delay_cancelled_by_reconnect() {
    paho("will");
}

#[test]
fn paho_v5_properties_pass_through() {
    paho("props");
}

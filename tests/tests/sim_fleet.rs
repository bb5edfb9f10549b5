//! firmware-sim end to end: a fleet of 200 devices with frequent power cuts
//! against a real broker, verified by sequence number: every QoS 1 reading
//! the broker acknowledged must be delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_support;

use std::process::Command;

use client_support::{binary, free_port, TestBroker};

fn scenario(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cuts.toml");
    std::fs::write(
        &path,
        "duration_secs = 4\nconnect_rate = 400\n\
         [[group]]\nname = \"meter\"\ndevices = 150\nsensor = \"power\"\ninterval_ms = 100\njitter_ms = 20\nqos = 1\n\
         [[group]]\nname = \"hum\"\ndevices = 50\nsensor = \"humidity\"\ninterval_ms = 150\nformat = \"json\"\nqos = 1\nwill = true\n\
         [faults]\npower_loss_per_min = 12.0\npower_off_ms = 300\nnetwork_flap_per_min = 6.0\nflap_down_ms = 300\n\
         slow_consumers = 1\nslow_consumer_delay_ms = 2\n",
    )
    .unwrap();
    path
}

#[test]
fn edgemq_fleet_with_power_cuts_loses_no_acknowledged_reading() {
    fleet_with_power_cuts(TestBroker::edgemq());
}

#[test]
fn mosquitto_fleet_with_power_cuts_loses_no_acknowledged_reading() {
    fleet_with_power_cuts(TestBroker::mosquitto());
}

fn fleet_with_power_cuts(broker: TestBroker) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("firmware-sim", "firmware-sim"))
        .args([
            "--port",
            &broker.port().to_string(),
            "--verify",
            "--json",
            "--drain-secs",
            "20",
            "--scenario",
        ])
        .arg(scenario(dir.path()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    let n = |k: &str| report[k].as_u64().unwrap();
    let v = |k: &str| report["verify"][k].as_u64().unwrap();
    assert_eq!(n("devices"), 200);
    assert!(
        n("power_cuts") > 0 && n("flaps") > 0,
        "faults were injected: {report}"
    );
    assert!(n("acked") > 1000, "the fleet published: {report}");
    assert_eq!(v("lost"), 0, "acknowledged readings lost: {report}");
    assert!(v("delivered") >= n("acked"), "{report}");
    assert!(
        out.status.success(),
        "exit status {:?}: {stderr}",
        out.status
    );
}

#[test]
fn verify_fails_when_the_broker_is_unreachable() {
    let port = free_port().to_string();
    let out = Command::new(binary("firmware-sim", "firmware-sim"))
        .args([
            "--port",
            &port,
            "--devices",
            "1",
            "--duration",
            "1",
            "--verify",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(binary("firmware-sim", "firmware-sim"))
        .args([
            "--port",
            &port,
            "--devices",
            "2",
            "--duration",
            "1",
            "--drain-secs",
            "0",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "no device connected");
}

/// `--verify-host/--verify-port`: devices publish to an edge broker that
/// bridges to a second ("cloud") broker, where the verifier subscribes.
/// Mosquitto's own bridge stands in until edgemq's bridge lands.
#[test]
fn verify_on_a_second_broker_through_a_bridge() {
    let cloud = client_support::Mosquitto::start(free_port());
    let extra = format!(
        "allow_anonymous true\nconnection cloud\naddress 127.0.0.1:{}\ntopic sensors/# out 1\n\
         cleansession false\nclientid edge-bridge\n",
        cloud.port
    );
    let edge =
        client_support::Mosquitto::start_with(free_port(), &extra, tempfile::tempdir().unwrap());
    let out = Command::new(binary("firmware-sim", "firmware-sim"))
        .args([
            "--port",
            &edge.port.to_string(),
            "--verify-port",
            &cloud.port.to_string(),
        ])
        .args([
            "--devices",
            "50",
            "--duration",
            "2",
            "--qos",
            "1",
            "--verify",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    assert!(report["acked"].as_u64().unwrap() >= 50, "{report}");
    assert_eq!(report["verify"]["lost"], 0, "{report}");
    let delivered = report["verify"]["delivered"].as_u64().unwrap();
    assert!(delivered >= report["acked"].as_u64().unwrap(), "{report}");
    assert!(out.status.success(), "{stderr}");
}

//! Per-lane store quotas (issue 12): a long cloud outage fills a bridge
//! lane only up to its own quota, with the bridge's own overflow policy,
//! and never takes the store from a local persistent session. Real edgemq,
//! a real Mosquitto as the cloud (down while the backlog is queued),
//! mosquitto_pub/sub as the clients.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgemq_tests::{require_tool, Broker, Mosquitto, Sub};

fn config(cloud_port: u16, lane: &str) -> String {
    format!(
        r#"
[sys]
interval_secs = 1

[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 200
{lane}

[[bridge.forward]]
filter = "sensors/#"
remote_prefix = "gw-0001/"
qos = 1
"#
    )
}

/// Publishes `0..n` as QoS 1 messages on `topic`; mosquitto_pub exits once
/// every PUBACK has arrived, and fails if one does not.
fn publish_numbers(port: u16, topic: &str, n: usize) {
    require_tool("mosquitto_pub");
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..n {
        writeln!(stdin, "{i}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the retained `$SYS` topic reads `want`; returns the last value.
fn wait_sys(port: u16, topic: &str, want: &str) -> String {
    let mut sub = Sub::spawn(port, &["-t", topic]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline && last != want {
        for line in sub.messages(1, Duration::from_secs(1)) {
            last = line.rsplit(' ').next().unwrap_or_default().to_string();
        }
    }
    last
}

fn lines(topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{topic} {i}")).collect()
}

#[test]
fn a_drop_oldest_lane_keeps_its_newest_messages_within_its_quota() {
    let mut cloud = Mosquitto::start("max_queued_messages 100000");
    cloud.stop();
    let mut edge = Broker::start_with(Some(&config(
        cloud.port,
        "max_stored_messages = 10\noverflow = \"drop-oldest\"",
    )));
    publish_numbers(edge.port, "sensors/t", 30);
    let dropped = wait_sys(edge.port, "$SYS/broker/store/dropped_oldest", "20");
    assert_eq!(dropped, "20", "edge log:\n{}", edge.log());
    // What the store holds for the lane is what survives a restart.
    assert_eq!(edge.terminate(), Some(0), "{}", edge.log());
    cloud.start_again();
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/#"]);
    sub.wait_subscribed();
    edge.restart();
    let got = sub.messages(10, Duration::from_secs(30));
    assert_eq!(
        got,
        lines("gw-0001/sensors/t", 20..30),
        "edge log:\n{}",
        edge.log()
    );
    // Nothing older comes after them.
    assert!(sub.messages(1, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_full_reject_lane_does_not_take_the_store_from_a_local_session() {
    let mut cloud = Mosquitto::start("max_queued_messages 100000");
    cloud.stop();
    let mut edge = Broker::start_with(Some(&config(
        cloud.port,
        "max_stored_messages = 10\noverflow = \"reject\"",
    )));
    // A local persistent subscriber, offline while the messages arrive.
    let mut local = Sub::spawn(
        edge.port,
        &["-q", "1", "-c", "-i", "local-dashboard", "-t", "sensors/#"],
    );
    local.wait_subscribed();
    local.interrupt();
    // Every message is acknowledged: the local session takes all 30, the
    // lane only the first 10 (the rest are counted, not stored for it).
    publish_numbers(edge.port, "sensors/t", 30);
    let refused = wait_sys(edge.port, "$SYS/broker/store/quota_rejected", "20");
    assert_eq!(refused, "20", "edge log:\n{}", edge.log());
    assert_eq!(edge.terminate(), Some(0), "{}", edge.log());
    cloud.start_again();
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/#"]);
    sub.wait_subscribed();
    edge.restart();
    let got = sub.messages(10, Duration::from_secs(30));
    assert_eq!(
        got,
        lines("gw-0001/sensors/t", 0..10),
        "edge log:\n{}",
        edge.log()
    );
    assert!(sub.messages(1, Duration::from_secs(2)).is_empty());
    let mut local = Sub::spawn(
        edge.port,
        &["-q", "1", "-c", "-i", "local-dashboard", "-t", "sensors/#"],
    );
    let got = local.messages(30, Duration::from_secs(30));
    assert_eq!(got, lines("sensors/t", 0..30), "edge log:\n{}", edge.log());
}

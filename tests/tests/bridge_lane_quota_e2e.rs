//! Per-lane store quotas (issue 12): a long cloud outage fills a bridge
//! lane only up to its own quota, with the bridge's own overflow policy,
//! and never takes the store from a local persistent session. Real edgemq,
//! a real Mosquitto as the cloud (down while the backlog is queued),
//! mosquitto_pub/sub as the clients.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edgemq_tests::{mosquitto_pub_lines, wait_sys, Broker, Mosquitto, Sub};

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
    mosquitto_pub_lines(
        edge.port,
        "sensors/t",
        &(0..30).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
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
    mosquitto_pub_lines(
        edge.port,
        "sensors/t",
        &(0..30).map(|i| i.to_string()).collect::<Vec<_>>(),
    );
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

//! The JSON API's flow figures (issue 16) against the real broker binary:
//! a client's unacknowledged (in-flight) messages in `/api/v1/clients`, and
//! the age of the oldest message a bridge still owes the cloud in
//! `/api/v1/bridges`, with a raw MQTT client that never acknowledges and a
//! bridge whose cloud is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;

use std::process::Command;
use std::time::{Duration, Instant};

use edgemq::protocol::{Packet, QoS};
use edgemq_tests::{free_port, mosquitto_pub, require_tool, run, wait_until, Broker};
use security_support::*;

fn api(port: u16, path: &str) -> serde_json::Value {
    require_tool("curl");
    let out = run(
        Command::new("curl")
            .args(["-s", "-m", "10"])
            .arg(format!("http://127.0.0.1:{port}/api/v1/{path}")),
        Duration::from_secs(15),
    )
    .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn clients_show_their_in_flight_count_and_bridges_their_oldest_message_age() {
    let http = free_port();
    // Nothing listens on the cloud's port: the bridge's messages wait.
    let cloud = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [[bridge]]\nname = \"cloud\"\naddress = \"127.0.0.1:{cloud}\"\nclient_id = \"gw-ages\"\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 500\n\
         [[bridge.forward]]\nfilter = \"sensors/#\"\nremote_prefix = \"gw/\"\nqos = 1\n"
    )));
    let port = broker.port;
    // A QoS 1 subscriber that receives and never acknowledges.
    let mut slow = Raw::accepted(port, connect_packet(V5, "slow-reader"));
    assert_eq!(slow.subscribe(&["t/#"], QoS::AtLeastOnce), [1]);
    for i in 0..3 {
        let out = mosquitto_pub(port, &["-q", "1", "-t", &format!("t/{i}"), "-m", "x"]);
        assert!(out.status.success());
    }
    for _ in 0..3 {
        match slow.next(Duration::from_secs(10)) {
            Some(Packet::Publish(_)) => {}
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    let sent = Instant::now();
    for i in 0..2 {
        let out = mosquitto_pub(port, &["-q", "1", "-t", &format!("sensors/{i}"), "-m", "1"]);
        assert!(out.status.success());
    }

    let clients = api(http, "clients");
    let slow_entry = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "slow-reader")
        .cloned()
        .unwrap_or_else(|| panic!("slow-reader not listed: {clients}"));
    assert_eq!(slow_entry["inflight"], 3, "{slow_entry}");
    assert_eq!(slow_entry["queued"], 0, "{slow_entry}");

    // The bridge's backlog ages while its cloud is away.
    let aged = wait_until(Duration::from_secs(20), || {
        api(http, "bridges")["items"][0]["oldest_message_age_secs"]
            .as_u64()
            .is_some_and(|age| age >= 3)
    });
    let bridge = api(http, "bridges")["items"][0].clone();
    assert!(aged, "no aging backlog: {bridge}");
    let age = bridge["oldest_message_age_secs"].as_u64().unwrap();
    // An upper bound off by at most the one-second sampling.
    assert!(age <= sent.elapsed().as_secs() + 2, "age {age}: {bridge}");
    assert_eq!(bridge["link"], "down", "{bridge}");
    drop(slow);
}

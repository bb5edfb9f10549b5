//! Review finding M3: one client must not be able to fill the shared flash
//! store, nor the session table, at everyone else's expense. Against the
//! real broker binary with raw MQTT clients over 127.0.0.1:
//! - retained messages (which survive restarts) use at most a quarter of the
//!   store, so a retained flood neither wears the card (before: 60 retained
//!   messages of 60 KB into a 2 MiB store made it rewrite itself, 960
//!   segment erases and 59 MB written for 3.6 MB) nor starves a persistent
//!   subscriber's queue: the legitimate sensor's QoS 1 messages are still
//!   acknowledged with success and delivered;
//! - `[limits] max_sessions` bounds the sessions held (connected or parked):
//!   a new client id beyond it is refused (v5 0x97, 3.1.1 0x03), a client
//!   that has a session can always come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;

use std::time::Duration;

use bytes::Bytes;
use edgemq::protocol::{Packet, Publish, QoS};
use edgemq_tests::{wait_sys, Broker};
use security_support::*;

fn persistent(
    version: edgemq::protocol::ProtocolVersion,
    client_id: &str,
) -> edgemq::protocol::Connect {
    let mut c = connect_packet(version, client_id);
    c.clean_start = false;
    if version == V5 {
        c.properties.session_expiry_interval = Some(600);
    }
    c
}

/// Sends one QoS 1 PUBLISH and returns the PUBACK's reason code (None: no
/// PUBACK, e.g. the broker closed the connection).
fn publish_qos1(client: &mut Raw, pkid: u16, topic: &str, payload: &[u8]) -> Option<u8> {
    client.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        pkid,
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    }));
    match client.next(Duration::from_secs(10)) {
        Some(Packet::PubAck(a)) => Some(a.reason_code),
        _ => None,
    }
}

#[test]
fn a_retained_flood_leaves_room_for_a_persistent_subscribers_queue() {
    // A 2 MiB store; the default retained bounds (10,000 messages, 64 MiB)
    // are far above it.
    let config =
        "[storage]\ncapacity = 2097152\nsegment_size = 65536\n\n[sys]\ninterval_secs = 1\n";
    let broker = Broker::start_with(Some(config));
    let port = broker.port;
    let mut historian = Raw::accepted(port, persistent(V5, "historian"));
    assert_eq!(historian.subscribe(&["sensors/#"], QoS::AtLeastOnce), [1]);
    drop(historian);

    // An anonymous client stores 60 retained messages of 60 KB (3.6 MB).
    let mut flooder = Raw::accepted(port, connect_packet(V5, "flooder"));
    let blob = vec![b'x'; 60_000];
    for i in 0..60 {
        flooder.publish(&format!("junk/{i}"), &blob, QoS::AtMostOnce, true);
    }
    flooder.ping();
    // The retained set fits a quarter of the store: nothing is reclaimed.
    std::thread::sleep(Duration::from_millis(1500));
    let erases = wait_sys(port, "$SYS/broker/store/erases", "0");
    assert_eq!(
        erases, "0",
        "the retained flood made the store erase segments"
    );

    // The sensor's readings for the offline historian are still accepted.
    let mut sensor = Raw::accepted(port, connect_packet(V5, "sensor"));
    for i in 1..=3u16 {
        let code = publish_qos1(&mut sensor, i, "sensors/t1", format!("r{i}").as_bytes());
        assert_eq!(
            code,
            Some(0),
            "reading {i} was not acknowledged with success; log:\n{}",
            broker.log()
        );
    }
    let mut historian = Raw::accepted(port, persistent(V5, "historian"));
    let got: Vec<Bytes> = historian
        .publishes(Duration::from_secs(3))
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    assert_eq!(got, [&b"r1"[..], b"r2", b"r3"], "log:\n{}", broker.log());
}

#[test]
fn sessions_beyond_max_sessions_are_refused_and_existing_ones_come_back() {
    let broker = Broker::start_with(Some("[limits]\nmax_sessions = 3\n"));
    let port = broker.port;
    for id in ["s1", "s2", "s3"] {
        let c = Raw::accepted(port, persistent(V5, id));
        drop(c);
    }
    // Three parked sessions: a fourth client id is refused, in both versions
    // and for a clean session too (it would be held while connected).
    let (_c, code, _) = Raw::connect(port, persistent(V5, "s4"));
    assert_eq!(code, 0x97, "a new session beyond max_sessions was accepted");
    let (_c, code, _) = Raw::connect(port, persistent(V311, "s5"));
    assert_eq!(code, 0x03, "3.1.1 answers 'server unavailable'");
    let (_c, code, _) = Raw::connect(port, connect_packet(V5, "s6"));
    assert_eq!(code, 0x97);
    // A client with a session comes back to it.
    let (_c, code, present) = Raw::connect(port, persistent(V5, "s1"));
    assert_eq!((code, present), (0, true), "log:\n{}", broker.log());
    assert!(
        broker.log().contains("session limit reached"),
        "the refusal is logged; log:\n{}",
        broker.log()
    );
}

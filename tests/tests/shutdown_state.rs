//! Shutdown and restart keep the broker's promises (issue 11, review
//! finding M3), with the real binary and its image file:
//! - SIGTERM makes what is queued to the store durable before the process
//!   exits (here a will published by the shutdown itself, while strace
//!   slows the store's writes down as a slow SD card would);
//! - a session's expiry counts from its client's disconnect, across
//!   restarts, instead of starting again at every restore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw_client;

use std::time::Duration;

use edgemq::protocol::{LastWill, QoS};
use edgemq_tests::Broker;
use raw_client::{connect_packet, delay_pwrites, park_subscriber, Raw, V311, V5};

#[test]
fn sigterm_makes_queued_store_writes_durable_before_exit() {
    let mut broker = Broker::start();
    park_subscriber(broker.port, V311, "heir", "will/#");
    let mut connect = connect_packet(V311, "mortal", true);
    connect.will = Some(LastWill {
        topic: "will/mortal".into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_mortal, _) = Raw::connect_with(broker.port, connect);
    let mut strace = delay_pwrites(broker.pid(), Duration::from_secs(1));
    // The shutdown closes "mortal" without its DISCONNECT: its will goes
    // out, to the offline persistent "heir", so into the store.
    let code = broker.terminate();
    let _ = strace.kill();
    let _ = strace.wait();
    assert_eq!(code, Some(0), "log:\n{}", broker.log());
    let stopped_log = broker.log();
    broker.restart();
    let (mut heir, present) = Raw::connect(broker.port, V311, "heir", false);
    assert!(present);
    let got = heir.drain(Duration::from_secs(10), |got| !got.is_empty());
    assert_eq!(
        got,
        ["gone"],
        "the will published at shutdown was not stored; log of the stopped run:\n{stopped_log}"
    );
}

#[test]
fn session_expiry_counts_time_across_restarts() {
    let mut broker = Broker::start();
    let mut short = connect_packet(V5, "short", false);
    short.properties.session_expiry_interval = Some(3);
    let (mut c, _) = Raw::connect_with(broker.port, short.clone());
    c.subscribe("e/#", QoS::AtLeastOnce);
    c.disconnect();
    // A long-lived session next to it must survive the same restarts.
    park_subscriber(broker.port, V5, "long", "e/#");
    // Two restarts, each sooner than the 3 s expiry, more than 3 s in all.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(broker.terminate(), Some(0));
        broker.restart();
    }
    let (_c, present) = Raw::connect_with(broker.port, short);
    assert!(
        !present,
        "a session with a 3 s expiry outlived 4 s offline; log:\n{}",
        broker.log()
    );
    let (_l, present) = Raw::connect(broker.port, V5, "long", false);
    assert!(present, "log:\n{}", broker.log());
}

//! QoS 2 exactly-once across a broker crash (issue 11, review finding D3),
//! with the real binary, a real image file and kill -9.
//!
//! The window between PUBCOMP and the durable release record is widened
//! with strace, which delays every `pwrite64` of the broker (only the store
//! thread writes with it) by 2 s: the test then kills the broker the moment
//! PUBCOMP arrives.

#![allow(clippy::unwrap_used)]

mod raw_client;

use std::time::Duration;

use edgemq::protocol::{Packet, QoS};
use edgemq_tests::Broker;
use raw_client::{ack, delay_pwrites, publish, Raw, V311};

#[test]
fn pubcomp_waits_for_the_durable_release() {
    let mut broker = Broker::start();
    // A sensor with a persistent session completes QoS 2 pkid 1.
    let (mut sensor, _) = Raw::connect(broker.port, V311, "sensor", false);
    sensor.send(publish("t/a", QoS::ExactlyOnce, 1, "A"));
    assert!(matches!(sensor.recv(), Some(Packet::PubRec(r)) if r.pkid == 1));
    let mut strace = delay_pwrites(broker.pid(), Duration::from_secs(2));
    sensor.send(Packet::PubRel(ack(1)));
    assert!(
        matches!(sensor.recv(), Some(Packet::PubComp(c)) if c.pkid == 1),
        "no PUBCOMP; log:\n{}",
        broker.log()
    );
    // The client holds PUBCOMP: the id is free for it. Crash now.
    broker.kill9();
    let _ = strace.kill();
    let _ = strace.wait();
    broker.restart();

    let (mut sub, _) = Raw::connect(broker.port, V311, "watcher", true);
    sub.subscribe("t/#", QoS::ExactlyOnce);
    // A device that restarts its packet ids reuses 1 for a new message.
    let (mut sensor, present) = Raw::connect(broker.port, V311, "sensor", false);
    assert!(present);
    sensor.send(publish("t/a", QoS::ExactlyOnce, 1, "B"));
    assert!(matches!(sensor.recv(), Some(Packet::PubRec(r)) if r.pkid == 1));
    sensor.send(Packet::PubRel(ack(1)));
    assert!(matches!(sensor.recv(), Some(Packet::PubComp(c)) if c.pkid == 1));
    let got = sub.drain(Duration::from_secs(10), |got| !got.is_empty());
    assert_eq!(
        got,
        ["B"],
        "the new message with a reused packet id was swallowed; log:\n{}",
        broker.log()
    );
}

/// M6: a 3.1.1 client cannot leave more than `[limits] max_qos2_pending`
/// QoS 2 ids (default 100) awaiting PUBREL; v5 has its Receive Maximum.
#[test]
fn v311_pending_qos2_ids_are_bounded() {
    let broker = Broker::start();
    let (mut p, _) = Raw::connect(broker.port, V311, "hoarder", false);
    let mut pubrecs = 0;
    for i in 1..=101u16 {
        p.send(publish("free/x", QoS::ExactlyOnce, i, "x"));
        match p.recv() {
            Some(Packet::PubRec(r)) if r.pkid == i => pubrecs += 1,
            _ => break,
        }
    }
    assert_eq!(pubrecs, 100, "log:\n{}", broker.log());
    assert!(
        p.recv_until_closed().is_empty(),
        "the connection stays open"
    );
    // Releasing makes room again.
    let (mut p, present) = Raw::connect(broker.port, V311, "hoarder", false);
    assert!(present);
    p.send(Packet::PubRel(ack(1)));
    assert!(matches!(p.recv(), Some(Packet::PubComp(c)) if c.pkid == 1));
    p.send(publish("free/x", QoS::ExactlyOnce, 101, "x"));
    assert!(matches!(p.recv(), Some(Packet::PubRec(r)) if r.pkid == 101));
}

//! QoS 2 exactly-once across a broker crash (issue 11, review finding D3),
//! with the real binary, a real image file and kill -9.
//!
//! The window between PUBCOMP and the durable release record is widened
//! with strace, which delays every `pwrite64` of the broker (only the store
//! thread writes with it) by 2 s: the test then kills the broker the moment
//! PUBCOMP arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw_client;

use std::time::Duration;

use edgemq::protocol::{Packet, QoS};
use edgemq_tests::Broker;
use raw_client::{ack, delay_pwrites, park_subscriber, publish, Raw, V311};

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

/// W7: after kill -9, the messages a persistent subscriber had in flight
/// come back with DUP=1 and their original packet ids, and a QoS 2 message
/// it had already PUBRECed comes back as PUBREL only.
#[test]
fn inflight_messages_keep_their_packet_ids_across_a_crash() {
    let mut broker = Broker::start();
    park_subscriber(broker.port, V311, "barrier", "barrier/#");
    let (mut s, _) = Raw::connect(broker.port, V311, "w7-sub", false);
    s.subscribe("t/#", QoS::ExactlyOnce);
    let (mut p, _) = Raw::connect(broker.port, V311, "w7-pub", true);
    p.send(publish("t/a", QoS::AtLeastOnce, 1, "q1"));
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    p.send(publish("t/a", QoS::ExactlyOnce, 2, "q2"));
    assert!(matches!(p.recv(), Some(Packet::PubRec(_))));
    p.send(Packet::PubRel(ack(2)));
    assert!(matches!(p.recv(), Some(Packet::PubComp(_))));
    p.send(publish("t/a", QoS::ExactlyOnce, 3, "q3"));
    assert!(matches!(p.recv(), Some(Packet::PubRec(_))));
    p.send(Packet::PubRel(ack(3)));
    assert!(matches!(p.recv(), Some(Packet::PubComp(_))));

    // The subscriber acknowledges nothing except q2's PUBREC.
    let mut sent = Vec::new();
    while sent.len() < 3 {
        match s.recv() {
            Some(Packet::Publish(m)) => sent.push((m.payload.clone(), m.pkid, m.qos)),
            other => panic!("expected the three messages, got {other:?}"),
        }
    }
    let q2 = sent.iter().find(|m| m.0.as_ref() == b"q2").unwrap().1;
    s.send(Packet::PubRec(ack(q2)));
    assert!(matches!(s.recv(), Some(Packet::PubRel(r)) if r.pkid == q2));
    // A PUBACK after everything above: the store thread has handled the
    // in-flight records (queued before this append) when it arrives.
    p.send(publish("barrier/x", QoS::AtLeastOnce, 4, "b"));
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    broker.restart();

    let (mut s, present) = Raw::connect(broker.port, V311, "w7-sub", false);
    assert!(present);
    let mut resent = Vec::new();
    while resent.len() < 3 {
        match s.recv() {
            Some(Packet::Publish(m)) => resent.push(format!(
                "PUBLISH {} pkid={} dup={}",
                String::from_utf8_lossy(&m.payload),
                m.pkid,
                m.dup
            )),
            Some(Packet::PubRel(r)) => resent.push(format!("PUBREL pkid={}", r.pkid)),
            other => panic!("got {other:?} after {resent:?}; log:\n{}", broker.log()),
        }
    }
    let pkid = |name: &str| {
        sent.iter()
            .find(|m| m.0.as_ref() == name.as_bytes())
            .unwrap()
            .1
    };
    assert_eq!(
        resent,
        [
            format!("PUBLISH q1 pkid={} dup=true", pkid("q1")),
            format!("PUBREL pkid={}", pkid("q2")),
            format!("PUBLISH q3 pkid={} dup=true", pkid("q3")),
        ]
    );
    // Completing the exchange delivers nothing twice.
    s.send(Packet::PubAck(ack(pkid("q1"))));
    s.send(Packet::PubComp(ack(pkid("q2"))));
    s.send(Packet::PubRec(ack(pkid("q3"))));
    assert!(matches!(s.recv(), Some(Packet::PubRel(r)) if r.pkid == pkid("q3")));
    s.send(Packet::PubComp(ack(pkid("q3"))));
    let more = s.drain(Duration::from_secs(2), |_| false);
    assert!(more.is_empty(), "delivered again: {more:?}");
}

/// D2, the crash between the two records: the pending packet id must never
/// be on disk without its message. strace delays every pwrite64 by 2 s and
/// the broker is killed as soon as the first write after the PUBLISH has
/// completed, so exactly one of the two records is in the file.
#[test]
fn a_pending_qos2_id_is_never_stored_without_its_message() {
    let mut broker = Broker::start();
    park_subscriber(broker.port, V311, "d2c-sub", "t/#");
    park_subscriber(broker.port, V311, "barrier", "barrier/#");
    let (mut p, _) = Raw::connect(broker.port, V311, "d2c-pub", false);
    // Everything so far is written once this PUBACK arrives.
    p.send(publish("barrier/x", QoS::AtLeastOnce, 1, "b"));
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    let trace = broker.data_dir().with_file_name("strace.out");
    let mut strace = raw_client::trace_pwrites(broker.pid(), Duration::from_secs(2), &trace);
    p.send(publish("t/a", QoS::ExactlyOnce, 7, "M"));
    let written = edgemq_tests::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&trace).is_ok_and(|t| {
            t.lines()
                .any(|l| l.contains("pwrite64(") && l.contains(") = "))
        })
    });
    broker.kill9();
    let _ = strace.kill();
    let _ = strace.wait();
    assert!(written, "no pwrite completed");
    broker.restart();

    // The publisher never got PUBREC: it retransmits.
    let (mut p, _) = Raw::connect(broker.port, V311, "d2c-pub", false);
    p.send(Packet::Publish(edgemq::protocol::Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        topic: "t/a".into(),
        pkid: 7,
        payload: "M".into(),
        ..Default::default()
    }));
    assert!(matches!(p.recv(), Some(Packet::PubRec(r)) if r.pkid == 7 && r.reason_code == 0));
    p.send(Packet::PubRel(ack(7)));
    assert!(matches!(p.recv(), Some(Packet::PubComp(c)) if c.pkid == 7));
    let (mut s, _) = Raw::connect(broker.port, V311, "d2c-sub", false);
    let got = s.drain(Duration::from_secs(10), |got| !got.is_empty());
    assert!(
        got.iter().any(|m| m.as_ref() == b"M"),
        "PUBRECed message lost: the pending id was stored without it; trace:\n{}",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
}

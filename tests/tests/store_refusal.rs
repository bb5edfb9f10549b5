//! A refused durable write (issue 11, review findings W2 and D2), against the
//! real broker with a small store and `overflow = "reject"` (the default):
//! - a v5 publisher gets PUBACK/PUBREC 0x97 (Quota exceeded) and keeps its
//!   connection;
//! - a 3.1.1 publisher gets no acknowledgement for the refused message, but
//!   the acknowledgements queued behind it that are ready still reach it
//!   before the connection closes;
//! - a retransmitted QoS 2 PUBLISH whose first copy was refused is stored
//!   (or refused again), never PUBRECed while the message is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw_client;

use std::time::Duration;

use edgemq::protocol::{Packet, Publish, QoS};
use edgemq_tests::Broker;
use raw_client::{ack, fill_store, park_subscriber, publish, Raw, SMALL_STORE, V311, V5};

#[test]
fn v5_refused_write_gets_quota_exceeded_and_keeps_the_connection() {
    let broker = Broker::start_with(Some(SMALL_STORE));
    park_subscriber(broker.port, V5, "w2-sub", "t/#");
    let (mut p, _) = Raw::connect(broker.port, V5, "w2-pub", true);
    let mut refused = None;
    for i in 1..=2000u16 {
        p.send(publish("t/a", QoS::AtLeastOnce, i, vec![b'x'; 1024]));
        match p.recv() {
            Some(Packet::PubAck(a)) if a.pkid == i && a.reason_code == 0 => {}
            other => {
                refused = Some((i, other));
                break;
            }
        }
    }
    let (i, answer) = refused.expect("a 320 KiB store took 2,000 messages of 1 KB");
    match answer {
        Some(Packet::PubAck(a)) => {
            assert_eq!((a.pkid, a.reason_code), (i, 0x97), "log:\n{}", broker.log())
        }
        other => panic!(
            "expected PUBACK 0x97 for {i}, got {other:?}; log:\n{}",
            broker.log()
        ),
    }
    assert!(p.alive(), "the connection was closed after the refusal");
    // QoS 2: PUBREC 0x97 ends the exchange; the connection stays.
    p.send(publish("t/a", QoS::ExactlyOnce, 9, vec![b'y'; 1024]));
    match p.recv() {
        Some(Packet::PubRec(a)) => assert_eq!((a.pkid, a.reason_code), (9, 0x97)),
        other => panic!("expected PUBREC 0x97, got {other:?}"),
    }
    assert!(p.alive());
    // A message with no persistent destination needs no store space.
    p.send(publish("free/x", QoS::AtLeastOnce, 10, "ok"));
    match p.recv() {
        Some(Packet::PubAck(a)) => assert_eq!((a.pkid, a.reason_code), (10, 0)),
        other => panic!("expected PUBACK 0, got {other:?}"),
    }
}

#[test]
fn v311_refused_write_flushes_the_ready_acks_before_closing() {
    let broker = Broker::start_with(Some(SMALL_STORE));
    park_subscriber(broker.port, V311, "w2-sub", "t/#");
    assert!(fill_store(broker.port, "t/a") > 20);
    // One write: a refused message, then three that need no store space.
    let (mut p, _) = Raw::connect(broker.port, V311, "w2-pub", true);
    p.send_all(&[
        publish("t/a", QoS::AtLeastOnce, 1, vec![b's'; 60]),
        publish("free/x", QoS::AtLeastOnce, 2, "a"),
        publish("free/x", QoS::AtLeastOnce, 3, "b"),
        publish("free/x", QoS::AtLeastOnce, 4, "c"),
    ]);
    let acked: Vec<u16> = p
        .recv_until_closed()
        .into_iter()
        .filter_map(|packet| match packet {
            Packet::PubAck(a) => Some(a.pkid),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [2, 3, 4], "log:\n{}", broker.log());
}

/// The review's deterministic D2 scenario: a QoS 2 PUBLISH refused by the
/// full store, then retransmitted with DUP=1 on a new connection.
#[test]
fn qos2_retransmission_of_a_refused_message_is_not_pubreced_blindly() {
    let broker = Broker::start_with(Some(SMALL_STORE));
    park_subscriber(broker.port, V311, "d2-sub", "t/#");
    assert!(fill_store(broker.port, "t/a") > 20);

    // The first copy: refused (no PUBREC, the connection closes).
    let (mut p, _) = Raw::connect(broker.port, V311, "p", false);
    p.send(publish("t/a", QoS::ExactlyOnce, 7, "M"));
    let answers = p.recv_until_closed();
    assert!(
        !answers.iter().any(|a| matches!(a, Packet::PubRec(_))),
        "{answers:?}"
    );

    // Retransmit with DUP until PUBREC 0; while refused, drain the
    // subscriber to free the store.
    let mut received = Vec::new();
    let mut pubreced = false;
    for _ in 0..10 {
        let (mut p, _) = Raw::connect(broker.port, V311, "p", false);
        p.send(Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            topic: "t/a".into(),
            pkid: 7,
            payload: "M".into(),
            ..Default::default()
        }));
        if let Some(Packet::PubRec(r)) = p.recv() {
            assert_eq!((r.pkid, r.reason_code), (7, 0));
            p.send(Packet::PubRel(ack(7)));
            assert!(matches!(p.recv(), Some(Packet::PubComp(c)) if c.pkid == 7));
            pubreced = true;
            break;
        }
        let (mut s, _) = Raw::connect(broker.port, V311, "d2-sub", false);
        received.extend(s.drain(Duration::from_secs(5), |_| false));
        s.disconnect();
    }
    assert!(pubreced, "the retransmission was never accepted");
    // Everything PUBRECed must arrive.
    let (mut s, _) = Raw::connect(broker.port, V311, "d2-sub", false);
    received.extend(s.drain(Duration::from_secs(30), |got| {
        got.iter().any(|m| m.as_ref() == b"M")
    }));
    assert!(
        received.iter().any(|m| m.as_ref() == b"M"),
        "PUBRECed message M never delivered ({} others); log:\n{}",
        received.len(),
        broker.log()
    );
}

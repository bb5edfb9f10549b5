//! Byte-level tests against the real binary for what ordinary clients do
//! not send: a second CONNECT, oversize packets, Receive Maximum
//! violations, unsupported protocol levels, takeover and shutdown.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

mod common;

use bytes::Bytes;
use common::{connect_packet, BrokerProcess, Raw};
use edgemq::protocol::{
    reason, Disconnect, LastWill, Packet, ProtocolVersion, PubAck, Publish, QoS, Subscribe,
    SubscribeFilter, WillProperties,
};

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.to_string(),
        pkid,
        payload: Bytes::from_static(payload),
        ..Publish::default()
    })
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new(filter, qos)],
        ..Subscribe::default()
    })
}

fn last_disconnect(packets: &[Packet]) -> Option<u8> {
    packets.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    })
}

#[test]
fn second_connect_is_a_protocol_error() {
    let broker = BrokerProcess::start();
    let (mut c, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "twice"));
    assert_eq!(ack.reason_code, reason::SUCCESS);
    c.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        "twice",
    ))));
    let packets = c.until_closed();
    assert_eq!(last_disconnect(&packets), Some(reason::PROTOCOL_ERROR));
    match packets.last() {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(
                d.properties.reason_string.as_deref(),
                Some("second CONNECT")
            )
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    // The broker keeps serving others.
    let (_other, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "other"));
    assert_eq!(ack.reason_code, reason::SUCCESS);
}

#[test]
fn oversize_packet_closes_only_that_connection() {
    let broker = BrokerProcess::start_with("[limits]\nmax_packet_size = 1024\n");
    let (mut big, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "big"));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    // Only the fixed header of a 1 MB PUBLISH: refused before buffering.
    big.send_bytes(&[0x30, 0x80, 0x80, 0x40]);
    assert_eq!(
        last_disconnect(&big.until_closed()),
        Some(reason::PACKET_TOO_LARGE)
    );
    let (mut v3, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "big3"));
    v3.send_bytes(&[0x30, 0x80, 0x80, 0x40]);
    assert!(
        v3.until_closed().is_empty(),
        "3.1.1 has no DISCONNECT from the server"
    );
}

#[test]
fn malformed_fixed_header_gets_0x81() {
    let broker = BrokerProcess::start();
    let (mut c, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "flags"));
    // PUBACK with reserved flags set.
    c.send_bytes(&[0x41, 0x02, 0x00, 0x01]);
    assert_eq!(
        last_disconnect(&c.until_closed()),
        Some(reason::MALFORMED_PACKET)
    );
}

#[test]
fn unsupported_protocol_level_gets_return_code_1() {
    let broker = BrokerProcess::start();
    let mut c = Raw::open(broker.port, ProtocolVersion::V311);
    // CONNECT, protocol "MQTT" level 9.
    c.send_bytes(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3c, 0x00, 0x01, b'x',
    ]);
    let packets = c.until_closed();
    match packets.first() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, 1),
        other => panic!("expected CONNACK 1, got {other:?}"),
    }
}

#[test]
fn client_id_rules() {
    let broker = BrokerProcess::start_with("[limits]\nmax_client_id_len = 30\n");
    let mut persistent_empty = connect_packet(ProtocolVersion::V311, "");
    persistent_empty.clean_start = false;
    let mut c = Raw::open(broker.port, ProtocolVersion::V311);
    c.send(&Packet::Connect(Box::new(persistent_empty)));
    match c.recv() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, 2),
        other => panic!("expected CONNACK 2, got {other:?}"),
    }
    let (_c, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, ""));
    assert_eq!(ack.reason_code, reason::SUCCESS);
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!assigned.is_empty());
    let long = "x".repeat(31);
    let mut c = Raw::open(broker.port, ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        &long,
    ))));
    match c.recv() {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, reason::CLIENT_IDENTIFIER_NOT_VALID)
        }
        other => panic!("expected CONNACK 0x85, got {other:?}"),
    }
}

#[test]
fn exceeding_receive_maximum_gets_0x93() {
    let broker = BrokerProcess::start_with("[limits]\nmax_inflight = 2\n");
    let (mut c, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "greedy"));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for pkid in 1..=2 {
        c.send(&publish("t", QoS::ExactlyOnce, pkid, b"p"));
        assert!(matches!(c.recv(), Some(Packet::PubRec(a)) if a.pkid == pkid));
    }
    c.send(&publish("t", QoS::ExactlyOnce, 3, b"p"));
    assert_eq!(
        last_disconnect(&c.until_closed()),
        Some(reason::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn qos2_duplicate_is_delivered_once() {
    let broker = BrokerProcess::start();
    let (mut sub, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "sub2"));
    sub.send(&subscribe("q2", QoS::ExactlyOnce));
    assert!(matches!(sub.recv(), Some(Packet::SubAck(_))));
    let (mut publ, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "pub2"));
    publ.send(&publish("q2", QoS::ExactlyOnce, 9, b"once"));
    assert!(matches!(publ.recv(), Some(Packet::PubRec(a)) if a.pkid == 9));
    publ.send(&publish("q2", QoS::ExactlyOnce, 9, b"once"));
    assert!(matches!(publ.recv(), Some(Packet::PubRec(a)) if a.pkid == 9));
    publ.send(&Packet::PubRel(PubAck {
        pkid: 9,
        ..PubAck::default()
    }));
    assert!(matches!(publ.recv(), Some(Packet::PubComp(a)) if a.pkid == 9));
    // A marker after the QoS 2 message: the subscriber sees "once" then "end".
    publ.send(&publish("q2", QoS::AtMostOnce, 0, b"end"));
    let mut payloads = Vec::new();
    while payloads.last().map(|p: &Bytes| &p[..]) != Some(b"end") {
        match sub.recv() {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::ExactlyOnce {
                    sub.send(&Packet::PubRec(PubAck {
                        pkid: p.pkid,
                        ..PubAck::default()
                    }));
                }
                payloads.push(p.payload);
            }
            Some(Packet::PubRel(r)) => {
                sub.send(&Packet::PubComp(PubAck {
                    pkid: r.pkid,
                    ..PubAck::default()
                }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        payloads,
        vec![Bytes::from_static(b"once"), Bytes::from_static(b"end")]
    );
}

#[test]
fn takeover_disconnects_the_old_connection_with_0x8e() {
    let broker = BrokerProcess::start();
    let (mut old, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "same"));
    let (_new, ack) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "same"));
    assert_eq!(ack.reason_code, reason::SUCCESS);
    assert_eq!(
        last_disconnect(&old.until_closed()),
        Some(reason::SESSION_TAKEN_OVER)
    );
}

#[test]
fn will_on_socket_loss_but_not_on_disconnect() {
    let broker = BrokerProcess::start();
    let (mut watcher, _) =
        Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "watch"));
    watcher.send(&subscribe("wills/#", QoS::AtMostOnce));
    assert!(matches!(watcher.recv(), Some(Packet::SubAck(_))));
    let with_will = |id: &str, topic: &str| {
        let mut c = connect_packet(ProtocolVersion::V5, id);
        c.will = Some(LastWill {
            topic: topic.to_string(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        c
    };
    let (mut polite, _) = Raw::connect(broker.port, with_will("polite", "wills/polite"));
    polite.send(&Packet::Disconnect(Disconnect::default()));
    assert!(polite.until_closed().is_empty());
    let (rude, _) = Raw::connect(broker.port, with_will("rude", "wills/rude"));
    drop(rude);
    match watcher.recv() {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "wills/rude", "only the lost client's will")
        }
        other => panic!("expected the will, got {other:?}"),
    }
}

#[test]
fn acl_deny_lists_refuse_subscribe_and_publish() {
    let broker = BrokerProcess::start_with(
        "[acl]\ndeny_subscribe = [\"secret/#\"]\ndeny_publish = [\"ro/#\"]\n",
    );
    let (mut v5, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "acl5"));
    v5.send(&Packet::Subscribe(Subscribe {
        pkid: 3,
        filters: vec![
            SubscribeFilter::new("secret/x", QoS::AtLeastOnce),
            SubscribeFilter::new("open/x", QoS::AtLeastOnce),
        ],
        ..Subscribe::default()
    }));
    match v5.recv() {
        Some(Packet::SubAck(s)) => assert_eq!(s.reason_codes, vec![reason::NOT_AUTHORIZED, 1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    for topic in ["ro/x", "$SYS/broker/version"] {
        v5.send(&publish(topic, QoS::AtLeastOnce, 4, b"no"));
        match v5.recv() {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, reason::NOT_AUTHORIZED),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let (mut v3, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "acl3"));
    v3.send(&subscribe("secret/#", QoS::AtMostOnce));
    match v3.recv() {
        Some(Packet::SubAck(s)) => assert_eq!(s.reason_codes, vec![0x80]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[test]
fn sigterm_tells_v5_clients_and_exits_zero() {
    let broker = BrokerProcess::start();
    let (mut c, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "bye"));
    c.send(&Packet::PingReq);
    assert!(matches!(c.recv(), Some(Packet::PingResp)));
    let status = broker.terminate();
    assert_eq!(
        last_disconnect(&c.until_closed()),
        Some(reason::SERVER_SHUTTING_DOWN)
    );
    assert!(status.success(), "exit status {status:?}");
}

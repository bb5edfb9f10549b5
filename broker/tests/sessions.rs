//! Session behaviour over raw bytes against the real binary: resend with
//! DUP, keep alive, will delay, session and message expiry, topic aliases,
//! the client's maximum packet size, max connections and `$SYS`.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

mod common;

use bytes::Bytes;
use common::{connect_packet, BrokerProcess, Raw};
use edgemq::protocol::{
    reason, Connect, Disconnect, DisconnectProperties, LastWill, Packet, ProtocolVersion, PubAck,
    Publish, PublishProperties, QoS, Subscribe, SubscribeFilter, WillProperties,
};

fn subscribe(c: &mut Raw, filter: &str, qos: QoS) {
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new(filter, qos)],
        ..Subscribe::default()
    }));
    assert!(matches!(c.recv(), Some(Packet::SubAck(s)) if s.reason_codes[0] < 0x80));
}

fn publish(c: &mut Raw, topic: &str, qos: QoS, payload: &'static [u8], props: PublishProperties) {
    c.send(&Packet::Publish(Publish {
        qos,
        topic: topic.to_string(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { 1 },
        payload: Bytes::from_static(payload),
        properties: props,
        ..Publish::default()
    }));
    if qos == QoS::AtLeastOnce {
        assert!(matches!(c.recv(), Some(Packet::PubAck(_))));
    }
}

fn next_publish(c: &mut Raw) -> Publish {
    match c.recv() {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn persistent(version: ProtocolVersion, id: &str, expiry: Option<u32>) -> Connect {
    let mut c = connect_packet(version, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = expiry;
    c
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    let broker = BrokerProcess::start();
    let (mut sub, _) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V311, "forgetful", None),
    );
    subscribe(&mut sub, "r", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "p"));
    publish(
        &mut publ,
        "r",
        QoS::AtLeastOnce,
        b"one",
        PublishProperties::default(),
    );
    let first = next_publish(&mut sub);
    assert!(!first.dup);
    sub.send(&Packet::Disconnect(Disconnect::default()));
    assert!(sub.until_closed().is_empty());
    let (mut sub, ack) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V311, "forgetful", None),
    );
    assert!(ack.session_present);
    let again = next_publish(&mut sub);
    assert!(again.dup);
    assert_eq!((again.pkid, &again.payload[..]), (first.pkid, &b"one"[..]));
    sub.send(&Packet::PubAck(PubAck {
        pkid: again.pkid,
        ..PubAck::default()
    }));
    sub.send(&Packet::PingReq);
    assert!(
        matches!(sub.recv(), Some(Packet::PingResp)),
        "nothing else pending"
    );
}

#[test]
fn keep_alive_timeout_closes_with_0x8d_and_publishes_the_will() {
    let broker = BrokerProcess::start();
    let (mut watcher, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "w"));
    subscribe(&mut watcher, "dead/+", QoS::AtMostOnce);
    let mut c = connect_packet(ProtocolVersion::V5, "sleepy");
    c.keep_alive = 1;
    c.will = Some(LastWill {
        topic: "dead/sleepy".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (mut sleepy, _) = Raw::connect(broker.port, c);
    let packets = sleepy.until_closed();
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason::KEEP_ALIVE_TIMEOUT),
        "{packets:?}"
    );
    assert_eq!(next_publish(&mut watcher).topic, "dead/sleepy");
}

#[test]
fn server_keep_alive_caps_the_client_value() {
    let broker = BrokerProcess::start_with("[limits]\nmax_keepalive = 60\n");
    let mut c = connect_packet(ProtocolVersion::V5, "long");
    c.keep_alive = 600;
    let (_c, ack) = Raw::connect(broker.port, c);
    assert_eq!(ack.properties.server_keep_alive, Some(60));
}

fn will_with_delay(id: &str, delay: u32, expiry: u32) -> Connect {
    let mut c = persistent(ProtocolVersion::V5, id, Some(expiry));
    c.will = Some(LastWill {
        topic: format!("will/{id}"),
        payload: Bytes::from_static(b"late"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(delay),
            ..WillProperties::default()
        },
    });
    c
}

#[test]
fn will_delay_is_cancelled_by_a_reconnect_and_fires_otherwise() {
    let broker = BrokerProcess::start();
    let (mut watcher, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "w"));
    subscribe(&mut watcher, "will/+", QoS::AtMostOnce);
    // "back" drops its socket and reconnects at once: no will.
    let (back, _) = Raw::connect(broker.port, will_with_delay("back", 1, 60));
    drop(back);
    let (mut back, _) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "back", Some(60)),
    );
    back.send(&Packet::PingReq);
    assert!(matches!(back.recv(), Some(Packet::PingResp)));
    // "gone" drops its socket for good: its will comes after the delay.
    let (gone, _) = Raw::connect(broker.port, will_with_delay("gone", 1, 60));
    drop(gone);
    assert_eq!(
        next_publish(&mut watcher).topic,
        "will/gone",
        "only the will of the client that stayed away"
    );
}

#[test]
fn will_is_sent_when_the_session_ends_before_the_delay() {
    let broker = BrokerProcess::start();
    let (mut watcher, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "w"));
    subscribe(&mut watcher, "will/+", QoS::AtMostOnce);
    // Will delay 1 hour, session expiry 1 s: the session end sends it.
    let (short, _) = Raw::connect(broker.port, will_with_delay("short", 3600, 1));
    drop(short);
    assert_eq!(next_publish(&mut watcher).topic, "will/short");
}

#[test]
fn session_resumes_within_expiry_and_ends_on_disconnect_expiry_zero() {
    let broker = BrokerProcess::start();
    let (mut c, _) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "brief", Some(1)),
    );
    subscribe(&mut c, "x", QoS::AtLeastOnce);
    c.send(&Packet::Disconnect(Disconnect::default()));
    c.until_closed();
    let (mut c, ack) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "brief", Some(1)),
    );
    assert!(ack.session_present, "resumed within the expiry");
    // Ending with expiry 0 on DISCONNECT ends the session at once.
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: 0,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        },
    }));
    c.until_closed();
    let (_c, ack) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "brief", Some(1)),
    );
    assert!(!ack.session_present);
}

#[test]
fn expired_queued_messages_are_dropped() {
    let broker = BrokerProcess::start();
    let (mut c, _) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "slow", Some(60)),
    );
    subscribe(&mut c, "e/+", QoS::AtLeastOnce);
    c.send(&Packet::Disconnect(Disconnect::default()));
    c.until_closed();
    let (mut publ, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "p"));
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..PublishProperties::default()
    };
    publish(&mut publ, "e/short", QoS::AtLeastOnce, b"stale", short);
    publish(
        &mut publ,
        "e/long",
        QoS::AtLeastOnce,
        b"fresh",
        PublishProperties::default(),
    );
    // Wait (bounded) until the first message's expiry has passed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (mut c, _) = Raw::connect(
        broker.port,
        persistent(ProtocolVersion::V5, "slow", Some(60)),
    );
    let p = next_publish(&mut c);
    assert_eq!(p.topic, "e/long", "the expired message is not delivered");
}

#[test]
fn outgoing_topic_aliases_when_the_client_allows_them() {
    let broker = BrokerProcess::start();
    let mut connect = connect_packet(ProtocolVersion::V5, "aliased");
    connect.properties.topic_alias_maximum = Some(4);
    let (mut c, _) = Raw::connect(broker.port, connect);
    subscribe(&mut c, "al/#", QoS::AtMostOnce);
    let (mut publ, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "p"));
    for _ in 0..2 {
        publish(
            &mut publ,
            "al/long/topic/name",
            QoS::AtMostOnce,
            b"v",
            PublishProperties::default(),
        );
    }
    let first = next_publish(&mut c);
    assert_eq!(first.topic, "al/long/topic/name");
    let alias = first.properties.topic_alias.expect("alias assigned");
    let second = next_publish(&mut c);
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", Some(alias))
    );
}

#[test]
fn incoming_topic_alias_above_maximum_is_0x94() {
    let broker = BrokerProcess::start_with("[limits]\nmax_topic_aliases = 2\n");
    let (mut c, ack) = Raw::connect(
        broker.port,
        connect_packet(ProtocolVersion::V5, "bad-alias"),
    );
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));
    let props = PublishProperties {
        topic_alias: Some(3),
        ..PublishProperties::default()
    };
    publish(&mut c, "t", QoS::AtMostOnce, b"x", props);
    let packets = c.until_closed();
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn messages_over_the_client_maximum_packet_size_are_not_sent() {
    let broker = BrokerProcess::start();
    let mut connect = connect_packet(ProtocolVersion::V5, "small");
    connect.properties.maximum_packet_size = Some(64);
    let (mut c, _) = Raw::connect(broker.port, connect);
    subscribe(&mut c, "m/#", QoS::AtMostOnce);
    let (mut publ, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "p"));
    publish(
        &mut publ,
        "m/big",
        QoS::AtMostOnce,
        &[b'x'; 100],
        PublishProperties::default(),
    );
    publish(
        &mut publ,
        "m/small",
        QoS::AtMostOnce,
        b"ok",
        PublishProperties::default(),
    );
    assert_eq!(next_publish(&mut c).topic, "m/small");
}

#[test]
fn connections_beyond_the_maximum_are_refused_cleanly() {
    let broker = BrokerProcess::start_with("[server]\nmax_connections = 1\n");
    let (mut first, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V5, "one"));
    let mut second = Raw::open(broker.port, ProtocolVersion::V5);
    second.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        "two",
    ))));
    match second.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, reason::QUOTA_EXCEEDED),
        other => panic!("expected CONNACK 0x97, got {other:?}"),
    }
    first.send(&Packet::PingReq);
    assert!(
        matches!(first.recv(), Some(Packet::PingResp)),
        "the first client is unaffected"
    );
}

#[test]
fn sys_topics_are_published_and_retained() {
    let broker = BrokerProcess::start_with("[sys]\ninterval_secs = 1\n");
    let (mut c, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "sys"));
    subscribe(&mut c, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    // The retained value may predate this client (published at start-up);
    // the next interval counts it.
    let mut connected = 0;
    for _ in 0..3 {
        let p = next_publish(&mut c);
        assert_eq!(p.topic, "$SYS/broker/clients/connected");
        connected = std::str::from_utf8(&p.payload)
            .expect("utf8")
            .parse()
            .expect("number");
        if connected >= 1 {
            break;
        }
    }
    assert!(connected >= 1);
    let (mut all, _) = Raw::connect(broker.port, connect_packet(ProtocolVersion::V311, "all"));
    subscribe(&mut all, "#", QoS::AtMostOnce);
    all.send(&Packet::PingReq);
    assert!(
        matches!(all.recv(), Some(Packet::PingResp)),
        "# does not match $SYS topics"
    );
}

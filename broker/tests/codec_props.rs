//! Property tests of the codec: a differential test against rumqttc's v4
//! codec for valid 3.1.1 traffic (both directions), v5 round trips with
//! arbitrary properties, and a seeded garbage/mutation test that stands in
//! for `cargo fuzz` on stable CI (fuzz/fuzz_targets/decode.rs runs the same
//! entry point under libFuzzer): decode must never panic, and must either
//! ask for more bytes, return a packet, or return an error.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Packet, ProtocolVersion, PubAck, Publish, PublishProperties, QoS, Subscribe,
    SubscribeFilter, Unsubscribe,
};
use proptest::prelude::*;
use rumqttc::mqttbytes::v4 as theirs;

const MAX: u32 = 1 << 20;

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,4}"
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        topic(),
        topic().prop_map(|t| format!("{t}/#")),
        topic().prop_map(|t| format!("+/{t}"))
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn their_qos(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn publish_v311() -> impl Strategy<Value = Publish> {
    (
        topic(),
        qos(),
        any::<bool>(),
        1u16..,
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(topic, qos, retain, pkid, payload)| Publish {
            dup: false,
            qos,
            retain,
            topic,
            pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
            properties: PublishProperties::default(),
            payload: Bytes::from(payload),
        })
}

fn ours_to_bytes(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    protocol::encode(p, v, &mut buf).expect("encodable");
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn publish_matches_rumqttc_both_ways(p in publish_v311()) {
        let mut buf = ours_to_bytes(&Packet::Publish(p.clone()), ProtocolVersion::V311);
        let theirs::Packet::Publish(t) = theirs::Packet::read(&mut buf, MAX as usize).expect("rumqttc reads ours") else {
            panic!("not a publish");
        };
        prop_assert_eq!((&t.topic, t.pkid, t.retain, &t.payload), (&p.topic, p.pkid, p.retain, &p.payload));
        prop_assert_eq!(t.qos, their_qos(p.qos));
        let mut back = BytesMut::new();
        t.write(&mut back).expect("rumqttc writes");
        let ours = protocol::decode(&mut back, ProtocolVersion::V311, MAX).expect("we read rumqttc's").expect("whole");
        prop_assert_eq!(ours, Packet::Publish(p));
    }

    #[test]
    fn subscribe_unsubscribe_puback_match_rumqttc(pkid in 1u16.., filters in proptest::collection::vec((filter(), qos()), 1..5)) {
        let sub = Subscribe {
            pkid,
            filters: filters.iter().map(|(f, q)| SubscribeFilter::new(f.clone(), *q)).collect(),
            ..Default::default()
        };
        let mut buf = ours_to_bytes(&Packet::Subscribe(sub.clone()), ProtocolVersion::V311);
        let theirs::Packet::Subscribe(t) = theirs::Packet::read(&mut buf, MAX as usize).expect("read") else {
            panic!("not a subscribe");
        };
        prop_assert_eq!(t.pkid, pkid);
        let got: Vec<(String, rumqttc::mqttbytes::QoS)> = t.filters.iter().map(|f| (f.path.clone(), f.qos)).collect();
        let want: Vec<(String, rumqttc::mqttbytes::QoS)> = filters.iter().map(|(f, q)| (f.clone(), their_qos(*q))).collect();
        prop_assert_eq!(got, want);
        let mut back = BytesMut::new();
        t.write(&mut back).expect("write");
        prop_assert_eq!(protocol::decode(&mut back, ProtocolVersion::V311, MAX).expect("ok"), Some(Packet::Subscribe(sub)));

        let unsub = theirs::Unsubscribe { pkid, topics: filters.iter().map(|(f, _)| f.clone()).collect() };
        let mut buf = BytesMut::new();
        unsub.write(&mut buf).expect("write");
        let want = Unsubscribe { pkid, filters: unsub.topics.clone(), ..Default::default() };
        prop_assert_eq!(protocol::decode(&mut buf, ProtocolVersion::V311, MAX).expect("ok"), Some(Packet::Unsubscribe(want)));

        let mut buf = ours_to_bytes(&Packet::PubAck(PubAck { pkid, ..Default::default() }), ProtocolVersion::V311);
        prop_assert_eq!(theirs::Packet::read(&mut buf, MAX as usize).expect("read"), theirs::Packet::PubAck(theirs::PubAck { pkid }));
    }

    #[test]
    fn v5_publish_round_trips_with_properties(
        p in publish_v311(),
        expiry in proptest::option::of(any::<u32>()),
        alias in proptest::option::of(1u16..),
        users in proptest::collection::vec(("[a-z]{0,6}", "[ -~]{0,12}"), 0..4),
        ids in proptest::collection::vec(1u32..268_435_455, 0..3),
        content_type in proptest::option::of("[a-z/+.-]{1,20}"),
        correlation in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    ) {
        let mut p = p;
        p.properties = PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: expiry,
            topic_alias: alias,
            response_topic: None,
            correlation_data: correlation.map(Bytes::from),
            user_properties: users,
            subscription_identifiers: ids,
            content_type,
        };
        let packet = Packet::Publish(p);
        let mut buf = ours_to_bytes(&packet, ProtocolVersion::V5);
        prop_assert_eq!(buf.len(), protocol::encoded_len(&packet, ProtocolVersion::V5));
        prop_assert_eq!(protocol::decode(&mut buf, ProtocolVersion::V5, MAX).expect("ok"), Some(packet));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), v5 in any::<bool>()) {
        decode_all(&bytes, v5);
    }

    #[test]
    fn mutated_packets_never_panic(p in publish_v311(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), v5 in any::<bool>()) {
        let v = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let mut bytes = ours_to_bytes(&Packet::Publish(p), v).to_vec();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        decode_all(&bytes, v5);
    }
}

/// Feeds `bytes` to the decoder like a connection would.
fn decode_all(bytes: &[u8], v5: bool) {
    let v = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = protocol::decode(&mut buf, v, 4096) {}
}

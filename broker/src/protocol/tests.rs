//! Codec unit tests: byte-exact packets from the specifications, round trips
//! in both protocol versions, and truncation at every prefix.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};

use super::*;

const MAX: u32 = 1 << 20;

fn roundtrip(p: &Packet, v: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).unwrap();
    assert_eq!(buf.len(), encoded_len(p, v));
    let frame = buf.clone();
    // Every strict prefix is "need more bytes", never an error or a packet.
    for cut in 0..frame.len() {
        let mut partial = BytesMut::from(&frame[..cut]);
        assert_eq!(
            decode(&mut partial, v, MAX),
            Ok(None),
            "prefix {cut} of {p:?}"
        );
    }
    let got = decode(&mut buf, v, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    got
}

fn sample_packets() -> Vec<Packet> {
    let users = vec![("k".to_string(), "v".to_string())];
    vec![
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 30,
            client_id: "dev-1".into(),
            will: Some(LastWill {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties {
                    will_delay_interval: Some(5),
                    content_type: Some("text/plain".into()),
                    user_properties: users.clone(),
                    ..Default::default()
                },
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(&[0, 255, 1])),
            properties: ConnectProperties {
                session_expiry_interval: Some(60),
                receive_maximum: Some(10),
                maximum_packet_size: Some(4096),
                topic_alias_maximum: Some(5),
                user_properties: users.clone(),
                ..Default::default()
            },
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: 0,
            properties: ConnAckProperties {
                assigned_client_identifier: Some("auto-1".into()),
                server_keep_alive: Some(60),
                receive_maximum: Some(100),
                ..Default::default()
            },
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 7,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(9),
                topic_alias: Some(3),
                response_topic: Some("r/t".into()),
                correlation_data: Some(Bytes::from_static(b"cd")),
                user_properties: users.clone(),
                subscription_identifiers: vec![1, 300],
                content_type: Some("json".into()),
            },
            payload: Bytes::from_static(b"hello"),
        }),
        Packet::PubAck(PubAck {
            pkid: 1,
            reason_code: 0,
            properties: AckProperties::default(),
        }),
        Packet::PubRec(PubAck {
            pkid: 2,
            reason_code: 0x10,
            properties: AckProperties::default(),
        }),
        Packet::PubRel(PubAck {
            pkid: 3,
            reason_code: 0x92,
            properties: AckProperties {
                reason_string: Some("gone".into()),
                user_properties: users.clone(),
            },
        }),
        Packet::PubComp(PubAck {
            pkid: 4,
            reason_code: 0,
            properties: AckProperties::default(),
        }),
        Packet::Subscribe(Subscribe {
            pkid: 5,
            properties: SubscribeProperties {
                subscription_identifier: Some(42),
                user_properties: users.clone(),
            },
            filters: vec![
                SubscribeFilter {
                    filter: "a/#".into(),
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                SubscribeFilter::new("b/+", QoS::ExactlyOnce),
            ],
        }),
        Packet::SubAck(SubAck {
            pkid: 5,
            reason_codes: vec![1, 0x87],
            properties: AckProperties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 6,
            user_properties: users.clone(),
            filters: vec!["a/#".into()],
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 6,
            reason_codes: vec![0, 0x11],
            properties: AckProperties::default(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason_code: 0x8E,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some("taken over".into()),
                ..Default::default()
            },
        }),
        Packet::Auth(Auth {
            reason_code: 0x18,
            properties: AuthProperties {
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(b"x")),
                ..Default::default()
            },
        }),
    ]
}

#[test]
fn v5_round_trips_every_packet_type() {
    for p in sample_packets() {
        assert_eq!(roundtrip(&p, ProtocolVersion::V5), p);
    }
}

#[test]
fn v311_round_trips_drop_properties() {
    for p in sample_packets() {
        if matches!(p, Packet::Auth(_)) {
            let mut buf = BytesMut::new();
            assert_eq!(
                encode(&p, ProtocolVersion::V311, &mut buf),
                Err(EncodeError::AuthInV311)
            );
            assert!(buf.is_empty());
            continue;
        }
        let got = roundtrip(&p, ProtocolVersion::V311);
        assert_eq!(got.packet_type(), p.packet_type());
        if let (Packet::Publish(a), Packet::Publish(b)) = (&got, &p) {
            assert_eq!(
                (a.topic.as_str(), &a.payload, a.qos, a.pkid),
                (b.topic.as_str(), &b.payload, b.qos, b.pkid)
            );
            assert_eq!(a.properties, PublishProperties::default());
        }
    }
}

#[test]
fn spec_connect_v311_bytes() {
    // CONNECT, MQTT level 4, clean session, keep alive 60, client id "abc".
    let bytes = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 3, b'a', b'b', b'c',
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    let Packet::Connect(c) = decode(&mut buf, ProtocolVersion::V311, MAX)
        .unwrap()
        .unwrap()
    else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.protocol, ProtocolVersion::V311);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "abc");
    let mut out = BytesMut::new();
    encode(&Packet::Connect(c), ProtocolVersion::V311, &mut out).unwrap();
    assert_eq!(&out[..], &bytes[..]);
}

#[test]
fn spec_short_forms() {
    let cases: [(Packet, ProtocolVersion, &[u8]); 5] = [
        (
            Packet::PubAck(PubAck {
                pkid: 1,
                ..Default::default()
            }),
            ProtocolVersion::V5,
            &[0x40, 2, 0, 1],
        ),
        (
            Packet::PubAck(PubAck {
                pkid: 1,
                reason_code: 0x10,
                ..Default::default()
            }),
            ProtocolVersion::V5,
            &[0x40, 3, 0, 1, 0x10],
        ),
        (
            Packet::Disconnect(Disconnect::default()),
            ProtocolVersion::V5,
            &[0xE0, 0],
        ),
        (
            Packet::Disconnect(Disconnect {
                reason_code: 0x8B,
                ..Default::default()
            }),
            ProtocolVersion::V311,
            &[0xE0, 0],
        ),
        (Packet::PingReq, ProtocolVersion::V311, &[0xC0, 0]),
    ];
    for (p, v, want) in cases {
        let mut out = BytesMut::new();
        encode(&p, v, &mut out).unwrap();
        assert_eq!(&out[..], want, "{p:?}");
    }
}

#[test]
fn connack_v311_maps_reason_codes() {
    let p = Packet::ConnAck(ConnAck {
        reason_code: reason::UNSUPPORTED_PROTOCOL_VERSION,
        ..Default::default()
    });
    let mut out = BytesMut::new();
    encode(&p, ProtocolVersion::V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x20, 2, 0, 1]);
    let p = Packet::SubAck(SubAck {
        pkid: 1,
        reason_codes: vec![0x87, 1],
        ..Default::default()
    });
    out.clear();
    encode(&p, ProtocolVersion::V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x90, 4, 0, 1, 0x80, 1]);
}

fn decode_err(bytes: &[u8], v: ProtocolVersion) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, v, MAX).expect_err("must be rejected")
}

#[test]
fn rejects_malformed_input() {
    use ProtocolVersion::{V311, V5};
    // Wrong reserved flags on SUBSCRIBE and PINGREQ.
    assert_eq!(
        decode_err(&[0x80, 6, 0, 1, 0, 1, b'a', 0], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert!(matches!(
        decode_err(&[0xC1, 0], V311),
        DecodeError::Header(_)
    ));
    // Remaining length of 5 bytes.
    assert!(matches!(
        decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V311),
        DecodeError::Header(_)
    ));
    // QoS 3 PUBLISH.
    assert_eq!(
        decode_err(&[0x36, 5, 0, 1, b'a', 0, 1], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    // Wildcard in a PUBLISH topic.
    assert_eq!(
        decode_err(&[0x30, 3, 0, 1, b'#'], V311),
        DecodeError::TopicNameInvalid
    );
    // Packet id 0 on QoS 1.
    assert_eq!(
        decode_err(&[0x32, 5, 0, 1, b'a', 0, 0], V311).reason_code(),
        reason::PROTOCOL_ERROR
    );
    // Invalid UTF-8 and U+0000 in a topic.
    assert_eq!(
        decode_err(&[0x30, 3, 0, 1, 0xFF], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert_eq!(
        decode_err(&[0x30, 3, 0, 1, 0], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    // Duplicate v5 property (two message expiry intervals).
    let dup = [0x30, 15, 0, 1, b'a', 10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1, b'x'];
    assert_eq!(decode_err(&dup, V5).reason_code(), reason::PROTOCOL_ERROR);
    // Topic alias 0.
    assert_eq!(
        decode_err(&[0x30, 7, 0, 1, b'a', 3, 0x23, 0, 0], V5),
        DecodeError::TopicAliasInvalid
    );
    // CONNECT with the reserved flag and with an unknown protocol level.
    let bad_flag = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'a',
    ];
    assert_eq!(
        decode_err(&bad_flag, V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    let bad_level = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 60, 0, 1, b'a',
    ];
    assert_eq!(
        decode_err(&bad_level, V311),
        DecodeError::UnsupportedProtocol { level: 9 }
    );
    // Trailing bytes after a PUBACK in 3.1.1.
    assert_eq!(
        decode_err(&[0x40, 3, 0, 1, 0], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    // AUTH in 3.1.1.
    assert_eq!(
        decode_err(&[0xF0, 0], V311).reason_code(),
        reason::MALFORMED_PACKET
    );
    // Empty SUBSCRIBE.
    assert_eq!(
        decode_err(&[0x82, 2, 0, 1], V311).reason_code(),
        reason::PROTOCOL_ERROR
    );
}

#[test]
fn oversize_is_refused_from_the_header_alone() {
    // Only the fixed header of a 1 MiB PUBLISH has arrived.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V5, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 4 + (1 << 20),
            max: 1024
        })
    );
}

#[test]
fn encode_refuses_long_strings() {
    let p = Packet::Publish(Publish {
        topic: "x".repeat(70_000),
        ..Default::default()
    });
    let mut buf = BytesMut::new();
    assert!(matches!(
        encode(&p, ProtocolVersion::V5, &mut buf),
        Err(EncodeError::FieldTooLong { .. })
    ));
    assert!(buf.is_empty());
}

//! A full store (issue 3): with `overflow = "reject"` a QoS 1 message that
//! does not fit gets no PUBACK, every message that was PUBACKed is still
//! delivered, and the broker keeps serving everyone else.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS};
use edgemq_tests::{mosquitto_pub, raw_connect, Broker, Sub};

const V: ProtocolVersion = ProtocolVersion::V5;

fn send(s: &mut std::net::TcpStream, p: Packet) {
    let mut buf = BytesMut::new();
    protocol::encode(&p, V, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
}

fn recv(s: &mut std::net::TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    edgemq_tests::read_packet(s, buf, V)
}

#[test]
fn full_store_withholds_puback_and_keeps_serving() {
    let broker = Broker::start_with(Some(
        "[limits]\nmax_queued_messages = 10\n\n[storage]\ncapacity = 327680\nsegment_size = 65536\n",
    ));
    // A persistent subscriber goes offline: everything for it must be stored.
    let mut sub = Sub::spawn(
        broker.port,
        &[
            "-V", "mqttv5", "-c", "-i", "full-sub", "-x", "3600", "-q", "1", "-t", "full/#",
        ],
    );
    sub.wait_subscribed();
    sub.interrupt();

    let mut s = raw_connect(broker.port);
    let connect = Connect {
        protocol: V,
        clean_start: true,
        keep_alive: 60,
        client_id: "full-pub".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    send(&mut s, Packet::Connect(Box::new(connect)));
    let mut rb = BytesMut::new();
    assert!(matches!(recv(&mut s, &mut rb), Some(Packet::ConnAck(_))));
    let mut acked = Vec::new();
    let mut refused = false;
    for i in 1..=2000u16 {
        let payload = format!("{i:04}").repeat(250);
        send(
            &mut s,
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "full/x".into(),
                pkid: i,
                payload: Bytes::from(payload),
                ..Default::default()
            }),
        );
        match recv(&mut s, &mut rb) {
            Some(Packet::PubAck(a)) if a.pkid == i && a.reason_code < 0x80 => acked.push(i),
            other => {
                // No success PUBACK: a failure reason, or the connection closed.
                assert!(!matches!(other, Some(Packet::PubAck(ref a)) if a.reason_code < 0x80));
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "a 320 KiB store took 2,000 messages of 1 KB");
    assert!(acked.len() > 20, "only {} messages fit", acked.len());

    // Everyone else is still served.
    let mut other = Sub::spawn(broker.port, &["-t", "other"]);
    other.wait_subscribed();
    assert!(mosquitto_pub(broker.port, &["-t", "other", "-m", "hi"])
        .status
        .success());
    assert_eq!(other.messages(1, Duration::from_secs(10)), ["other hi"]);

    // Every PUBACKed message reaches the persistent subscriber.
    let mut back = Sub::spawn(
        broker.port,
        &[
            "-V", "mqttv5", "-c", "-i", "full-sub", "-x", "3600", "-q", "1", "-t", "full/#",
        ],
    );
    let got = back.messages(acked.len(), Duration::from_secs(30));
    let got: Vec<u16> = got
        .iter()
        .map(|l| l["full/x ".len()..][..4].parse().unwrap())
        .collect();
    assert_eq!(got, acked, "log:\n{}", broker.log());
}

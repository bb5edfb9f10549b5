//! A full store (issues 3 and 11): with `overflow = "reject"` a QoS 1
//! message that does not fit gets no PUBACK, every message that was
//! PUBACKed is still delivered, and the broker keeps serving everyone else.
//! `/healthz` and `$SYS/broker/store/state` report the full store, and it
//! accepts again once drained (`Full` is never sticky).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS};
use edgemq_tests::{free_port, mosquitto_pub, mosquitto_sub, raw_connect, wait_until, Broker, Sub};

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

fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A fresh `$SYS/broker/store/state` (published every second; the first
/// value received may be an older retained one).
fn sys_state(port: u16) -> String {
    let out = mosquitto_sub(port, &["-t", "$SYS/broker/store/state"], 3, 10)
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().unwrap_or_default().trim().to_string()
}

/// Publishes 4 KiB QoS 1 messages on one connection until one is not
/// PUBACKed; returns the sequence numbers that were.
fn publish_until_refused(port: u16, client: &str, max: u16) -> Vec<u16> {
    let mut s = raw_connect(port);
    let connect = Connect {
        protocol: V,
        clean_start: true,
        keep_alive: 60,
        client_id: client.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    send(&mut s, Packet::Connect(Box::new(connect)));
    let mut rb = BytesMut::new();
    assert!(matches!(recv(&mut s, &mut rb), Some(Packet::ConnAck(_))));
    let mut acked = Vec::new();
    for i in 1..=max {
        let payload = format!("{i:04}").repeat(1024);
        send(
            &mut s,
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "drain/x".into(),
                pkid: i,
                payload: Bytes::from(payload),
                ..Default::default()
            }),
        );
        match recv(&mut s, &mut rb) {
            Some(Packet::PubAck(a)) if a.pkid == i && a.reason_code < 0x80 => acked.push(i),
            _ => break,
        }
    }
    acked
}

/// Issue 11 (c) and (d): a 5 MiB store filled by an offline session until
/// PUBACKs stop reports "full" (/healthz 503, $SYS state); once the session
/// drains it, new messages are PUBACKed and delivered again, and every
/// acknowledged message arrived.
#[test]
fn a_full_store_reports_full_and_accepts_again_once_drained() {
    let mport = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[sys]\ninterval_secs = 1\n\n[limits]\nmax_queued_messages = 10\n\n\
         [metrics]\nlisten = \"127.0.0.1:{mport}\"\n\n\
         [storage]\ncapacity = 5242880\nsegment_size = 262144\n"
    )));
    assert_eq!(sys_state(broker.port), "ok");
    let args = [
        "-V",
        "mqttv5",
        "-c",
        "-i",
        "drain-sub",
        "-x",
        "3600",
        "-q",
        "1",
        "-t",
        "drain/#",
    ];
    let mut sub = Sub::spawn(broker.port, &args);
    sub.wait_subscribed();
    sub.interrupt();

    let acked = publish_until_refused(broker.port, "drain-pub", 5000);
    assert!(acked.len() > 100, "only {} messages fit", acked.len());
    assert!(
        acked.len() < 5000,
        "a 5 MiB store took 5000 messages of 4 KiB"
    );
    let health = http_get(mport, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("store full"),
        "{health} after {} acked; log:\n{}",
        acked.len(),
        broker.log()
    );
    assert_eq!(sys_state(broker.port), "full");
    let metrics = http_get(mport, "/metrics");
    assert!(metrics.contains("edgemq_store_state_code 1"), "{metrics}");

    // The session comes back and drains everything that was acknowledged.
    let mut back = Sub::spawn(broker.port, &args);
    let got: Vec<u16> = back
        .messages(acked.len(), Duration::from_secs(120))
        .iter()
        .map(|l| l["drain/x ".len()..][..4].parse().unwrap())
        .collect();
    assert_eq!(got, acked, "log:\n{}", broker.log());
    assert!(
        wait_until(Duration::from_secs(20), || http_get(mport, "/healthz")
            .starts_with("HTTP/1.1 200")),
        "{}",
        http_get(mport, "/healthz")
    );
    assert_eq!(sys_state(broker.port), "ok");

    // New messages are PUBACKed and delivered again.
    for i in 0..20 {
        let out = mosquitto_pub(
            broker.port,
            &[
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "drain/x",
                "-m",
                &format!("{:04}", 9000 + i),
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let again = back.messages(20, Duration::from_secs(30));
    assert_eq!(again.len(), 20, "{again:?}");
}

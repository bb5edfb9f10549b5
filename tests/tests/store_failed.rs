//! A failing SD card, end to end (issue 11, D1 and W9): the real broker's
//! `fdatasync` calls are made to fail with EIO by strace's fault injection
//! (as a dying card would report them). From then on no message is
//! PUBACKed, `/healthz` answers 503 with the reason and
//! `$SYS/broker/store/state` reads `failed`; after a restart every message
//! that was PUBACKed before the failure is delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS};
use edgemq_tests::{free_port, mosquitto_sub, raw_connect, require_tool, Broker, Sub};

const V: ProtocolVersion = ProtocolVersion::V5;

fn send(s: &mut std::net::TcpStream, p: Packet) {
    let mut buf = BytesMut::new();
    protocol::encode(&p, V, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A fresh `$SYS/broker/store/state` (published every second).
fn sys_state(port: u16) -> String {
    let out = mosquitto_sub(port, &["-t", "$SYS/broker/store/state"], 3, 10)
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().unwrap_or_default().trim().to_string()
}

/// One connection of a raw v5 publisher.
struct Publisher {
    s: std::net::TcpStream,
    rb: BytesMut,
}

impl Publisher {
    fn connect(port: u16) -> Publisher {
        let mut s = raw_connect(port);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let connect = Connect {
            protocol: V,
            clean_start: true,
            keep_alive: 60,
            client_id: "failing-card-pub".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        send(&mut s, Packet::Connect(Box::new(connect)));
        let mut rb = BytesMut::new();
        assert!(matches!(
            edgemq_tests::read_packet(&mut s, &mut rb, V),
            Some(Packet::ConnAck(_))
        ));
        Publisher { s, rb }
    }

    /// True when message `i` got a success PUBACK.
    fn publish(&mut self, i: u16) -> bool {
        send(
            &mut self.s,
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: "card/x".into(),
                pkid: i,
                payload: Bytes::from(format!("{i:04}")),
                ..Default::default()
            }),
        );
        matches!(
            edgemq_tests::read_packet(&mut self.s, &mut self.rb, V),
            Some(Packet::PubAck(a)) if a.pkid == i && a.reason_code < 0x80
        )
    }
}

#[test]
fn a_failing_fdatasync_stops_pubacks_reports_failed_and_loses_nothing_acknowledged() {
    require_tool("strace");
    let mport = free_port();
    let mut broker = Broker::start_with(Some(&format!(
        "[sys]\ninterval_secs = 1\n\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
    )));
    let args = [
        "-V", "mqttv5", "-c", "-i", "card-sub", "-x", "3600", "-q", "1", "-t", "card/#",
    ];
    let mut sub = Sub::spawn(broker.port, &args);
    sub.wait_subscribed();
    sub.interrupt();

    // Before the failure: every message is stored and PUBACKed.
    let mut publisher = Publisher::connect(broker.port);
    let acked: Vec<u16> = (1..=20).filter(|i| publisher.publish(*i)).collect();
    assert_eq!(acked, (1..=20).collect::<Vec<u16>>(), "{}", broker.log());
    assert_eq!(sys_state(broker.port), "ok");

    // The card starts failing: every fdatasync returns EIO from now on.
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"])
        .args(["-e", "inject=fdatasync:error=EIO"])
        .args(["-p", &broker.pid().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    edgemq_tests::wait_traced(broker.pid());

    // No message written after the failure is PUBACKed.
    assert!(
        !publisher.publish(21),
        "a message was PUBACKed although its fdatasync failed; log:\n{}",
        broker.log()
    );
    let mut later = Publisher::connect(broker.port);
    assert!(!later.publish(22), "the store synced again after a failure");

    // The failure is visible.
    let health = http_get(mport, "/healthz");
    assert!(
        health.starts_with("HTTP/1.") && health.contains(" 503") && health.contains("failed"),
        "{health}"
    );
    assert_eq!(sys_state(broker.port), "failed");
    let metrics = http_get(mport, "/metrics");
    assert!(metrics.contains("edgemq_store_state_code 2"), "{metrics}");

    // Restart (the card works again): everything acknowledged is there.
    let _ = strace.kill();
    let _ = strace.wait();
    broker.kill9();
    broker.restart();
    let mut back = Sub::spawn(broker.port, &args);
    let got: Vec<u16> = back
        .messages(20, Duration::from_secs(30))
        .iter()
        .map(|l| l["card/x ".len()..][..4].parse().unwrap())
        .collect();
    assert_eq!(got, acked, "log:\n{}", broker.log());
    assert_eq!(sys_state(broker.port), "ok");
}

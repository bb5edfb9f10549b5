//! W5 end to end: a downlink QoS 2 command whose packet id the cloud reuses
//! after a clean-start reconnect is a new command, not a duplicate.
//!
//! The cloud here is a scripted MQTT v5 server on a raw socket (edgemq's
//! codec), because the failure needs the link to drop between the bridge's
//! PUBREC and the cloud's PUBREL, which a real broker does not let a test
//! time. The edge broker, its bridge and the local subscriber are real.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{self, ConnAck, Packet, ProtocolVersion, PubAck, Publish, QoS, SubAck};
use edgemq_tests::{read_packet, Broker, Sub};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn send(s: &mut TcpStream, p: &Packet) {
    let mut out = BytesMut::new();
    protocol::encode(p, V5, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

/// Reads packets until one satisfies `want` (PINGREQs are answered).
fn expect(s: &mut TcpStream, buf: &mut BytesMut, want: impl Fn(&Packet) -> bool) -> Packet {
    loop {
        let p = read_packet(s, buf, V5).expect("bridge closed the connection or timed out");
        if matches!(p, Packet::PingReq) {
            send(s, &Packet::PingResp);
            continue;
        }
        if want(&p) {
            return p;
        }
    }
}

/// Accepts the bridge: its CONNECT (clean start) and downlink SUBSCRIBE,
/// which it sends together; answers CONNACK (a new session), SUBACK and
/// `then` in one write.
fn accept_bridge(listener: &TcpListener, then: &[Packet]) -> (TcpStream, BytesMut) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = BytesMut::new();
    match expect(&mut s, &mut buf, |p| matches!(p, Packet::Connect(_))) {
        Packet::Connect(c) => assert!(c.clean_start),
        _ => unreachable!(),
    }
    let pkid = match expect(&mut s, &mut buf, |p| matches!(p, Packet::Subscribe(_))) {
        Packet::Subscribe(sub) => sub.pkid,
        _ => unreachable!(),
    };
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        ..ConnAck::default()
    });
    let suback = Packet::SubAck(SubAck {
        pkid,
        reason_codes: vec![2],
        ..SubAck::default()
    });
    for p in [&connack, &suback].into_iter().chain(then) {
        protocol::encode(p, V5, &mut out).unwrap();
    }
    s.write_all(&out).unwrap();
    (s, buf)
}

fn edge_with_qos2_downlink(cloud_port: u16) -> Broker {
    Broker::start_with(Some(&format!(
        r#"
[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 200

[[bridge.downlink]]
filter = "gw-0001/cmd/#"
strip_prefix = "gw-0001/"
qos = 2
"#
    )))
}

fn pubrec_1(p: &Packet) -> bool {
    matches!(p, Packet::PubRec(a) if a.pkid == 1)
}

fn command(payload: &'static str) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: "gw-0001/cmd/valve".into(),
        pkid: 1,
        payload: Bytes::from_static(payload.as_bytes()),
        ..Publish::default()
    })
}

#[test]
fn downlink_qos2_packet_id_reused_after_a_clean_start_is_a_new_command() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = edge_with_qos2_downlink(listener.local_addr().unwrap().port());
    let mut local = Sub::spawn(edge.port, &["-q", "2", "-t", "cmd/#"]);
    local.wait_subscribed();

    // Command A, packet id 1; the link drops after the bridge's PUBREC,
    // before the cloud's PUBREL. (Sent after the handshake has surely been
    // read, so that this test needs nothing but the W5 fix.)
    let (mut s, mut buf) = accept_bridge(&listener, &[]);
    std::thread::sleep(Duration::from_millis(500));
    send(&mut s, &command("open"));
    expect(&mut s, &mut buf, pubrec_1);
    drop(s);

    // The bridge reconnects with a clean start; the cloud's new session
    // numbers from 1 again: command B, packet id 1.
    let (mut s, mut buf) = accept_bridge(&listener, &[]);
    std::thread::sleep(Duration::from_millis(500));
    send(&mut s, &command("close"));
    expect(&mut s, &mut buf, pubrec_1);
    send(
        &mut s,
        &Packet::PubRel(PubAck {
            pkid: 1,
            ..PubAck::default()
        }),
    );
    expect(
        &mut s,
        &mut buf,
        |p| matches!(p, Packet::PubComp(a) if a.pkid == 1),
    );

    let got = local.messages(2, Duration::from_secs(10));
    assert_eq!(
        got,
        ["cmd/valve open", "cmd/valve close"],
        "edge log:\n{}",
        edge.log()
    );
}

/// A downlink message that arrives in the same read as the CONNACK is
/// handled at once, not when the next bytes happen to arrive (before: it
/// waited for the next packet from the cloud, e.g. a keep-alive answer 30 s
/// later).
#[test]
fn downlink_message_arriving_with_the_connack_is_handled_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = edge_with_qos2_downlink(listener.local_addr().unwrap().port());
    let mut local = Sub::spawn(edge.port, &["-q", "2", "-t", "cmd/#"]);
    local.wait_subscribed();
    let (mut s, mut buf) = accept_bridge(&listener, &[command("open")]);
    expect(&mut s, &mut buf, pubrec_1);
    let got = local.messages(1, Duration::from_secs(10));
    assert_eq!(got, ["cmd/valve open"], "edge log:\n{}", edge.log());
}

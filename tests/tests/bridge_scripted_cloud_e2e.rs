//! The bridge against a scripted cloud: W5 (a downlink QoS 2 command whose
//! packet id the cloud reuses after a clean-start reconnect is a new
//! command), W3's transient codes (a PUBACK 0x97 is retried, not taken for
//! a success), and packets that arrive together with the CONNACK.
//!
//! The cloud here is a scripted MQTT v5 server on a raw socket (edgemq's
//! codec), because these need a cloud that answers 0x97 or drops the link
//! between PUBREC and PUBREL, which Mosquitto does not let a test arrange.
//! The edge broker, its bridge and the local clients are real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    let (s, _) = listener.accept().unwrap();
    handshake(s, then)
}

/// The bridge's next connection within 10 s, if it makes one.
fn accept_within(listener: &TcpListener) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut accepted = None;
    while accepted.is_none() && std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((s, _)) => accepted = Some(s),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    listener.set_nonblocking(false).unwrap();
    let s = accepted?;
    s.set_nonblocking(false).unwrap();
    Some(s)
}

/// CONNECT and SUBSCRIBE in, CONNACK, SUBACK and `then` out (one write).
fn handshake(mut s: TcpStream, then: &[Packet]) -> (TcpStream, BytesMut) {
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
max_inflight = 1

[[bridge.forward]]
filter = "sensors/#"
remote_prefix = "gw-0001/"
qos = 1

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

/// Answers each PUBLISH on this connection with `code(n)` (n counts from
/// 1), recording the payloads acknowledged with success, until the bridge
/// closes the link or is quiet for 3 s.
fn serve_publishes(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    accepted: &mut Vec<String>,
    code: impl Fn(usize) -> u8,
) {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut n = 0;
    while let Some(p) = read_packet(s, buf, V5) {
        let Packet::Publish(p) = p else { continue };
        n += 1;
        let reason_code = code(n);
        if reason_code < 0x80 {
            accepted.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        let ack = Packet::PubAck(PubAck {
            pkid: p.pkid,
            reason_code,
            ..PubAck::default()
        });
        let mut out = BytesMut::new();
        protocol::encode(&ack, V5, &mut out).unwrap();
        if s.write_all(&out).is_err() {
            break;
        }
    }
}

// W3: 0x97 Quota exceeded is transient: the message is sent again after a
// reconnect, not deleted as if the cloud had taken it.
#[test]
fn puback_quota_exceeded_is_retried_not_taken_for_a_success() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = edge_with_qos2_downlink(listener.local_addr().unwrap().port());
    let (mut s, mut buf) = accept_bridge(&listener, &[]);
    let payloads: Vec<String> = (0..10).map(|i| format!("0-{i}")).collect();
    for p in &payloads {
        let out = edgemq_tests::mosquitto_pub(edge.port, &["-q", "1", "-t", "sensors/p0", "-m", p]);
        assert!(out.status.success());
    }
    let mut accepted = Vec::new();
    // The third PUBLISH is answered 0x97; the rest are accepted.
    serve_publishes(&mut s, &mut buf, &mut accepted, |n| {
        if n == 3 {
            0x97
        } else {
            0
        }
    });
    drop(s);
    if let Some(s) = accept_within(&listener) {
        let (mut s, mut buf) = handshake(s, &[]);
        serve_publishes(&mut s, &mut buf, &mut accepted, |_| 0);
    }
    assert_eq!(accepted, payloads, "edge log:\n{}", edge.log());
    assert!(!edge.log().contains("dead letter"), "{}", edge.log());
}

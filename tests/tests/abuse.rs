//! Resource abuse against the real broker binary (the security issue's
//! "resource abuse" requirements): idle sockets that never send CONNECT, a
//! subscriber that never reads, a connection flood beyond max_connections
//! and a flood of retained topics. Each case checks that the abuse is
//! bounded the way the configuration says, and that other clients on the
//! same broker keep being served while and after it happens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, LastWill, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, WillProperties,
};
use edgemq_tests::{free_port, mosquitto_pub, raw_connect, read_packet, wait_until, Broker, Sub};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn send(s: &mut TcpStream, packet: &Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    protocol::encode(packet, version, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
}

fn publish_packet(topic: &str, payload: Bytes, retain: bool) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtMostOnce,
        retain,
        topic: topic.to_string(),
        payload,
        ..Publish::default()
    })
}

/// Connects over raw TCP (v3.1.1) and checks the CONNACK accepts; returns
/// the socket, its read buffer and the session-present flag.
fn connect_v311(port: u16, connect: Connect) -> (TcpStream, BytesMut, bool) {
    let mut s = raw_connect(port);
    send(&mut s, &Packet::Connect(Box::new(connect)), V311);
    let mut buf = BytesMut::new();
    match read_packet(&mut s, &mut buf, V311) {
        Some(Packet::ConnAck(a)) if a.reason_code == 0 => (s, buf, a.session_present),
        other => panic!("expected an accepting CONNACK, got {other:?}"),
    }
}

fn subscribe(s: &mut TcpStream, buf: &mut BytesMut, filter: &str) {
    send(
        s,
        &Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter::new(filter, QoS::AtMostOnce)],
            ..Subscribe::default()
        }),
        V311,
    );
    match read_packet(s, buf, V311) {
        Some(Packet::SubAck(a)) => assert!(a.reason_codes[0] < 0x80, "{a:?}"),
        other => panic!("expected a SUBACK, got {other:?}"),
    }
}

/// True once the peer closed `s` (EOF or reset); false if it is still open
/// when the socket's read timeout runs out. Data still queued is read and
/// discarded on the way.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A normal client round trip: `mosquitto_pub` to `health`, received by `sub`.
fn round_trip(port: u16, sub: &mut Sub, tag: &str) {
    let out = mosquitto_pub(port, &["-t", "health", "-m", tag]);
    assert!(
        out.status.success(),
        "mosquitto_pub failed ({tag}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sub.messages(1, Duration::from_secs(20)),
        [format!("health {tag}")],
        "a normal client was not served ({tag})"
    );
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(port: u16, name: &str) -> u64 {
    let body = http_get(port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
        .parse()
        .unwrap()
}

/// The broker's resident set size in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

#[test]
fn idle_sockets_without_connect_are_closed_after_the_connect_timeout() {
    let broker = Broker::start_with(Some("[server]\nconnect_timeout_ms = 500\n"));
    let mut sub = Sub::spawn(broker.port, &["-t", "health"]);
    sub.wait_subscribed();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    round_trip(broker.port, &mut sub, "while-idle-sockets-open");
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s),
            "idle socket {i} still open 30 s after a 500 ms connect timeout"
        );
    }
    // The subscriber, connected before the idle sockets, is not subject to
    // the connect timeout and still gets messages; new clients connect.
    round_trip(broker.port, &mut sub, "after-idle-sockets-closed");
}

/// A raw v3.1.1 client with a tiny receive buffer (the kernel buffers fill
/// after a few KiB), connected with keep alive 0, a will, and a persistent
/// session.
fn stalled_client(port: u16, client_id: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std_stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        stream.into_std().unwrap()
    });
    std_stream.set_nonblocking(false).unwrap();
    std_stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut s = std_stream;
    let mut connect = connect_packet(V311, client_id);
    connect.clean_start = false;
    connect.will = Some(LastWill {
        topic: format!("wills/{client_id}"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    send(&mut s, &Packet::Connect(Box::new(connect)), V311);
    let mut buf = BytesMut::new();
    match read_packet(&mut s, &mut buf, V311) {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    subscribe(&mut s, &mut buf, "flood/#");
    assert!(buf.is_empty());
    s
}

fn flood_seq(topic: &str) -> Option<u64> {
    topic.strip_prefix("flood/")?.parse().ok()
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_and_others_keep_receiving() {
    let metrics_port = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[limits]\nwrite_timeout_ms = 1000\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    )));
    let port = broker.port;
    // The well-behaved subscriber: same topics plus the stalled client's
    // will, topics only (-F %t) so it reads the flood quickly.
    let mut good = Sub::spawn(port, &["-t", "flood/#", "-t", "wills/#", "-F", "%t"]);
    good.wait_subscribed();
    let mut health = Sub::spawn(port, &["-t", "health"]);
    health.wait_subscribed();

    let mut stalled = stalled_client(port, "stalled");
    assert!(wait_until(Duration::from_secs(30), || metric(
        metrics_port,
        "edgemq_clients_connected"
    ) == 3));

    // The flood: 16 KiB QoS 0 messages with a sequence number in the topic,
    // from a raw publisher, paced a little so the good subscriber keeps up.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, published) = (stop.clone(), published.clone());
        let (mut p, _, _) = connect_v311(port, connect_packet(V311, "flooder"));
        std::thread::spawn(move || {
            let payload = Bytes::from(vec![b'x'; 16 * 1024]);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let packet = publish_packet(&format!("flood/{seq}"), payload.clone(), false);
                send(&mut p, &packet, V311);
                seq += 1;
                published.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            p
        })
    };

    // (i) The broker gives up on the stalled client: counted as a write
    // timeout, and its will goes out. (iii) Meanwhile the broker's memory
    // stays bounded: the stalled client's queue does not grow with the flood.
    let mut max_rss = 0;
    let mut lines = Vec::new();
    let gave_up = wait_until(Duration::from_secs(120), || {
        max_rss = max_rss.max(rss_kib(broker.pid()));
        lines.extend(good.messages(usize::MAX, Duration::from_millis(200)));
        lines.iter().any(|l| l == "wills/stalled")
    });
    assert!(
        gave_up,
        "the stalled client's will never came; published {}, log:\n{}",
        published.load(Ordering::Relaxed),
        broker.log()
    );
    assert_eq!(
        metric(metrics_port, "edgemq_edgemq_disconnects_write_timeout"),
        1
    );
    assert!(broker
        .log()
        .contains("closing connection: client not reading (write timeout)"));
    // Some flooding after the disconnect, then stop.
    let after = published.load(Ordering::Relaxed) + 200;
    assert!(wait_until(Duration::from_secs(60), || {
        max_rss = max_rss.max(rss_kib(broker.pid()));
        published.load(Ordering::Relaxed) >= after
    }));
    stop.store(true, Ordering::Relaxed);
    let flooder_socket = flooder.join().unwrap();
    assert!(
        max_rss < 200 * 1024,
        "broker RSS reached {max_rss} KiB during the flood"
    );

    // The stalled socket: everything the broker managed to queue, then the
    // close. The last flood message it got marks when its pipeline was full.
    let mut buf = BytesMut::new();
    let mut last_stalled = None;
    while let Some(packet) = read_packet(&mut stalled, &mut buf, V311) {
        if let Packet::Publish(p) = packet {
            last_stalled = flood_seq(&p.topic).or(last_stalled);
        }
    }
    let last_stalled = last_stalled.expect("the stalled client got no flood message at all");
    assert!(
        closed_by_peer(&mut stalled),
        "the stalled socket is still open"
    );

    // (ii) The good subscriber received flood messages the stalled client
    // never got (published after its buffers and queue were full) and
    // before the broker gave up on it (ahead of its will in the same
    // ordered stream): it kept receiving while the other one stalled.
    let will_at = lines.iter().position(|l| l == "wills/stalled").unwrap();
    let during_stall = lines[..will_at]
        .iter()
        .filter_map(|l| flood_seq(l))
        .filter(|&seq| seq > last_stalled)
        .count();
    eprintln!(
        "flood: published {}, stalled client's last {last_stalled}, good subscriber \
         got {during_stall} while it stalled, broker max RSS {max_rss} KiB",
        published.load(Ordering::Relaxed)
    );
    assert!(
        during_stall >= 10,
        "only {during_stall} flood messages reached the good subscriber while \
         the other stalled (its last: {last_stalled}, published {})",
        published.load(Ordering::Relaxed)
    );
    assert!(
        lines.len() > will_at + 1 || !good.messages(1, Duration::from_secs(20)).is_empty(),
        "the good subscriber got nothing after the disconnect"
    );
    drop(flooder_socket);

    // Everyone else is fine, and the stalled client's persistent session
    // was kept like on any other disconnect.
    round_trip(port, &mut health, "after-the-stall");
    let mut again = connect_packet(V311, "stalled");
    again.clean_start = false;
    let (_c, _, session_present) = connect_v311(port, again);
    assert!(session_present, "the persistent session was not kept");
}

/// Reads the first bytes of a CONNACK: (return/reason code, whole packet).
fn read_connack(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x20, "not a CONNACK: {head:?}");
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).unwrap();
    (body[1], body)
}

#[test]
fn connections_beyond_max_connections_are_refused_and_the_broker_recovers() {
    let broker = Broker::start_with(Some("[server]\nmax_connections = 20\n"));
    let port = broker.port;
    // 20 slots: one mosquitto_sub and 19 raw clients.
    let mut sub = Sub::spawn(port, &["-t", "health"]);
    sub.wait_subscribed();
    let mut accepted: Vec<TcpStream> = (1..20)
        .map(|i| connect_v311(port, connect_packet(V311, &format!("ok-{i}"))).0)
        .collect();
    // Connections 21..40, alternating MQTT 5 and 3.1.1, all refused cleanly
    // (v5 CONNACK 0x97 Quota exceeded, 3.1.1 return code 3 Server
    // unavailable) and then closed.
    let mut refused = Vec::new();
    for i in 21..=40 {
        let version = if i % 2 == 0 { V5 } else { V311 };
        let mut s = raw_connect(port);
        send(
            &mut s,
            &Packet::Connect(Box::new(connect_packet(version, &format!("over-{i}")))),
            version,
        );
        let (code, body) = read_connack(&mut s);
        let expected = if version.is_v5() { 0x97 } else { 3 };
        assert_eq!(code, expected, "connection {i} ({version:?}): {body:?}");
        assert!(closed_by_peer(&mut s), "refused connection {i} left open");
        refused.push(s);
    }
    // The 20 accepted clients are unaffected: they ping, and one of them
    // publishes to the mosquitto_sub.
    let mut buf = BytesMut::new();
    for (i, c) in accepted.iter_mut().enumerate() {
        send(c, &Packet::PingReq, V311);
        buf.clear();
        assert!(
            matches!(read_packet(c, &mut buf, V311), Some(Packet::PingResp)),
            "accepted client {i} no longer served"
        );
    }
    send(
        &mut accepted[0],
        &publish_packet("health", Bytes::from_static(b"during-flood"), false),
        V311,
    );
    assert_eq!(
        sub.messages(1, Duration::from_secs(20)),
        ["health during-flood"]
    );
    // Close the flood and the raw clients: a normal client gets in again
    // (its slot is freed when the broker notices the close).
    drop(refused);
    drop(accepted);
    let mut attempts = 0;
    let back = wait_until(Duration::from_secs(30), || {
        attempts += 1;
        mosquitto_pub(port, &["-t", "health", "-m", "after-flood"])
            .status
            .success()
    });
    assert!(
        back,
        "no client could connect after the flood ({attempts} attempts)"
    );
    let got = sub.messages(1, Duration::from_secs(20));
    assert_eq!(got, ["health after-flood"]);
}

#[test]
fn retained_messages_beyond_the_bound_are_not_stored() {
    let metrics_port = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[limits]\nmax_retained_messages = 100\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    )));
    let port = broker.port;
    let mut health = Sub::spawn(port, &["-t", "health"]);
    health.wait_subscribed();
    // 300 retained messages on distinct topics, in order, from one client;
    // a QoS 1 publish at the end acknowledges that all were handled.
    let (mut p, mut pbuf, _) = connect_v311(port, connect_packet(V311, "retainer"));
    for i in 0..300 {
        let packet = publish_packet(&format!("r/{i}"), Bytes::from(format!("v{i}")), true);
        send(&mut p, &packet, V311);
    }
    send(
        &mut p,
        &Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            pkid: 1,
            topic: "barrier".into(),
            payload: Bytes::from_static(b"b"),
            ..Publish::default()
        }),
        V311,
    );
    assert!(matches!(
        read_packet(&mut p, &mut pbuf, V311),
        Some(Packet::PubAck(_))
    ));
    round_trip(port, &mut health, "after-retained-flood");

    // The router's policy (router/retained.rs): a retained message for a
    // new topic beyond the bound is not stored (and is counted); the first
    // 100 stay. $SYS topics (on by default here) do not use up the bound.
    let retained_of = |marker: &str| -> Vec<(String, Bytes)> {
        let (mut s, mut buf, _) = connect_v311(port, connect_packet(V311, "fresh"));
        subscribe(&mut s, &mut buf, "#");
        // Retained messages go out ahead of newer traffic: a live marker
        // ends them.
        let out = mosquitto_pub(port, &["-t", "zz/end", "-m", marker]);
        assert!(out.status.success());
        let mut got = Vec::new();
        loop {
            match read_packet(&mut s, &mut buf, V311) {
                Some(Packet::Publish(m)) if m.topic == "zz/end" => {
                    assert!(!m.retain);
                    return got;
                }
                Some(Packet::Publish(m)) => {
                    assert!(m.retain, "live message {m:?} before the marker");
                    got.push((m.topic, m.payload));
                }
                other => panic!("unexpected {other:?} after {} retained", got.len()),
            }
        }
    };
    let got = retained_of("1");
    let topics: BTreeSet<String> = got.iter().map(|(t, _)| t.clone()).collect();
    let expected: BTreeSet<String> = (0..100).map(|i| format!("r/{i}")).collect();
    assert_eq!(got.len(), 100, "{topics:?}");
    assert_eq!(topics, expected);
    for (t, payload) in &got {
        assert_eq!(payload, &Bytes::from(format!("v{}", &t[2..])));
    }
    // The count includes the broker's own $SYS topics, which are outside
    // the bound: exactly the 200 client topics beyond it were dropped.
    assert!(metric(metrics_port, "edgemq_retained_messages_count") >= 100);
    assert_eq!(
        metric(metrics_port, "edgemq_edgemq_dropped_retained_full"),
        200
    );

    // At the bound, replacing a stored topic still works and a new topic is
    // still refused; the broker keeps serving.
    for args in [
        ["-r", "-t", "r/5", "-m", "new5"],
        ["-r", "-t", "r/300", "-m", "v300"],
    ] {
        assert!(mosquitto_pub(port, &args).status.success());
    }
    let got = retained_of("2");
    assert_eq!(got.len(), 100);
    assert!(got.contains(&("r/5".to_string(), Bytes::from_static(b"new5"))));
    assert!(!got.iter().any(|(t, _)| t == "r/300"));
    round_trip(port, &mut health, "at-the-retained-bound");
}

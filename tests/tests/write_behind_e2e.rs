//! Write-behind with a deadline (issue 13, `[storage] spill_after_ms`) end
//! to end: a message every persistent destination acknowledges before the
//! deadline is never written; one acknowledged after it is written and
//! synced before its publisher's PUBACK, so a `kill -9` between the spill
//! and the late acknowledgement loses nothing; a publisher whose message
//! is neither acknowledged nor spilled gets no PUBACK.
//!
//! Real edgemq, a real Mosquitto as the cloud behind a test proxy that
//! delays the cloud's bytes to the edge (the cloud's PUBACKs arrive just
//! before or just after the deadline), raw MQTT clients with edgemq's codec
//! (a subscriber that holds back its PUBACK), real files, real `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS, Subscribe,
    SubscribeFilter,
};
use edgemq_tests::{raw_connect, read_packet, wait_sys, Broker, Mosquitto, Sub};

const V: ProtocolVersion = ProtocolVersion::V311;

fn send(s: &mut TcpStream, p: &Packet) {
    let mut out = BytesMut::new();
    protocol::encode(p, V, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

/// A raw 3.1.1 client; `clean` false keeps a persistent session.
fn client(port: u16, id: &str, clean: bool) -> (TcpStream, BytesMut) {
    let mut s = raw_connect(port);
    let c = Connect {
        protocol: V,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    send(&mut s, &Packet::Connect(Box::new(c)));
    let mut buf = BytesMut::new();
    match read_packet(&mut s, &mut buf, V) {
        Some(Packet::ConnAck(a)) if a.reason_code == 0 => (s, buf),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn subscribe(s: &mut TcpStream, buf: &mut BytesMut, filter: &str) {
    send(
        s,
        &Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)],
            ..Subscribe::default()
        }),
    );
    match read_packet(s, buf, V) {
        Some(Packet::SubAck(a)) => assert!(a.reason_codes[0] < 0x80, "{a:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn publish(s: &mut TcpStream, pkid: u16, topic: &str, payload: &str) {
    let p = Publish {
        qos: QoS::AtLeastOnce,
        topic: topic.into(),
        pkid,
        payload: Bytes::from(payload.to_string()),
        ..Default::default()
    };
    send(s, &Packet::Publish(p));
}

/// The next QoS 1 PUBLISH (packet id, payload) within `timeout`.
fn next_publish(s: &mut TcpStream, buf: &mut BytesMut, timeout: Duration) -> Option<(u16, String)> {
    s.set_read_timeout(Some(timeout)).unwrap();
    loop {
        match read_packet(s, buf, V)? {
            Packet::Publish(p) => {
                return Some((p.pkid, String::from_utf8_lossy(&p.payload).into_owned()))
            }
            _ => continue,
        }
    }
}

fn puback(s: &mut TcpStream, pkid: u16) {
    send(
        s,
        &Packet::PubAck(PubAck {
            pkid,
            ..Default::default()
        }),
    );
}

/// Waits for the PUBACKs of `pkids` (at most `timeout`); returns when each
/// came, measured from `since`.
fn pubacks(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    pkids: &[u16],
    since: Instant,
    timeout: Duration,
) -> Vec<(u16, Duration)> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    while got.len() < pkids.len() {
        match read_packet(s, buf, V) {
            Some(Packet::PubAck(a)) if pkids.contains(&a.pkid) => {
                got.push((a.pkid, since.elapsed()))
            }
            Some(_) => {}
            None => break,
        }
    }
    got
}

fn config(spill_after_ms: u64, extra: &str) -> String {
    format!("[sys]\ninterval_secs = 1\n\n[storage]\nspill_after_ms = {spill_after_ms}\n{extra}")
}

/// A persistent subscriber that acknowledges just before the deadline:
/// the publisher's PUBACK follows the subscriber's, nothing is written, and
/// after a `kill -9` nothing comes back.
#[test]
fn subscriber_acking_just_before_the_deadline_costs_no_write() {
    let mut broker = Broker::start_with(Some(&config(1500, "")));
    let (mut sub, mut sbuf) = client(broker.port, "wb-sub", false);
    subscribe(&mut sub, &mut sbuf, "wb/#");
    let (mut publ, mut pbuf) = client(broker.port, "wb-pub", true);
    for i in 1..=3u16 {
        let t0 = Instant::now();
        publish(&mut publ, i, "wb/t", &format!("m{i}"));
        let (pkid, payload) = next_publish(&mut sub, &mut sbuf, Duration::from_secs(10))
            .expect("the subscriber got the message");
        assert_eq!(payload, format!("m{i}"));
        // Held back: the publisher has no PUBACK while nobody has a copy
        // but RAM.
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            pubacks(&mut publ, &mut pbuf, &[i], t0, Duration::from_millis(50)).is_empty(),
            "PUBACK before the subscriber's acknowledgement or the deadline"
        );
        puback(&mut sub, pkid);
        let got = pubacks(&mut publ, &mut pbuf, &[i], t0, Duration::from_secs(10));
        assert_eq!(got.len(), 1, "no PUBACK; log:\n{}", broker.log());
        assert!(got[0].1 < Duration::from_millis(1500), "{got:?}");
    }
    assert_eq!(wait_sys(broker.port, "$SYS/broker/store/spared", "3"), "3");
    assert_eq!(
        wait_sys(broker.port, "$SYS/broker/store/appended", "0"),
        "0"
    );
    drop(sub);
    broker.kill9();
    broker.restart();
    let (mut sub, mut sbuf) = client(broker.port, "wb-sub", false);
    let again = next_publish(&mut sub, &mut sbuf, Duration::from_secs(2));
    assert_eq!(again, None, "an acknowledged message came back");
}

/// A persistent subscriber that acknowledges after the deadline: the
/// message is written and synced, the publisher gets its PUBACK at the
/// deadline, and a `kill -9` before the subscriber's PUBACK loses nothing.
/// A message killed before its deadline was never PUBACKed.
#[test]
fn subscriber_acking_after_the_deadline_finds_it_after_kill_9() {
    let spill = Duration::from_millis(500);
    let mut broker = Broker::start_with(Some(&config(500, "")));
    let (mut sub, mut sbuf) = client(broker.port, "wb-late", false);
    subscribe(&mut sub, &mut sbuf, "late/#");
    // A second subscriber that owes nothing on flash, for the kill before
    // a deadline (the first one's later messages are written at once).
    let (mut other, mut obuf) = client(broker.port, "wb-other", false);
    subscribe(&mut other, &mut obuf, "other/#");
    let (mut publ, mut pbuf) = client(broker.port, "wb-pub", true);
    let t0 = Instant::now();
    publish(&mut publ, 1, "late/t", "spilled");
    let (_, payload) = next_publish(&mut sub, &mut sbuf, Duration::from_secs(10)).unwrap();
    assert_eq!(payload, "spilled");
    let got = pubacks(&mut publ, &mut pbuf, &[1], t0, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "no PUBACK; log:\n{}", broker.log());
    assert!(got[0].1 >= spill, "PUBACK before the deadline: {got:?}");
    // Killed before its deadline: no PUBACK was sent for this one.
    let t1 = Instant::now();
    publish(&mut publ, 2, "other/t", "unacked");
    assert!(next_publish(&mut other, &mut obuf, Duration::from_secs(10)).is_some());
    let early = pubacks(&mut publ, &mut pbuf, &[2], t1, spill / 4);
    broker.kill9();
    assert!(early.is_empty(), "PUBACK before the deadline: {early:?}");
    assert!(t1.elapsed() < spill, "too slow to kill before the deadline");
    // The subscriber never acknowledged: the spilled message is still owed.
    drop((sub, other));
    broker.restart();
    let (mut sub, mut sbuf) = client(broker.port, "wb-late", false);
    let mut seen = Vec::new();
    while let Some((pkid, p)) = next_publish(&mut sub, &mut sbuf, Duration::from_secs(3)) {
        puback(&mut sub, pkid);
        seen.push(p);
    }
    assert!(
        seen.contains(&"spilled".to_string()),
        "the PUBACKed message was lost: {seen:?}; log:\n{}",
        broker.log()
    );
}

/// A TCP proxy between the edge's bridge and the cloud that holds the
/// cloud's bytes back for `delay_ms` (so its PUBACKs come late).
struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
}

impl Proxy {
    fn start(cloud: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        std::thread::spawn(move || {
            for edge in listener.incoming() {
                let Ok(edge) = edge else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", cloud)) else {
                    continue;
                };
                pipe(edge.try_clone().unwrap(), up.try_clone().unwrap(), None);
                pipe(up, edge, Some(delay.clone()));
            }
        });
        Proxy { port, delay_ms }
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, to: TcpStream, delay: Option<Arc<AtomicU64>>) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let d = delay.as_ref().map_or(0, |d| d.load(Ordering::SeqCst));
            let at = Instant::now() + Duration::from_millis(d);
            if tx.send((at, chunk[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let mut to = to;
        for (at, bytes) in rx {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

fn bridge_config(spill_after_ms: u64, cloud_port: u16) -> String {
    config(
        spill_after_ms,
        &format!(
            r#"
[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
client_id = "gw-wb"
reconnect_min_ms = 50
reconnect_max_ms = 200

[[bridge.forward]]
filter = "sensors/#"
remote_prefix = "gw/"
qos = 1
"#
        ),
    )
}

/// The cloud acknowledging just before the deadline costs no write; the
/// cloud acknowledging after it gets the messages spilled and synced before
/// their PUBACKs, and a `kill -9` between the spill and the cloud's PUBACKs
/// loses none of them.
#[test]
fn cloud_acking_before_the_deadline_costs_no_write_after_it_survives_kill_9() {
    let cloud = Mosquitto::start("max_queued_messages 100000");
    let mut watch = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw/#"]);
    watch.wait_subscribed();
    let proxy = Proxy::start(cloud.port);
    let spill = Duration::from_millis(1000);
    let mut edge = Broker::start_with(Some(&bridge_config(1000, proxy.port)));
    assert!(
        edgemq_tests::wait_until(Duration::from_secs(20), || edge
            .log()
            .contains("cloud link up")),
        "bridge did not connect; log:\n{}",
        edge.log()
    );
    // Just before: the cloud's PUBACKs are 600 ms late.
    proxy.set_delay(Duration::from_millis(600));
    let (mut publ, mut pbuf) = client(edge.port, "wb-pub", true);
    let t0 = Instant::now();
    let ids: Vec<u16> = (1..=10).collect();
    for &i in &ids {
        publish(&mut publ, i, "sensors/a", &format!("early {i}"));
    }
    let got = pubacks(&mut publ, &mut pbuf, &ids, t0, Duration::from_secs(10));
    assert_eq!(got.len(), 10, "PUBACKs: {got:?}; log:\n{}", edge.log());
    assert!(got
        .iter()
        .all(|(_, at)| *at < spill + Duration::from_millis(500)));
    assert_eq!(wait_sys(edge.port, "$SYS/broker/store/spared", "10"), "10");
    assert_eq!(wait_sys(edge.port, "$SYS/broker/store/appended", "0"), "0");
    assert_eq!(watch.messages(10, Duration::from_secs(10)).len(), 10);
    // Just after: the cloud's PUBACKs are 4 s late; the edge spills at 1 s.
    proxy.set_delay(Duration::from_millis(4000));
    let t1 = Instant::now();
    let ids: Vec<u16> = (11..=20).collect();
    for &i in &ids {
        publish(&mut publ, i, "sensors/a", &format!("late {i}"));
    }
    let got = pubacks(&mut publ, &mut pbuf, &ids, t1, Duration::from_secs(10));
    assert_eq!(got.len(), 10, "PUBACKs: {got:?}; log:\n{}", edge.log());
    assert!(
        got.iter().all(|(_, at)| *at >= spill),
        "PUBACK before the deadline: {got:?}"
    );
    // Killed before the cloud's acknowledgements reach the edge (the
    // cloud itself has the messages already: only its PUBACKs are late).
    assert!(
        t1.elapsed() < Duration::from_millis(3500),
        "too slow: {:?}",
        t1.elapsed()
    );
    edge.kill9();
    assert_eq!(watch.messages(10, Duration::from_secs(10)).len(), 10);
    proxy.set_delay(Duration::ZERO);
    // After the restart the edge still owes them to the cloud: it sends
    // every one again from its store.
    edge.restart();
    let late: Vec<String> = watch
        .messages(10, Duration::from_secs(30))
        .into_iter()
        .filter(|l| l.contains("late"))
        .collect();
    let mut want: Vec<String> = ids.iter().map(|i| format!("late {i}")).collect();
    want.retain(|w| !late.iter().any(|l| l.ends_with(w.as_str())));
    assert!(
        want.is_empty(),
        "lost after kill -9: {want:?}; log:\n{}",
        edge.log()
    );
}

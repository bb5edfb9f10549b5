//! Flow control end to end (issue 14): the real broker binary, raw MQTT
//! clients on loopback sockets (edgemq's codec, so every packet id and
//! acknowledgement is visible).
//!
//! * fan-in to a slow but reading subscriber: every PUBACKed message is
//!   delivered (a full queue slows the publishers instead of dropping),
//!   and the broker's peak RSS stays bounded;
//! * a subscriber that stops reading is disconnected after
//!   `slow_consumer_timeout_ms` while another subscriber gets everything
//!   and the publisher keeps being acknowledged;
//! * a QoS 0 burst with the default config loses nothing when the
//!   subscriber keeps up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod raw_client;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgemq::protocol::{Packet, QoS};
use edgemq_tests::Broker;
use raw_client::{ack, publish, Raw, V311};

/// Small queues, so they are full within a few messages.
const SMALL_QUEUES: &str = "[limits]\noutbound_capacity = 16\nmax_queued_messages = 16\n";

/// Publishes `count` QoS `qos` messages `"{id}:{seq}"` on `topic` as fast as
/// the socket takes them (one thread writes, this one reads the PUBACKs);
/// returns the sequence numbers acknowledged (all of them for QoS 0).
fn publisher(port: u16, id: &str, topic: &str, qos: QoS, count: u16) -> Vec<u16> {
    let (raw, _) = Raw::connect(port, V311, id, true);
    let mut reader = raw;
    let mut writer = reader.s.try_clone().unwrap();
    let (id2, topic2) = (id.to_string(), topic.to_string());
    let v = reader.v;
    let write = thread::spawn(move || {
        let mut out = BytesMut::new();
        for seq in 1..=count {
            let pkid = if qos == QoS::AtMostOnce { 0 } else { seq };
            let p = publish(&topic2, qos, pkid, format!("{id2}:{seq}"));
            edgemq::protocol::encode(&p, v, &mut out).unwrap();
            if out.len() > 8192 {
                writer.write_all(&out).unwrap();
                out.clear();
            }
        }
        writer.write_all(&out).unwrap();
    });
    let mut acked = Vec::new();
    if qos != QoS::AtMostOnce {
        reader
            .s
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        while acked.len() < usize::from(count) {
            match reader.recv() {
                Some(Packet::PubAck(a)) => acked.push(a.pkid),
                other => panic!("{id}: expected PUBACK, got {other:?}"),
            }
        }
    }
    write.join().unwrap();
    if qos == QoS::AtMostOnce {
        acked = (1..=count).collect();
    }
    reader.disconnect();
    acked
}

/// A subscriber that reads and acknowledges (sleeping `pause` every 100
/// messages) until `want` arrived or nothing came for 5 s; returns the
/// payloads.
fn subscriber(mut s: Raw, want: usize, pause: Duration) -> Vec<String> {
    let mut got = Vec::with_capacity(want);
    s.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while got.len() < want {
        match s.recv() {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    s.send(Packet::PubAck(ack(p.pkid)));
                }
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                if got.len() % 100 == 0 && !pause.is_zero() {
                    thread::sleep(pause);
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    got
}

/// Peak resident set of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn fan_in_to_a_slow_subscriber_delivers_every_acknowledged_message() {
    let broker = Broker::start_with(Some(SMALL_QUEUES));
    let port = broker.port;
    let (mut sub, _) = Raw::connect(port, V311, "slow-sub", true);
    sub.subscribe("fan/#", QoS::AtLeastOnce);
    const PUBLISHERS: usize = 4;
    const EACH: u16 = 2500;
    let consumer = thread::spawn(move || {
        subscriber(
            sub,
            PUBLISHERS * usize::from(EACH),
            Duration::from_millis(2),
        )
    });
    let producers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            thread::spawn(move || {
                let id = format!("p{i}");
                let acked = publisher(port, &id, &format!("fan/{i}"), QoS::AtLeastOnce, EACH);
                (id, acked)
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for p in producers {
        let (id, seqs) = p.join().unwrap();
        acked.extend(seqs.into_iter().map(|s| format!("{id}:{s}")));
    }
    let delivered: HashSet<String> = consumer.join().unwrap().into_iter().collect();
    let lost: Vec<_> = acked.difference(&delivered).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} of {} PUBACKed messages never delivered, e.g. {lost:?}",
        acked.difference(&delivered).count(),
        acked.len()
    );
    assert_eq!(acked.len(), PUBLISHERS * usize::from(EACH));
    let rss = peak_rss_kib(broker.pid());
    assert!(rss < 64 * 1024, "broker peak RSS {rss} KiB");
}

/// Reads a raw socket until the broker closes it (EOF) or `within` passes;
/// true on EOF.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut chunk = vec![0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected_and_holds_nobody_hostage() {
    let config = format!("{SMALL_QUEUES}slow_consumer_timeout_ms = 1000\n");
    let broker = Broker::start_with(Some(&config));
    let port = broker.port;
    // The stuck one: subscribes, then never reads its socket again.
    let (mut stuck, _) = Raw::connect(port, V311, "stuck", true);
    stuck.subscribe("slow/#", QoS::AtLeastOnce);
    let (good, _) = Raw::connect(port, V311, "good", true);
    let mut good = good;
    good.subscribe("slow/#", QoS::AtLeastOnce);
    // 1 KB payloads fill the stuck socket's kernel buffers quickly.
    const COUNT: u16 = 20_000;
    let consumer = thread::spawn(move || subscriber(good, usize::from(COUNT), Duration::ZERO));
    let started = Instant::now();
    let acked = Arc::new(Mutex::new(0usize));
    let (mut p, _) = Raw::connect(port, V311, "pub", true);
    let mut writer = p.s.try_clone().unwrap();
    let write = thread::spawn(move || {
        let mut out = BytesMut::new();
        for seq in 1..=COUNT {
            let payload = format!("{seq:01024}");
            let packet = publish("slow/t", QoS::AtLeastOnce, seq, payload);
            edgemq::protocol::encode(&packet, V311, &mut out).unwrap();
            if out.len() > 16384 {
                writer.write_all(&out).unwrap();
                out.clear();
            }
        }
        writer.write_all(&out).unwrap();
    });
    p.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    while *acked.lock().unwrap() < usize::from(COUNT) {
        match p.recv() {
            Some(Packet::PubAck(_)) => *acked.lock().unwrap() += 1,
            other => panic!("publisher blocked or refused: {other:?}"),
        }
    }
    write.join().unwrap();
    let publishing = started.elapsed();
    let got = consumer.join().unwrap();
    assert_eq!(
        got.len(),
        usize::from(COUNT),
        "the reading subscriber lost messages"
    );
    // The stuck subscriber was disconnected as a slow consumer (well before
    // the 30 s write timeout).
    assert!(
        closed_within(&mut stuck.s, Duration::from_secs(10)),
        "the stuck subscriber is still connected; log:\n{}",
        broker.log()
    );
    assert!(
        broker.log().contains("slow consumer"),
        "no slow-consumer disconnect logged:\n{}",
        broker.log()
    );
    // The publisher waited at most about one timeout for the stuck queue:
    // the whole run is far shorter than the write timeout.
    assert!(
        publishing < Duration::from_secs(25),
        "publishing took {publishing:?}"
    );
}

#[test]
fn qos0_burst_with_default_config_loses_nothing_when_the_subscriber_keeps_up() {
    let broker = Broker::start();
    let port = broker.port;
    let (mut sub, _) = Raw::connect(port, V311, "fast-sub", true);
    sub.subscribe("burst/#", QoS::AtMostOnce);
    const PUBLISHERS: usize = 4;
    const EACH: u16 = 25_000;
    let consumer =
        thread::spawn(move || subscriber(sub, PUBLISHERS * usize::from(EACH), Duration::ZERO));
    let producers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            thread::spawn(move || {
                let id = format!("q{i}");
                publisher(port, &id, &format!("burst/{i}"), QoS::AtMostOnce, EACH)
            })
        })
        .collect();
    for p in producers {
        assert_eq!(p.join().unwrap().len(), usize::from(EACH));
    }
    let got = consumer.join().unwrap();
    assert_eq!(
        got.len(),
        PUBLISHERS * usize::from(EACH),
        "QoS 0 messages dropped in a burst"
    );
}

#[test]
fn a_publisher_that_closes_its_socket_mid_burst_still_gets_everything_delivered() {
    // Small queues and a slow subscriber: the publisher's messages are held
    // and deferred when its socket reaches end of stream (no DISCONNECT,
    // as a sensor that powers down after its burst). Before, the broker
    // dropped the held message and the deferred packets at that moment.
    let broker = Broker::start_with(Some(SMALL_QUEUES));
    let port = broker.port;
    let (mut sub, _) = Raw::connect(port, V311, "slow-sub", true);
    sub.subscribe("eof/#", QoS::AtMostOnce);
    const COUNT: u16 = 3_000;
    let consumer =
        thread::spawn(move || subscriber(sub, usize::from(COUNT), Duration::from_millis(20)));
    let (raw, _) = Raw::connect(port, V311, "closing-pub", true);
    let mut out = BytesMut::new();
    for seq in 1..=COUNT {
        let p = publish("eof/x", QoS::AtMostOnce, 0, format!("p:{seq}"));
        edgemq::protocol::encode(&p, raw.v, &mut out).unwrap();
    }
    let mut s = raw.s;
    s.write_all(&out).unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let got = consumer.join().unwrap();
    let want: Vec<String> = (1..=COUNT).map(|seq| format!("p:{seq}")).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "messages lost at the publisher's end of stream"
    );
    assert_eq!(got, want, "order changed");
}

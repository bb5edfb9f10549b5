//! The durability contract end to end (issue 3): what edgemq acknowledged
//! survives `kill -9`. A persistent subscriber goes offline, a publisher
//! sends 10,000 QoS 1 messages counting PUBACKs, the broker is killed in the
//! middle of the stream and restarted on the same data directory, and the
//! subscriber must receive every message that was PUBACKed. Issue 11: the
//! image's geometry is checked, the data directory is locked, and damaged
//! flash does not stop the broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS,
};
use edgemq_tests::{
    edgemq_command, free_port, mosquitto_pub, mosquitto_sub, raw_connect, run, Broker,
};
use rumqttc::{Client, Event, Incoming, MqttOptions};

const V: ProtocolVersion = ProtocolVersion::V311;

fn connect_raw(port: u16, client_id: &str) -> std::net::TcpStream {
    let mut s = raw_connect(port);
    let mut buf = BytesMut::new();
    let c = Connect {
        protocol: V,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    protocol::encode(&Packet::Connect(Box::new(c)), V, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    let mut rb = BytesMut::new();
    match read_packet(&mut s, &mut rb) {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    s
}

fn read_packet(s: &mut std::net::TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    edgemq_tests::read_packet(s, buf, V)
}

/// Subscribes `client_id` persistently (clean session off) and disconnects.
fn park_subscriber(port: u16, client_id: &str, filter: &str) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false);
    let (client, mut conn) = Client::new(opts, 100);
    client.subscribe(filter, rumqttc::QoS::AtLeastOnce).unwrap();
    for event in conn.iter() {
        if let Ok(Event::Incoming(Incoming::SubAck(_))) = event {
            break;
        }
        event.unwrap();
    }
    client.disconnect().unwrap();
    for event in conn.iter() {
        if event.is_err() {
            break;
        }
    }
}

/// Reconnects `client_id` with its session and collects payloads until
/// `expected` are all seen or `timeout` passes; returns (seen set, total received).
fn drain_subscriber(
    broker: &Broker,
    client_id: &str,
    expected: &HashSet<u32>,
    timeout: Duration,
) -> (HashSet<u32>, usize) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    opts.set_clean_session(false);
    opts.set_inflight(100);
    let (_client, mut conn) = Client::new(opts, 100);
    let mut seen = HashSet::new();
    let mut total = 0;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !expected.is_subset(&seen) {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                total += 1;
                seen.insert(std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("subscriber connection failed: {e}; log:\n{}", broker.log()),
        }
    }
    (seen, total)
}

#[test]
fn pubacked_messages_survive_kill_9() {
    let mut broker = Broker::start();
    park_subscriber(broker.port, "durable-sub", "dur/#");

    let mut s = connect_raw(broker.port, "durable-pub");
    let mut rb = BytesMut::new();
    let mut acked = HashSet::new();
    let mut in_flight = std::collections::HashMap::new();
    let (total, window, kill_after) = (10_000u32, 64usize, 5_000usize);
    let mut next = 1u32;
    'stream: while next <= total || !in_flight.is_empty() {
        let mut out = BytesMut::new();
        while in_flight.len() < window && next <= total {
            let pkid = ((next - 1) % 65_535 + 1) as u16;
            let p = Publish {
                qos: QoS::AtLeastOnce,
                topic: format!("dur/{}", next % 7),
                pkid,
                payload: Bytes::from(next.to_string()),
                ..Default::default()
            };
            protocol::encode(&Packet::Publish(p), V, &mut out).unwrap();
            in_flight.insert(pkid, next);
            next += 1;
        }
        if s.write_all(&out).is_err() {
            break;
        }
        match read_packet(&mut s, &mut rb) {
            Some(Packet::PubAck(PubAck { pkid, .. })) => {
                let seq = in_flight
                    .remove(&pkid)
                    .expect("PUBACK for an unknown packet id");
                acked.insert(seq);
                if acked.len() == kill_after {
                    broker.kill9();
                    break 'stream;
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(acked.len(), kill_after, "the broker was killed mid-stream");
    broker.restart();
    let (seen, received) =
        drain_subscriber(&broker, "durable-sub", &acked, Duration::from_secs(60));
    let missing: Vec<_> = acked.difference(&seen).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} PUBACKed messages lost (e.g. {missing:?}); log:\n{}",
        acked.difference(&seen).count(),
        broker.log()
    );
    let duplicates = received - seen.len();
    println!(
        "acked {}, received {received} ({duplicates} duplicates)",
        acked.len()
    );
}

#[test]
fn retained_and_session_subscriptions_survive_kill_9() {
    let mut broker = Broker::start();
    // A persistent v5 session with a subscription, via mosquitto_sub.
    let sub = mosquitto_sub(
        broker.port,
        &[
            "-V", "mqttv5", "-c", "-i", "keeper", "-q", "1", "-x", "3600", "-t", "sess/#",
        ],
        1,
        2,
    );
    drop(sub.wait_with_output());
    let out = mosquitto_pub(broker.port, &["-q", "1", "-r", "-t", "ret/a", "-m", "kept"]);
    assert!(out.status.success());
    broker.kill9();
    broker.restart();
    // The retained message is back.
    let got = mosquitto_sub(broker.port, &["-t", "ret/#"], 1, 10)
        .wait_with_output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "kept");
    // The session's subscription is back: a message published while it is
    // offline is queued and delivered when it reconnects.
    assert!(
        mosquitto_pub(broker.port, &["-q", "1", "-t", "sess/x", "-m", "queued"])
            .status
            .success()
    );
    let got = mosquitto_sub(
        broker.port,
        &[
            "-V", "mqttv5", "-c", "-i", "keeper", "-q", "1", "-x", "3600", "-t", "sess/#",
        ],
        1,
        10,
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "queued",
        "log:\n{}",
        broker.log()
    );
}

/// Publishes `n` QoS 1 messages with payloads `from..from + n`, each PUBACKed.
fn publish_numbered(port: u16, topic: &str, from: u32, n: u32) -> HashSet<u32> {
    let mut s = connect_raw(port, "numbered-pub");
    let mut rb = BytesMut::new();
    let mut acked = HashSet::new();
    for (k, seq) in (from..from + n).enumerate() {
        let mut out = BytesMut::new();
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.into(),
            pkid: (k % 65_535 + 1) as u16,
            payload: Bytes::from(seq.to_string()),
            ..Default::default()
        };
        protocol::encode(&Packet::Publish(p), V, &mut out).unwrap();
        s.write_all(&out).unwrap();
        match read_packet(&mut s, &mut rb) {
            Some(Packet::PubAck(_)) => {
                acked.insert(seq);
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    acked
}

/// Runs a second edgemq on `data_dir` with `config`; returns (exit ok, stderr).
fn run_edgemq(dir: &std::path::Path, data_dir: &std::path::Path, config: &str) -> (bool, String) {
    let path = dir.join("other.toml");
    std::fs::write(&path, config).unwrap();
    let out = run(
        edgemq_command()
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port())),
        Duration::from_secs(30),
    )
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// D4: restarting a 1 MiB-segment store with `segment_size = 4194304` is
/// refused with an error naming `segment_size`; the image is untouched and
/// the next start with the right geometry delivers every acknowledged message.
#[test]
fn another_segment_size_is_refused_and_nothing_acknowledged_is_lost() {
    let mut broker = Broker::start();
    park_subscriber(broker.port, "geo-sub", "geo/#");
    let acked = publish_numbered(broker.port, "geo/x", 1, 300);
    assert_eq!(broker.terminate(), Some(0));
    let image = broker.data_dir().join("store.img");
    let before = std::fs::read(&image).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_edgemq(
        tmp.path(),
        &broker.data_dir(),
        "[storage]\nsegment_size = 4194304\n",
    );
    assert!(
        !ok,
        "started on a 1 MiB-segment image with 4 MiB segments: {stderr}"
    );
    assert!(stderr.contains("segment_size"), "{stderr}");
    assert!(
        std::fs::read(&image).unwrap() == before,
        "the refused start changed the image"
    );
    broker.restart();
    let (seen, _) = drain_subscriber(&broker, "geo-sub", &acked, Duration::from_secs(60));
    assert!(
        acked.is_subset(&seen),
        "lost {:?}",
        acked.difference(&seen).take(10).collect::<Vec<_>>()
    );
}

/// M4: a second edgemq on the same data directory refuses to start with a
/// clear error, and the first one keeps serving.
#[test]
fn a_second_broker_on_the_same_data_directory_refuses_to_start() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_edgemq(tmp.path(), &broker.data_dir(), "");
    assert!(
        !ok,
        "a second broker started on a locked data directory: {stderr}"
    );
    assert!(stderr.contains("in use by another edgemq"), "{stderr}");
    park_subscriber(broker.port, "lock-sub", "lock/#");
    let acked = publish_numbered(broker.port, "lock/x", 1, 5);
    let (seen, _) = drain_subscriber(&broker, "lock-sub", &acked, Duration::from_secs(30));
    assert_eq!(seen, acked);
}

/// C1 end to end: the word after the last record reads 0xFFFFFFFE (one bit
/// of erased flash flipped). The broker starts and serves a persistent
/// round trip through the store. On armv7 (EDGEMQ_BIN/EDGEMQ_RUNNER) this
/// used to panic at every start.
#[test]
fn a_flipped_bit_after_the_last_record_does_not_stop_the_broker() {
    use std::os::unix::fs::FileExt;
    let mut broker = Broker::start();
    assert_eq!(broker.terminate(), Some(0));
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(broker.data_dir().join("store.img"))
        .unwrap();
    // Segment 0 is the first head; its first record slot follows the
    // header (32 bytes in format 2, 24 in format 1) and is still erased.
    let mut version = [0u8; 2];
    image.read_exact_at(&mut version, 4).unwrap();
    let slot = if version == [1, 0] { 24 } else { 32 };
    let mut word = [0u8; 4];
    image.read_exact_at(&mut word, slot).unwrap();
    assert_eq!(word, [0xFF; 4]);
    image.write_all_at(&[0xFE], slot).unwrap();
    image.sync_all().unwrap();
    drop(image);
    broker.restart();
    park_subscriber(broker.port, "c1-sub", "c1/#");
    let acked = publish_numbered(broker.port, "c1/x", 1, 20);
    broker.restart();
    let (seen, _) = drain_subscriber(&broker, "c1-sub", &acked, Duration::from_secs(30));
    assert_eq!(seen, acked, "log:\n{}", broker.log());
}

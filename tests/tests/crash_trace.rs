//! File-level crash test (issue 11, "the fault model"): a real broker runs
//! under `strace`, which records every `pwrite64` to the image (with its
//! bytes) and every `fsync`/`fdatasync`. A publisher streams QoS 1 messages
//! to an offline persistent session and notes when each PUBACK arrived.
//! Afterwards the trace is replayed: for every sync point, the image is
//! rebuilt from every write issued before that sync plus a random subset of
//! the writes issued after it (what a power cut right then could leave),
//! recovered with the store's own recovery, and every message PUBACKed
//! before that sync returned must be there, intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS,
};
use edgemq::storage::flash::RamFlash;
use edgemq::storage::{Overflow, Store};
use edgemq_tests::{edgemq_command, free_port, raw_connect, require_tool, wait_until};
use rumqttc::{Client, Event, Incoming, MqttOptions};

const V: ProtocolVersion = ProtocolVersion::V311;
const CAPACITY: usize = 1024 * 1024;
const SEGMENT: usize = 65536;

enum Op {
    /// A write and when it was issued (epoch seconds).
    Write {
        offset: usize,
        bytes: Vec<u8>,
        at: f64,
    },
    /// A sync that returned 0, and when it returned (epoch seconds).
    Sync { end: f64 },
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Starts the broker under strace (the trace goes to `dir/trace.txt`).
fn start_traced(dir: &std::path::Path, port: u16) -> Child {
    require_tool("strace");
    let config = dir.join("edgemq.toml");
    std::fs::write(
        &config,
        format!("[storage]\ncapacity = {CAPACITY}\nsegment_size = {SEGMENT}\n"),
    )
    .unwrap();
    let broker = edgemq_command();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-ttt", "-T", "-e", "trace=pwrite64,fsync,fdatasync"])
        .args(["-e", "write=all", "-o"])
        .arg(dir.join("trace.txt"))
        .arg(broker.get_program())
        .args(broker.get_args())
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("broker.log")).unwrap());
    let child = cmd.spawn().unwrap();
    let log = dir.join("broker.log");
    assert!(
        wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("edgemq started"))
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "traced broker did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    child
}

fn park_subscriber(port: u16, client_id: &str) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false);
    let (client, mut conn) = Client::new(opts, 100);
    client
        .subscribe("trace/#", rumqttc::QoS::AtLeastOnce)
        .unwrap();
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

/// Reconnects the session and receives (and PUBACKs) `n` messages.
fn drain(port: u16, client_id: &str, n: usize) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_inflight(100);
    let (_client, mut conn) = Client::new(opts, 100);
    let mut got = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while got.len() < n && std::time::Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Incoming::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(500))
        {
            let seq: u32 = std::str::from_utf8(&p.payload).unwrap()[..6]
                .parse()
                .unwrap();
            got.entry(seq).or_insert_with(now);
        }
    }
    assert_eq!(got.len(), n, "the session did not get every message");
}

/// Streams QoS 1 messages `seqs` (payload = sequence number) with a window;
/// returns when each was PUBACKed.
fn publish(port: u16, seqs: std::ops::RangeInclusive<u32>) -> HashMap<u32, f64> {
    let mut s = raw_connect(port);
    let mut buf = BytesMut::new();
    let c = Connect {
        protocol: V,
        clean_start: true,
        keep_alive: 60,
        client_id: "trace-pub".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    protocol::encode(&Packet::Connect(Box::new(c)), V, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    let mut rb = BytesMut::new();
    assert!(matches!(
        edgemq_tests::read_packet(&mut s, &mut rb, V),
        Some(Packet::ConnAck(_))
    ));
    let mut acked = HashMap::new();
    let mut in_flight = HashMap::new();
    let (mut next, total) = (*seqs.start(), *seqs.end());
    while next <= total || !in_flight.is_empty() {
        let mut out = BytesMut::new();
        while in_flight.len() < 32 && next <= total {
            let pkid = (next % 65_000 + 1) as u16;
            let p = Publish {
                qos: QoS::AtLeastOnce,
                topic: "trace/x".into(),
                pkid,
                payload: Bytes::from(format!("{next:06}").repeat(20)),
                ..Default::default()
            };
            protocol::encode(&Packet::Publish(p), V, &mut out).unwrap();
            in_flight.insert(pkid, next);
            next += 1;
        }
        s.write_all(&out).unwrap();
        match edgemq_tests::read_packet(&mut s, &mut rb, V) {
            Some(Packet::PubAck(PubAck { pkid, .. })) => {
                let seq = in_flight.remove(&pkid).expect("PUBACK for an unknown id");
                acked.insert(seq, now());
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    acked
}

/// `..., COUNT, OFFSET) = N <T>` or `..., COUNT, OFFSET <unfinished ...>`.
fn pwrite_offset(line: &str) -> usize {
    let args = line.split(" <unfinished").next().unwrap();
    let args = args.rsplit_once(" = ").map_or(args, |(a, _)| a);
    let args = args.trim_end().trim_end_matches(')');
    args.rsplit(", ").next().unwrap().trim().parse().unwrap()
}

/// Parses the strace output into the image's writes and successful syncs.
fn parse_trace(text: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut pending_offset: HashMap<String, (usize, f64)> = HashMap::new();
    let mut current: Option<(usize, Vec<u8>, f64)> = None;
    for line in text.lines() {
        if let Some(dump) = line.strip_prefix(" | ") {
            // " | 00000  68 65 ...  (16 bytes, 8 + 8)   ascii |"
            let hex = dump.get(7..56).unwrap_or("");
            if let Some((_, bytes, _)) = current.as_mut() {
                bytes.extend(
                    hex.split_whitespace()
                        .map(|b| u8::from_str_radix(b, 16).unwrap()),
                );
            }
            continue;
        }
        if let Some((offset, bytes, at)) = current.take() {
            ops.push(Op::Write { offset, bytes, at });
        }
        // "PID TIMESTAMP CALL": strace pads the pid, so split on runs of spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, call)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (pid, ts, call) = (
            pid.to_string(),
            ts.parse::<f64>().unwrap_or(0.0),
            call.trim_start(),
        );
        let result = call.rsplit_once(" = ").map(|(_, r)| r);
        if call.starts_with("pwrite64(") {
            if call.contains("<unfinished") {
                pending_offset.insert(pid, (pwrite_offset(call), ts));
            } else if result.is_some_and(|r| !r.starts_with('-')) {
                current = Some((pwrite_offset(call), Vec::new(), ts));
            }
        } else if call.starts_with("<... pwrite64 resumed>") {
            if let Some((offset, at)) = pending_offset.remove(&pid) {
                if result.is_some_and(|r| !r.starts_with('-')) {
                    current = Some((offset, Vec::new(), at));
                }
            }
        } else if call.starts_with("fdatasync(") || call.starts_with("fsync(") {
            if call.contains("<unfinished") {
                continue;
            }
            if let Some(r) = result.filter(|r| r.starts_with("0 ")) {
                let dur: f64 = r
                    .split('<')
                    .nth(1)
                    .and_then(|d| d.trim_end_matches('>').parse().ok())
                    .unwrap_or(0.0);
                ops.push(Op::Sync { end: ts + dur });
            }
        } else if (call.starts_with("<... fdatasync resumed>")
            || call.starts_with("<... fsync resumed>"))
            && result.is_some_and(|r| r.starts_with("0 "))
        {
            ops.push(Op::Sync { end: ts });
        }
    }
    if let Some((offset, bytes, at)) = current.take() {
        ops.push(Op::Write { offset, bytes, at });
    }
    ops
}

/// Recovers `image` with the store's recovery and returns the sequence
/// numbers owed to the traced session.
fn recovered(image: &[u8]) -> BTreeSet<u32> {
    let mut flash = RamFlash::new(CAPACITY);
    flash.poke(0, image);
    let (mut store, _) = Store::open(flash, SEGMENT, Overflow::Reject).unwrap();
    store
        .read("session/trace-sub", None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| {
            let text = std::str::from_utf8(&m.payload).unwrap();
            let seq: u32 = text[..6].parse().unwrap();
            assert_eq!(text, format!("{seq:06}").repeat(20), "corrupt payload");
            seq
        })
        .collect()
}

#[test]
fn replayed_write_trace_keeps_every_pubacked_message_at_every_sync_point() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_traced(dir.path(), port);
    park_subscriber(port, "trace-sub");
    // Fill, drain (the acks make segments dead: erases and reclaims), fill again.
    let mut acked = publish(port, 1..=3000);
    // The session acks the first 3000 only after this instant (rumqttc may
    // PUBACK a message before handing it over, so receipt times do not bound
    // the acks; the start of the drain does).
    let drain_start = now();
    drain(port, "trace-sub", 3000);
    std::thread::sleep(Duration::from_millis(500));
    acked.extend(publish(port, 3001..=7000));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.path().join("trace.txt")).unwrap();
    let ops = parse_trace(&text);
    let syncs = ops.iter().filter(|o| matches!(o, Op::Sync { .. })).count();
    assert!(syncs > 50, "only {syncs} syncs traced");
    // The final image (every write) has every PUBACKed message.
    let mut image = vec![0xFFu8; CAPACITY];
    for op in &ops {
        if let Op::Write { offset, bytes, .. } = op {
            image[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
    }
    let undelivered: BTreeSet<u32> = (3001..=7000).collect();
    assert!(
        undelivered.is_subset(&recovered(&image)),
        "final image lacks PUBACKed messages"
    );
    // Every sync point, with a pseudo-random subset of the later writes.
    let mut durable = vec![0xFFu8; CAPACITY];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut checked = 0;
    let mut applied = 0;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Write { .. } => {}
            Op::Sync { end } => {
                for earlier in &ops[applied..i] {
                    if let Op::Write { offset, bytes, .. } = earlier {
                        durable[*offset..*offset + bytes.len()].copy_from_slice(bytes);
                    }
                }
                applied = i;
                // The writes a cut right after this sync may keep.
                let window: Vec<&Op> = ops[i + 1..]
                    .iter()
                    .take_while(|o| matches!(o, Op::Write { .. }))
                    .collect();
                let last_write = window.iter().fold(*end, |m, o| match o {
                    Op::Write { at, .. } => m.max(*at),
                    Op::Sync { .. } => m,
                });
                // PUBACKed before this sync returned, and not possibly acked
                // by the session in anything the image may hold (acks need
                // no sync of their own, so the window can hold many).
                let must: BTreeSet<u32> = acked
                    .iter()
                    .filter(|(s, t)| **t < *end && (**s > 3000 || last_write < drain_start))
                    .map(|(s, _)| *s)
                    .collect();
                for _ in 0..2 {
                    let mut image = durable.clone();
                    for later in &window {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        if let (Op::Write { offset, bytes, .. }, true) = (later, rng % 2 == 0) {
                            image[*offset..*offset + bytes.len()].copy_from_slice(bytes);
                        }
                    }
                    let got = recovered(&image);
                    let lost: Vec<_> = must.difference(&got).take(10).collect();
                    assert!(
                        lost.is_empty(),
                        "sync point {i}: PUBACKed messages lost: {lost:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    let erases = ops
        .iter()
        .filter(|o| matches!(o, Op::Write { bytes, .. } if bytes.len() == 4096 && bytes.iter().all(|b| *b == 0xFF)))
        .count();
    assert!(
        erases > 256,
        "no segment was erased during the run ({erases} erase blocks)"
    );
    println!(
        "{syncs} syncs, {erases} erased blocks, {checked} crash images checked, {} PUBACKs",
        acked.len()
    );
}

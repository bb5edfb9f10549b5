//! Criterion micro-benchmarks of the three hot paths, so a regression shows
//! as a number: the codec (PUBLISH decode and encode, 3.1.1 and 5.0, 64 B
//! and 1 KiB payloads), topic matching in the router (1,000 subscriptions,
//! a tenth of them wildcards), and the store's append path (the file flash
//! on tmpfs when /dev/shm exists, so the figure is the store's own CPU
//! cost, not the disk's fsync).
//!
//! Run: `cargo bench -p edgemq --bench hot_paths` (add `-- --quick` for a
//! fast pass). Whole-broker throughput against Mosquitto and rumqttd is
//! scripts/bench.py's job (BENCHMARKS.md).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use edgemq::protocol::{self, Packet, ProtocolVersion, Publish, PublishProperties, QoS};
use edgemq::router::{Message, Router, SubscriptionOptions};
use edgemq::session::{Mailbox, MailboxLimits};
use edgemq::storage::flash::FileFlash;
use edgemq::storage::{Overflow, Store, StoredMessage};

fn publish(payload_len: usize, qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "site/line-3/sensor-0042/temperature".to_string(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { 7 },
        properties: PublishProperties::default(),
        payload: Bytes::from(vec![0x5a; payload_len]),
    })
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for size in [64usize, 1024] {
            let packet = publish(size, QoS::AtLeastOnce);
            let mut wire = BytesMut::new();
            protocol::encode(&packet, version, &mut wire).unwrap();
            let wire = wire.freeze();
            group.throughput(Throughput::Elements(1));
            group.bench_function(format!("decode publish qos1 {version:?} {size}B"), |b| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| black_box(protocol::decode(&mut buf, version, 1 << 20).unwrap()),
                    BatchSize::SmallInput,
                )
            });
            let mut out = BytesMut::with_capacity(4096);
            group.bench_function(format!("encode publish qos1 {version:?} {size}B"), |b| {
                b.iter(|| {
                    out.clear();
                    protocol::encode(black_box(&packet), version, &mut out).unwrap();
                })
            });
        }
    }
    group.finish();
}

fn router(c: &mut Criterion) {
    let limits = MailboxLimits {
        outbound_capacity: 1 << 20,
        max_queued_messages: 1 << 20,
        spill: false,
        max_queued_bytes: 1 << 30,
        slow_consumer_timeout: std::time::Duration::ZERO,
        qos0_wait: false,
    };
    let router = Router::new(1000, 1 << 20);
    for i in 0..1000 {
        let mailbox = Mailbox::new(Arc::from(format!("client-{i}")), false, limits);
        mailbox.set_online(true);
        let filter = match i % 10 {
            0 => format!("site/line-{}/+/temperature", i % 7),
            _ => format!("site/line-{}/sensor-{i:04}/temperature", i % 7),
        };
        router.subscribe(&mailbox, &filter, SubscriptionOptions::qos(QoS::AtMostOnce));
    }
    let hit = message("site/line-3/sensor-0042/temperature");
    let miss = message("site/line-9/sensor-0042/humidity");
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    group.bench_function("match 1000 subscriptions, 15 receivers", |b| {
        b.iter(|| {
            let routed = router.route(black_box(&hit));
            for (mailbox, _) in &routed {
                let mut drained = Vec::new();
                mailbox.drain(usize::MAX, &mut drained);
            }
            routed.len()
        })
    });
    group.bench_function("match 1000 subscriptions, no receiver", |b| {
        b.iter(|| router.route(black_box(&miss)).len())
    });
    group.finish();
}

/// A QoS 0 message with a 64-byte payload.
fn message(topic: &str) -> Arc<Message> {
    Arc::new(Message::new(
        topic.into(),
        Bytes::from_static(&[0u8; 64]),
        QoS::AtMostOnce,
        false,
        PublishProperties::default(),
        None,
    ))
}

fn store_append(c: &mut Criterion) {
    let destinations = vec!["offline-client".to_string()];
    let mut group = c.benchmark_group("store");
    for size in [64usize, 1024] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("append+ack {size}B, commit per 64"), |b| {
            let shm = std::path::Path::new("/dev/shm");
            let dir = match shm.is_dir() {
                true => tempfile::tempdir_in(shm).unwrap(),
                false => tempfile::tempdir().unwrap(),
            };
            let flash = FileFlash::open(&dir.path().join("store.img"), 16 << 20).unwrap();
            let (mut store, _) = Store::open(flash, 256 << 10, Overflow::Reject).unwrap();
            let payload = Bytes::from(vec![0x5a; size]);
            let mut n = 0u64;
            b.iter(|| {
                let msg = StoredMessage {
                    topic: "site/line-3/sensor-0042/temperature".into(),
                    qos: 1,
                    payload: payload.clone(),
                    ..StoredMessage::default()
                };
                let id = store.append(msg, &destinations).unwrap();
                store.ack(id, &destinations[0]).unwrap();
                n += 1;
                if n % 64 == 0 {
                    store.commit().unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec, router, store_append);
criterion_main!(benches);

//! The benchmark scenarios and the report they produce.
//!
//! Every flood scenario has the same shape: subscribers connect and
//! subscribe first, publishers then send as fast as the broker accepts
//! (QoS 0: as fast as the socket takes bytes; QoS 1: a window of
//! unacknowledged messages per publisher), a warm-up second is discarded,
//! and deliveries are counted over the measurement window only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use edgemq::protocol::{self, Packet, PubAck, Publish, QoS};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::conn::{connect, Conn};
use crate::proc_stats::{sample, Sample};
use crate::{Args, Scenario};

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: u8,
    pub payload: usize,
    pub measured_secs: f64,
    /// Messages delivered per second, per subscriber.
    pub delivered_per_sec: f64,
    pub delivered_total: u64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub latency_max_us: Option<f64>,
    pub connections: Option<usize>,
    pub connect_secs: Option<f64>,
    pub bytes_per_connection: Option<f64>,
    pub broker_cpu_secs: f64,
    pub broker_peak_rss_kib: u64,
    pub broker_cpu_secs_per_million: Option<f64>,
    pub generator_cpu_secs: f64,
}

struct Shared {
    epoch: Instant,
    delivered: AtomicU64,
    /// PUBACKs received by publishers.
    acked: AtomicU64,
    stop: AtomicBool,
    latencies: std::sync::Mutex<Vec<u32>>,
    record_latency: bool,
}

impl Shared {
    fn new(record_latency: bool) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            latencies: std::sync::Mutex::new(Vec::new()),
            record_latency,
        })
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Report> {
    match args.scenario {
        Scenario::Idle => idle(args).await,
        Scenario::FanIn => flood(args, args.publishers, false).await,
        Scenario::FanOut => flood(args, 1, false).await,
        Scenario::Latency => flood(args, 1, true).await,
        Scenario::Durable => durable(args).await,
    }
}

fn addr(args: &Args) -> String {
    format!("{}:{}", args.host, args.port)
}

async fn flood(args: &Args, publishers: usize, fixed_rate: bool) -> anyhow::Result<Report> {
    let shared = Shared::new(fixed_rate);
    let qos = QoS::from_u8(args.qos).context("bad QoS")?;
    let mut tasks = Vec::new();
    for i in 0..args.subscribers {
        let mut conn = connect(&addr(args), &format!("bench-sub-{i}"), args.v5).await?;
        conn.subscribe("bench/#", qos).await?;
        tasks.push(tokio::spawn(subscriber(conn, shared.clone())));
    }
    for i in 0..publishers {
        let conn = connect(&addr(args), &format!("bench-pub-{i}"), args.v5).await?;
        let rate = fixed_rate.then(|| args.rate / publishers as u64);
        tasks.push(tokio::spawn(publisher(
            conn,
            i,
            qos,
            args.clone(),
            rate,
            shared.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up, discarded
    let broker0 = sample(args.broker_pid);
    let gen0 = sample(None);
    let count0 = shared.delivered.load(Ordering::Relaxed);
    shared.latencies.lock().map(|mut l| l.clear()).ok();
    let t0 = Instant::now();
    tokio::time::sleep(args.duration()).await;
    let count1 = shared.delivered.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let broker1 = sample(args.broker_pid);
    let gen1 = sample(None);
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let delivered = count1 - count0;
    let mut report = base_report(args, publishers, elapsed, broker0, broker1, gen0, gen1);
    report.delivered_total = delivered;
    report.delivered_per_sec = delivered as f64 / elapsed / args.subscribers.max(1) as f64;
    if delivered > 0 {
        report.broker_cpu_secs_per_million = Some(report.broker_cpu_secs / delivered as f64 * 1e6);
    }
    if fixed_rate {
        let mut l = shared
            .latencies
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        l.sort_unstable();
        let pick = |q: f64| {
            l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
                .map(|v| *v as f64)
        };
        report.latency_p50_us = pick(0.50);
        report.latency_p99_us = pick(0.99);
        report.latency_max_us = l.last().map(|v| *v as f64);
    }
    Ok(report)
}

fn base_report(
    args: &Args,
    publishers: usize,
    elapsed: f64,
    broker0: Sample,
    broker1: Sample,
    gen0: Sample,
    gen1: Sample,
) -> Report {
    Report {
        scenario: format!("{:?}", args.scenario),
        publishers,
        subscribers: args.subscribers,
        qos: args.qos,
        payload: args.payload,
        measured_secs: elapsed,
        broker_cpu_secs: broker1.cpu_secs - broker0.cpu_secs,
        broker_peak_rss_kib: broker1.peak_rss_kib,
        generator_cpu_secs: gen1.cpu_secs - gen0.cpu_secs,
        ..Report::default()
    }
}

/// Payload: 8 bytes of send time (µs since the epoch), 8 bytes of sequence, padding.
fn payload(shared: &Shared, seq: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(shared.epoch.elapsed().as_micros() as u64);
    b.put_u64(seq);
    b.resize(size, b'x');
    b.freeze()
}

async fn publisher(
    mut conn: Conn,
    index: usize,
    qos: QoS,
    args: Args,
    rate: Option<u64>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let window = Arc::new(Semaphore::new(if qos == QoS::AtMostOnce {
        usize::MAX >> 4
    } else {
        args.window
    }));
    // Acknowledgements return permits to the window.
    let permits = window.clone();
    let mut reader = conn.reader;
    let counter = shared.clone();
    tokio::spawn(async move {
        while let Ok(packet) = reader.next().await {
            if let Packet::PubAck(_) = packet {
                permits.add_permits(1);
                counter.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let topic = format!("bench/{index}");
    let batch = if rate.is_some() { 1 } else { 64 };
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));
    let mut next_send = Instant::now();
    let mut seq: u64 = 0;
    let mut pkid: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    while !shared.stop.load(Ordering::Relaxed) {
        if qos != QoS::AtMostOnce {
            window.acquire_many(batch as u32).await?.forget();
        }
        for _ in 0..batch {
            seq += 1;
            pkid = if qos == QoS::AtMostOnce {
                0
            } else {
                pkid % u16::MAX + 1
            };
            let p = Packet::Publish(Publish {
                qos,
                topic: topic.clone(),
                pkid,
                payload: payload(&shared, seq, args.payload),
                ..Default::default()
            });
            protocol::encode(&p, conn.version, &mut out)?;
        }
        conn.writer.write_all(&out).await?;
        out.clear();
        if let Some(step) = interval {
            next_send += step;
            tokio::time::sleep_until(next_send.into()).await;
        }
    }
    Ok(())
}

async fn subscriber(mut conn: Conn, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    loop {
        // One blocking read, then everything already buffered; the PUBACKs
        // for the whole batch go out in one write.
        let mut packet = Some(conn.reader.next().await?);
        while let Some(p) = packet {
            if let Packet::Publish(p) = p {
                record_delivery(&shared, &p);
                if p.qos == QoS::AtLeastOnce {
                    let ack = Packet::PubAck(PubAck {
                        pkid: p.pkid,
                        ..Default::default()
                    });
                    protocol::encode(&ack, conn.version, &mut out)?;
                }
            }
            packet = conn.reader.try_next()?;
        }
        if !out.is_empty() {
            conn.writer.write_all(&out).await?;
            out.clear();
        }
    }
}

fn record_delivery(shared: &Shared, p: &Publish) {
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    if shared.record_latency && p.payload.len() >= 8 {
        let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap_or_default());
        let now = shared.epoch.elapsed().as_micros() as u64;
        if let Ok(mut l) = shared.latencies.lock() {
            l.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        }
    }
}

/// QoS 1 publishers into one offline persistent session; counts PUBACKs.
async fn durable(args: &Args) -> anyhow::Result<Report> {
    let shared = Shared::new(false);
    let mut offline =
        crate::conn::connect_with(&addr(args), "bench-durable-sub", args.v5, false).await?;
    offline.subscribe("bench/#", QoS::AtLeastOnce).await?;
    offline.disconnect().await?;
    let mut tasks = Vec::new();
    for i in 0..args.publishers {
        let conn = connect(&addr(args), &format!("bench-pub-{i}"), args.v5).await?;
        tasks.push(tokio::spawn(publisher(
            conn,
            i,
            QoS::AtLeastOnce,
            args.clone(),
            None,
            shared.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker0 = sample(args.broker_pid);
    let gen0 = sample(None);
    let acked0 = shared.acked.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(args.duration()).await;
    let acked = shared.acked.load(Ordering::Relaxed) - acked0;
    let elapsed = t0.elapsed().as_secs_f64();
    let broker1 = sample(args.broker_pid);
    let gen1 = sample(None);
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let mut report = base_report(args, args.publishers, elapsed, broker0, broker1, gen0, gen1);
    report.delivered_total = acked;
    report.delivered_per_sec = acked as f64 / elapsed;
    if acked > 0 {
        report.broker_cpu_secs_per_million = Some(report.broker_cpu_secs / acked as f64 * 1e6);
    }
    Ok(report)
}

async fn idle(args: &Args) -> anyhow::Result<Report> {
    let broker0 = sample(args.broker_pid);
    let gen0 = sample(None);
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    let mut pending = tokio::task::JoinSet::new();
    let target = addr(args);
    for i in 0..args.connections {
        let target = target.clone();
        let v5 = args.v5;
        pending.spawn(async move { connect(&target, &format!("bench-idle-{i}"), v5).await });
        if pending.len() >= 128 {
            if let Some(done) = pending.join_next().await {
                conns.push(done??);
            }
        }
    }
    while let Some(done) = pending.join_next().await {
        conns.push(done??);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    // Let the broker settle its per-connection state before sampling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker1 = sample(args.broker_pid);
    let gen1 = sample(None);
    let mut report = base_report(args, 0, connect_secs, broker0, broker1, gen0, gen1);
    report.connections = Some(conns.len());
    report.connect_secs = Some(connect_secs);
    report.bytes_per_connection = Some(
        (broker1.rss_kib.saturating_sub(broker0.rss_kib) * 1024) as f64 / conns.len().max(1) as f64,
    );
    drop(conns);
    Ok(report)
}

//! The benchmark scenarios and the report they produce.
//!
//! Every flood scenario has the same shape: subscribers connect and
//! subscribe first, publishers then send as fast as the broker accepts
//! (QoS 0: as fast as the socket takes bytes; QoS 1: a window of
//! unacknowledged messages per publisher), a warm-up second is discarded,
//! and rates are counted over the measurement window only. Then publishers
//! stop and the run drains (until nothing moves for a quiet second, or
//! `--drain` seconds), and every message the broker accepted during the
//! whole run (warm-up included) is checked against what each subscriber
//! received: the difference is reported as `lost`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgemq::protocol::QoS;
use serde::Serialize;

use crate::conn::{connect, connect_with, Conn};
use crate::loss::{Received, SeqSet};
use crate::proc_stats::{sample, Sample};
use crate::traffic::{publisher, subscriber, PubState, Shared};
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
    /// Messages accepted by the broker per second, all publishers together:
    /// PUBACKs at QoS 1, completed writes at QoS 0.
    pub accepted_per_sec: Option<f64>,
    /// Messages accepted over the whole run (warm-up and drain included).
    pub accepted_total: Option<u64>,
    /// Deliveries owed: accepted messages times subscribers.
    pub owed: Option<u64>,
    /// Owed deliveries that never arrived.
    pub lost: Option<u64>,
    /// Deliveries received more than once.
    pub duplicates: Option<u64>,
    /// Seconds spent draining after the publishers stopped.
    pub drain_secs: Option<f64>,
    /// False if messages were still arriving when the drain limit ended it
    /// (then `lost` includes messages still queued in the broker).
    pub drain_complete: Option<bool>,
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

pub async fn run(args: &Args) -> anyhow::Result<Report> {
    match args.scenario {
        Scenario::Idle => idle(args).await,
        Scenario::FanIn => flood(args, args.publishers, false).await,
        Scenario::FanOut => flood(args, 1, false).await,
        Scenario::Latency => flood(args, args.publishers, true).await,
        Scenario::Durable => durable(args).await,
    }
}

fn addr(args: &Args) -> String {
    format!("{}:{}", args.host, args.port)
}

/// The publisher and subscriber tasks of one run, and what they recorded.
struct Traffic {
    shared: Arc<Shared>,
    qos: QoS,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pubs: Vec<Arc<PubState>>,
    subs: Vec<Arc<Mutex<Received>>>,
}

impl Traffic {
    fn new(shared: Arc<Shared>, qos: QoS) -> Traffic {
        Traffic {
            shared,
            qos,
            tasks: Vec::new(),
            pubs: Vec::new(),
            subs: Vec::new(),
        }
    }

    fn add_subscriber(&mut self, conn: Conn, publishers: usize) {
        let received = Arc::new(Mutex::new(Received::new(publishers)));
        self.subs.push(received.clone());
        self.tasks.push(tokio::spawn(subscriber(
            conn,
            self.shared.clone(),
            received,
        )));
    }

    fn add_publisher(&mut self, conn: Conn, args: &Args, rate: Option<u64>) {
        let state = PubState::new();
        let index = self.pubs.len();
        self.pubs.push(state.clone());
        self.tasks.push(tokio::spawn(publisher(
            conn,
            index,
            self.qos,
            args.clone(),
            rate,
            self.shared.clone(),
            state,
        )));
    }

    /// Messages accepted so far (PUBACKs at QoS 1, writes at QoS 0).
    fn accepted_count(&self) -> u64 {
        if self.qos == QoS::AtMostOnce {
            self.shared.sent.load(Ordering::Relaxed)
        } else {
            self.shared.acked.load(Ordering::Relaxed)
        }
    }

    /// Stops the publishers and waits until nothing moves for a quiet
    /// second or `limit` passes. Returns (seconds, complete).
    async fn drain(&self, limit: Duration) -> (f64, bool) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut last = self.shared.progress();
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.shared.progress();
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= Duration::from_secs(1) {
                return (t0.elapsed().as_secs_f64(), true);
            }
            if t0.elapsed() >= limit {
                return (t0.elapsed().as_secs_f64(), false);
            }
        }
    }

    /// Fills in the loss figures and ends every task.
    fn account(self, report: &mut Report, drain: (f64, bool)) {
        for t in &self.tasks {
            t.abort();
        }
        let accepted: Vec<SeqSet> = self.pubs.iter().map(|p| p.accepted(self.qos)).collect();
        let total: u64 = accepted.iter().map(SeqSet::len).sum();
        let (mut lost, mut duplicates) = (0, 0);
        for sub in &self.subs {
            if let Ok(got) = sub.lock() {
                lost += got.lost(&accepted);
                duplicates += got.duplicates;
            }
        }
        report.accepted_total = Some(total);
        report.owed = Some(total * self.subs.len() as u64);
        report.lost = Some(lost);
        report.duplicates = Some(duplicates);
        report.drain_secs = Some(drain.0);
        report.drain_complete = Some(drain.1);
    }
}

async fn flood(args: &Args, publishers: usize, fixed_rate: bool) -> anyhow::Result<Report> {
    let qos = QoS::from_u8(args.qos).context("bad QoS")?;
    let mut traffic = Traffic::new(Shared::new(fixed_rate), qos);
    for i in 0..args.subscribers {
        let mut conn = connect(&addr(args), &format!("bench-sub-{i}"), args.v5).await?;
        conn.subscribe("bench/#", qos).await?;
        traffic.add_subscriber(conn, publishers);
    }
    // Every publisher is connected before any starts: a broker busy with the
    // first ones' flood may otherwise not accept the last ones for minutes.
    let mut conns = Vec::with_capacity(publishers);
    for i in 0..publishers {
        conns.push(connect(&addr(args), &format!("bench-pub-{i}"), args.v5).await?);
    }
    let rate = fixed_rate.then(|| args.rate / publishers.max(1) as u64);
    for conn in conns {
        traffic.add_publisher(conn, args, rate);
    }
    let shared = traffic.shared.clone();
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up, discarded
    let broker0 = sample(args.broker_pid);
    let gen0 = sample(None);
    let count0 = shared.delivered.load(Ordering::Relaxed);
    let accepted0 = traffic.accepted_count();
    shared.latencies.lock().map(|mut l| l.clear()).ok();
    let t0 = Instant::now();
    tokio::time::sleep(args.duration()).await;
    let count1 = shared.delivered.load(Ordering::Relaxed);
    let accepted1 = traffic.accepted_count();
    let elapsed = t0.elapsed().as_secs_f64();
    let broker1 = sample(args.broker_pid);
    let gen1 = sample(None);
    let drain = traffic.drain(args.drain()).await;
    let delivered = count1 - count0;
    let mut report = base_report(args, publishers, elapsed, broker0, broker1, gen0, gen1);
    report.broker_peak_rss_kib = sample(args.broker_pid)
        .peak_rss_kib
        .max(broker1.peak_rss_kib);
    report.delivered_total = delivered;
    report.delivered_per_sec = delivered as f64 / elapsed / args.subscribers.max(1) as f64;
    report.accepted_per_sec = Some((accepted1 - accepted0) as f64 / elapsed);
    if delivered > 0 {
        report.broker_cpu_secs_per_million = Some(report.broker_cpu_secs / delivered as f64 * 1e6);
    }
    if fixed_rate {
        latency_figures(&shared, &mut report);
    }
    traffic.account(&mut report, drain);
    Ok(report)
}

fn latency_figures(shared: &Shared, report: &mut Report) {
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

/// QoS 1 publishers into one offline persistent session; counts PUBACKs.
/// Afterwards the session reconnects and drains: every PUBACKed message must
/// reach it (`lost` counts those that do not).
async fn durable(args: &Args) -> anyhow::Result<Report> {
    let mut traffic = Traffic::new(Shared::new(false), QoS::AtLeastOnce);
    let mut offline = connect_with(&addr(args), "bench-durable-sub", args.v5, false).await?;
    offline.subscribe("bench/#", QoS::AtLeastOnce).await?;
    offline.disconnect().await?;
    for i in 0..args.publishers {
        let conn = connect(&addr(args), &format!("bench-pub-{i}"), args.v5).await?;
        traffic.add_publisher(conn, args, None);
    }
    let shared = traffic.shared.clone();
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
    // Let the last PUBACKs arrive, then bring the session back and drain it.
    let acks_drain = traffic.drain(args.drain()).await;
    let back = connect_with(&addr(args), "bench-durable-sub", args.v5, false).await?;
    traffic.add_subscriber(back, args.publishers);
    let drain = traffic.drain(args.drain()).await;
    let mut report = base_report(args, args.publishers, elapsed, broker0, broker1, gen0, gen1);
    report.broker_peak_rss_kib = sample(args.broker_pid)
        .peak_rss_kib
        .max(broker1.peak_rss_kib);
    report.subscribers = 0;
    report.delivered_total = acked;
    report.delivered_per_sec = acked as f64 / elapsed;
    report.accepted_per_sec = Some(acked as f64 / elapsed);
    if acked > 0 {
        report.broker_cpu_secs_per_million = Some(report.broker_cpu_secs / acked as f64 * 1e6);
    }
    traffic.account(&mut report, (acks_drain.0 + drain.0, drain.1));
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

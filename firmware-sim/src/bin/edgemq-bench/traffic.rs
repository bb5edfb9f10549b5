//! The publishing and subscribing tasks every scenario is built from, and
//! the counters they share.
//!
//! Invariants: a publisher counts a QoS 0 message as accepted only once the
//! write that carried it has completed, and a QoS 1 message only when its
//! PUBACK arrives (the packet id maps back to the sequence number it was sent
//! with; ids are reused only after their PUBACK, because the window is
//! smaller than the id space). Subscribers record every PUBLISH by the tag in
//! its payload (see `loss.rs`) and PUBACK QoS 1 deliveries in batches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use edgemq::protocol::{self, Packet, PubAck, Publish, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::conn::Conn;
use crate::loss::{tag, Received, SeqSet};
use crate::Args;

/// Counters shared by all tasks of one run.
pub struct Shared {
    pub epoch: Instant,
    /// PUBLISH packets received by subscribers (duplicates included).
    pub delivered: AtomicU64,
    /// PUBACKs received by publishers.
    pub acked: AtomicU64,
    /// QoS 0 messages whose write completed.
    pub sent: AtomicU64,
    pub stop: AtomicBool,
    pub latencies: Mutex<Vec<u32>>,
    pub record_latency: bool,
}

impl Shared {
    pub fn new(record_latency: bool) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            latencies: Mutex::new(Vec::new()),
            record_latency,
        })
    }

    /// Everything that moves while traffic is still flowing.
    pub fn progress(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
            + self.acked.load(Ordering::Relaxed)
            + self.sent.load(Ordering::Relaxed)
    }
}

/// What one publisher had handed over to the broker.
pub struct PubState {
    /// Highest sequence number whose write completed.
    written: AtomicU64,
    /// The sequence number last sent with each packet id (QoS 1).
    pkid_seq: Vec<AtomicU64>,
    /// Sequence numbers PUBACKed by the broker.
    acked: Mutex<SeqSet>,
}

impl PubState {
    pub fn new() -> Arc<PubState> {
        Arc::new(PubState {
            written: AtomicU64::new(0),
            pkid_seq: (0..=u16::MAX as usize).map(|_| AtomicU64::new(0)).collect(),
            acked: Mutex::new(SeqSet::default()),
        })
    }

    /// The messages the broker accepted: PUBACKed at QoS 1, written at QoS 0.
    pub fn accepted(&self, qos: QoS) -> SeqSet {
        if qos == QoS::AtMostOnce {
            SeqSet::up_to(self.written.load(Ordering::Relaxed))
        } else {
            self.acked.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }
}

/// Payload: 8 bytes of send time (µs since the epoch), 8 bytes of tag, padding.
fn payload(shared: &Shared, tag: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(shared.epoch.elapsed().as_micros() as u64);
    b.put_u64(tag);
    b.resize(size, b'x');
    b.freeze()
}

/// Reads a publisher's PUBACKs: records them and returns window permits.
fn spawn_ack_reader(
    conn_reader: crate::conn::PacketReader,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    state: Arc<PubState>,
) {
    let mut reader = conn_reader;
    tokio::spawn(async move {
        while let Ok(packet) = reader.next().await {
            if let Packet::PubAck(ack) = packet {
                let seq = state
                    .pkid_seq
                    .get(usize::from(ack.pkid))
                    .map_or(0, |s| s.load(Ordering::Relaxed));
                if let Ok(mut acked) = state.acked.lock() {
                    acked.insert(seq);
                }
                permits.add_permits(1);
                shared.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Publishes on `bench/<index>` until `shared.stop`: QoS 0 as fast as the
/// socket takes bytes, QoS 1 within a window, or at a fixed `rate`.
pub async fn publisher(
    conn: Conn,
    index: usize,
    qos: QoS,
    args: Args,
    rate: Option<u64>,
    shared: Arc<Shared>,
    state: Arc<PubState>,
) -> anyhow::Result<()> {
    let window = Arc::new(Semaphore::new(if qos == QoS::AtMostOnce {
        usize::MAX >> 4
    } else {
        args.window.min(u16::MAX as usize - 1)
    }));
    spawn_ack_reader(conn.reader, window.clone(), shared.clone(), state.clone());
    let mut writer = conn.writer;
    let topic = format!("bench/{index}");
    let batch: u64 = if rate.is_some() { 1 } else { 64 };
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
            if qos != QoS::AtMostOnce {
                pkid = pkid % u16::MAX + 1;
                if let Some(slot) = state.pkid_seq.get(usize::from(pkid)) {
                    slot.store(seq, Ordering::Relaxed);
                }
            }
            let p = Packet::Publish(Publish {
                qos,
                topic: topic.clone(),
                pkid,
                payload: payload(&shared, tag(index, seq), args.payload),
                ..Default::default()
            });
            protocol::encode(&p, conn.version, &mut out)?;
        }
        writer.write_all(&out).await?;
        out.clear();
        state.written.store(seq, Ordering::Relaxed);
        if qos == QoS::AtMostOnce {
            shared.sent.fetch_add(batch, Ordering::Relaxed);
        }
        if let Some(step) = interval {
            next_send += step;
            tokio::time::sleep_until(next_send.into()).await;
        }
    }
    Ok(())
}

/// Receives until the connection ends, recording every PUBLISH into `received`.
pub async fn subscriber(
    mut conn: Conn,
    shared: Arc<Shared>,
    received: Arc<Mutex<Received>>,
) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    loop {
        // One blocking read, then everything already buffered; the PUBACKs
        // for the whole batch go out in one write.
        let mut packet = Some(conn.reader.next().await?);
        {
            let mut got = received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            while let Some(p) = packet {
                if let Packet::Publish(p) = p {
                    record_delivery(&shared, &mut got, &p);
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
        }
        if !out.is_empty() {
            conn.writer.write_all(&out).await?;
            out.clear();
        }
    }
}

fn record_delivery(shared: &Shared, got: &mut Received, p: &Publish) {
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    let field = |at: usize| {
        p.payload
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    match field(8) {
        Some(t) => got.record(t),
        None => got.unknown += 1,
    }
    if shared.record_latency {
        if let Some(sent) = field(0) {
            let now = shared.epoch.elapsed().as_micros() as u64;
            if let Ok(mut l) = shared.latencies.lock() {
                l.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
        }
    }
}

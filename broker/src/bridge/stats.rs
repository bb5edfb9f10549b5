//! Counters of one bridge, exported under `$SYS/broker/bridge/<name>/...`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct BridgeStats {
    pub name: String,
    /// 1 while connected to the cloud.
    pub link_up: AtomicU64,
    pub reconnects: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    /// Encoded (uncompressed) and wire bytes of envelopes, for the ratio.
    pub envelope_raw_bytes: AtomicU64,
    pub envelope_wire_bytes: AtomicU64,
    pub messages_received: AtomicU64,
    /// Messages queued in the lanes (RAM part), refreshed by the bridge task.
    pub lane_depth: AtomicU64,
    pub inflight: AtomicU64,
    /// Dead letters: refused by the cloud (code >= 0x80, not transient),
    /// larger than its Maximum Packet Size, or closed on three times.
    pub messages_rejected: AtomicU64,
    /// v5 messages whose expiry passed while they waited in a lane.
    pub messages_expired: AtomicU64,
    /// Orphan lanes found at startup (drained or dropped).
    pub orphan_lanes: AtomicU64,
}

impl BridgeStats {
    pub fn new(name: &str) -> BridgeStats {
        BridgeStats {
            name: name.to_string(),
            ..BridgeStats::default()
        }
    }

    /// `($SYS topic, value)` pairs.
    pub fn sys_topics(&self) -> Vec<(String, String)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let base = format!("$SYS/broker/bridge/{}", self.name);
        let raw = self.envelope_raw_bytes.load(Ordering::Relaxed);
        let wire = self.envelope_wire_bytes.load(Ordering::Relaxed);
        let ratio = if wire == 0 {
            0.0
        } else {
            raw as f64 / wire as f64
        };
        vec![
            (format!("{base}/state"), get(&self.link_up)),
            (format!("{base}/reconnects"), get(&self.reconnects)),
            (format!("{base}/messages/sent"), get(&self.messages_sent)),
            (format!("{base}/bytes/sent"), get(&self.bytes_sent)),
            (format!("{base}/batches/sent"), get(&self.batches_sent)),
            (format!("{base}/compression_ratio"), format!("{ratio:.2}")),
            (
                format!("{base}/messages/received"),
                get(&self.messages_received),
            ),
            (format!("{base}/lanes/depth"), get(&self.lane_depth)),
            (format!("{base}/inflight"), get(&self.inflight)),
            (
                format!("{base}/messages/rejected"),
                get(&self.messages_rejected),
            ),
            (
                format!("{base}/messages/expired"),
                get(&self.messages_expired),
            ),
            (format!("{base}/lanes/orphaned"), get(&self.orphan_lanes)),
        ]
    }
}

pub fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

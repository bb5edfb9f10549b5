//! Broker-wide counters: a leaf of plain atomics.
//!
//! [`Metrics`] is a struct of atomics updated on the hot path with relaxed
//! ordering (they are statistics, not synchronisation). Every layer may
//! count; only the observability layer (`sys` for `$SYS`, `metrics` for
//! Prometheus) reads them. Invariant: this module imports nothing of the
//! broker but the `DropReason` a mailbox reports, so counting never creates
//! an upward import.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::DropReason;

/// Broker-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clients_connected: AtomicU64,
    pub clients_maximum: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    /// PUBLISH packets received, by QoS (index 0, 1, 2).
    pub publish_received: [AtomicU64; 3],
    /// PUBLISH packets sent, by QoS.
    pub publish_sent: [AtomicU64; 3],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// QoS 0 dropped because a subscriber's outbound queue was full.
    pub dropped_qos0_queue_full: AtomicU64,
    /// QoS 1/2 dropped for a clean session whose queue was full.
    pub dropped_queue_full: AtomicU64,
    /// QoS 1/2 dropped beyond a persistent session's queue bounds.
    pub dropped_session_queue_full: AtomicU64,
    /// QoS 0 not queued for an offline session.
    pub dropped_offline_qos0: AtomicU64,
    /// Messages larger than a client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Messages whose expiry interval ran out while queued.
    pub dropped_expired: AtomicU64,
    /// PUBLISH refused by the ACL.
    pub dropped_denied: AtomicU64,
    /// Retained messages not stored because of the retained bounds.
    pub dropped_retained_full: AtomicU64,
    /// Messages a slow consumer owed or would have been given once its
    /// queue stayed full beyond `slow_consumer_timeout_ms` (QoS 1/2 to a
    /// clean session that was then disconnected).
    pub dropped_slow_consumer: AtomicU64,
    /// Clean sessions disconnected (v5 reason 0x97) because their queue
    /// stayed full beyond `slow_consumer_timeout_ms`.
    pub disconnects_slow_consumer: AtomicU64,
    /// Connections closed because the client did not read within
    /// `write_timeout_ms`.
    pub disconnects_write_timeout: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts a mailbox drop under its reason.
    pub fn count_drop(&self, reason: DropReason) {
        inc(match reason {
            DropReason::QueueFullQos0 => &self.dropped_qos0_queue_full,
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::SessionQueueFull => &self.dropped_session_queue_full,
            DropReason::Offline => &self.dropped_offline_qos0,
            DropReason::SlowConsumer => &self.dropped_slow_consumer,
        });
    }

    /// A client connected.
    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
        inc(&self.connections_total);
    }

    /// A client disconnected.
    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// Total of all drop counters.
    pub fn dropped_total(&self) -> u64 {
        [
            &self.dropped_qos0_queue_full,
            &self.dropped_queue_full,
            &self.dropped_session_queue_full,
            &self.dropped_offline_qos0,
            &self.dropped_too_large,
            &self.dropped_expired,
            &self.dropped_denied,
            &self.dropped_retained_full,
            &self.dropped_slow_consumer,
        ]
        .into_iter()
        .map(get)
        .sum()
    }
}

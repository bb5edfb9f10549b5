//! The durable store: QoS 1/2 messages still owed somewhere, retained
//! messages and persistent sessions, on flash-style storage.
//!
//! The durability contract (docs/ARCHITECTURE.md): when edgemq sends a PUBACK
//! or PUBREC, every durable copy the message needs has been synced. This
//! module provides the pieces, bottom up:
//! - `flash`: NOR flash semantics (`embedded_storage::NorFlash`) over an
//!   image file or RAM (the RAM flash can cut power at any point);
//! - `segment` and `record`: the on-flash format (a ring of segments holding
//!   CRC-checked postcard records);
//! - `store`: the RAM index, append/ack/read, retained, sessions, recovery
//!   and reclamation, with its invariants written at the top;
//! - `task`: the group-commit owner thread and the async `StoreHandle` the
//!   broker uses, with the store's state (ok, full, failed);
//! - `dir`: the data directory (lock, directory fsyncs, capacity check);
//! - `fuzzing`: recovery from arbitrary images (the fuzz target's logic);
//! - `config`: the `[storage]` section.

pub mod config;
mod dir;
pub mod flash;
pub mod fuzzing;
pub mod latency;
pub mod record;
pub mod segment;
pub mod store;
pub mod task;
pub mod wear_file;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_behind;
#[cfg(test)]
mod tests_budget;
#[cfg(test)]
mod tests_crash;
#[cfg(test)]
mod tests_recovery;
#[cfg(test)]
mod tests_task;
#[cfg(test)]
mod tests_wear;

pub use config::{Durability, Overflow, StorageConfig, SyncMode};
pub use record::{StoredMessage, StoredSession, StoredSubscription};
pub use store::{Quota, RecoveryReport, Store};
pub use task::{StoreHandle, StoreState};

use embedded_storage::nor_flash::NorFlashError;

/// Errors of the store. `Full` is back-pressure, not a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store is full")]
    Full,
    #[error("record of {0} bytes is larger than a segment")]
    TooLarge(usize),
    #[error("a message needs at least one destination")]
    NoDestination,
    #[error("flash error: {0}")]
    Flash(String),
    #[error("record at segment {seg} offset {off} is corrupt")]
    Corrupt { seg: u32, off: u32 },
    #[error("record encoding failed: {0}")]
    Record(String),
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("store is in a failed state after an earlier error ({0}); refusing durable work")]
    Failed(String),
    #[error("store task has stopped")]
    Stopped,
}

impl StoreError {
    fn flash<E: NorFlashError + std::fmt::Debug>(e: E) -> StoreError {
        StoreError::Flash(format!("{:?}: {e:?}", e.kind()))
    }
}

/// `ok`, `full` or `failed` (`/healthz` answers 503 unless `ok`).
pub const STATE_TOPIC: &str = "$SYS/broker/store/state";
/// The reason of a failed store (present only then).
pub const FAILURE_TOPIC: &str = "$SYS/broker/store/failure";

/// Figures the store exports to $SYS and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub segments: u64,
    /// The store refuses new messages for lack of space (`Store::is_full`).
    pub full: bool,
    /// Why the store failed (sticky until a restart), if it did.
    pub failure: Option<String>,
    /// Segments free (no header); two or more at rest.
    pub free_segments: u64,
    pub capacity_bytes: u64,
    /// Live bytes the store may hold (capacity less reserved segments).
    pub budget_bytes: u64,
    pub live_bytes: u64,
    pub queued_messages: u64,
    pub appended: u64,
    /// Messages held by write-behind (`spill_after_ms`) that every
    /// destination acknowledged in time: never written.
    pub spared: u64,
    /// Held messages written at their deadline (or with a spilling one).
    pub spilled: u64,
    /// Payload bytes appended (the denominator of write amplification).
    pub payload_bytes: u64,
    /// Bytes programmed into flash (headers, records, copies).
    pub bytes_written: u64,
    pub bytes_copied: u64,
    pub syncs: u64,
    pub erases: u64,
    /// Bytes erased (0xFF written by an image file): part of the wear.
    pub erased_bytes: u64,
    /// Damaged ranges and headers found by recovery (D8).
    pub damaged: u64,
    pub reclaims: u64,
    pub rejected: u64,
    pub dropped_oldest: u64,
    /// Copies not stored because their destination was over its quota.
    pub quota_rejected: u64,
    pub recovery_millis: u64,
    pub recovered_next_id: u64,
    /// Erase count of every segment (wear spread).
    pub erase_counts: Vec<u32>,
    /// How long each sync took.
    pub sync_latency: latency::LatencyHistogram,
    /// Since the store thread started (the base of the per-day estimate).
    pub uptime_ms: u64,
}

impl StoreStats {
    /// `$SYS/broker/store/...` topics and values.
    pub fn sys_topics(&self) -> Vec<(String, String)> {
        let min = self.erase_counts.iter().min().copied().unwrap_or(0);
        let max = self.erase_counts.iter().max().copied().unwrap_or(0);
        let (state, code) = match (&self.failure, self.full) {
            (Some(_), _) => ("failed", 2),
            (None, true) => ("full", 1),
            (None, false) => ("ok", 0),
        };
        let mut topics: Vec<(String, String)> = [
            ("state", state.to_string()),
            ("state_code", code.to_string()),
            ("capacity_bytes", self.capacity_bytes.to_string()),
            ("live_bytes", self.live_bytes.to_string()),
            ("queued_messages", self.queued_messages.to_string()),
            ("appended", self.appended.to_string()),
            ("spared", self.spared.to_string()),
            ("spilled", self.spilled.to_string()),
            ("bytes_written", self.bytes_written.to_string()),
            ("syncs", self.syncs.to_string()),
            ("erases", self.erases.to_string()),
            ("erased_bytes", self.erased_bytes.to_string()),
            ("damaged", self.damaged.to_string()),
            ("rejected", self.rejected.to_string()),
            ("dropped_oldest", self.dropped_oldest.to_string()),
            ("quota_rejected", self.quota_rejected.to_string()),
            ("free_segments", self.free_segments.to_string()),
            (
                "write_amplification",
                format!("{:.3}", self.write_amplification()),
            ),
            ("erase_count/min", min.to_string()),
            ("erase_count/max", max.to_string()),
            (
                "erase_count/mean",
                format!("{:.2}", self.erase_count_mean()),
            ),
            ("wear_bytes", self.wear_bytes().to_string()),
            ("bytes_per_message", self.bytes_per_message().to_string()),
            (
                "bytes_per_day_estimate",
                self.bytes_per_day_estimate().to_string(),
            ),
            ("recovery_ms", self.recovery_millis.to_string()),
            ("sync_us/mean", self.sync_latency.mean_us().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("$SYS/broker/store/{k}"), v))
        .collect();
        if let Some(f) = &self.failure {
            topics.push((FAILURE_TOPIC.to_string(), f.clone()));
        }
        topics
    }

    /// Every byte the store wrote: programs (headers, records, copies) and
    /// erases (an image file writes 0xFF).
    pub fn wear_bytes(&self) -> u64 {
        self.bytes_written.saturating_add(self.erased_bytes)
    }

    /// Wear bytes per message taken (appended, or spared by write-behind;
    /// 0 before the first).
    pub fn bytes_per_message(&self) -> u64 {
        self.wear_bytes()
            .checked_div(self.appended.saturating_add(self.spared))
            .unwrap_or(0)
    }

    /// Wear bytes a day at the rate seen since the store thread started.
    pub fn bytes_per_day_estimate(&self) -> u64 {
        let per_day = u128::from(self.wear_bytes()) * 86_400_000;
        let est = per_day.checked_div(u128::from(self.uptime_ms)).unwrap_or(0);
        u64::try_from(est).unwrap_or(u64::MAX)
    }

    /// Mean erase count over the segments.
    pub fn erase_count_mean(&self) -> f64 {
        if self.erase_counts.is_empty() {
            return 0.0;
        }
        let sum: u64 = self.erase_counts.iter().map(|&c| u64::from(c)).sum();
        sum as f64 / self.erase_counts.len() as f64
    }

    /// Bytes written to flash per payload byte stored.
    pub fn write_amplification(&self) -> f64 {
        if self.payload_bytes == 0 {
            0.0
        } else {
            self.bytes_written as f64 / self.payload_bytes as f64
        }
    }
}

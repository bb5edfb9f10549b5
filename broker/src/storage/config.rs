//! The `[storage]` configuration section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When a PUBACK may be sent relative to the data reaching stable storage
/// (`[storage] durability`). Not to be confused with `hooks::Durability`,
/// the completion of one durable write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// PUBACK after the batch holding the message is synced (the default, and
    /// the only mode that keeps the promise across power cuts).
    #[default]
    Sync,
    /// Sync every `sync_interval_ms`; PUBACK at once. A crash can lose up to
    /// one interval of acknowledged messages, like Mosquitto's autosave.
    Interval,
    /// No persistence at all: offline queues, retained messages and sessions
    /// live in RAM and are lost on restart.
    Memory,
}

/// The former name of [`SyncMode`], kept so that code written against it
/// still compiles; new code names `SyncMode`.
pub type Durability = SyncMode;

/// What happens when a destination's message does not fit in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuse the message: no PUBACK, so the publisher retries (back-pressure).
    #[default]
    Reject,
    /// Drop the destination's oldest message to make room (counted).
    DropOldest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the store's image file (`store.img`).
    pub dir: PathBuf,
    /// Size of the image in bytes.
    pub capacity: u64,
    /// Segment size in bytes: a multiple of 4096; on SD cards a multiple of
    /// the card's erase block (often 4 MiB).
    pub segment_size: u64,
    pub durability: Durability,
    /// Sync period in `interval` mode.
    pub sync_interval_ms: u64,
    /// `sync` mode: the longest an ack, QoS 2 release, session save or
    /// clear waits for a sync when no durable commit comes to cover it
    /// (they never sync on their own; a lost ack is only a duplicate).
    pub ack_sync_interval_ms: u64,
    /// `sync` mode commit window (like PostgreSQL's `commit_delay`): a
    /// commit that a promise waits for gathers more requests until this
    /// long after the previous sync, or until a page (4 KiB) of writes
    /// waits; 0: sync at once.
    pub commit_delay_us: u64,
    /// `sync` mode write-behind: how long a QoS 1/2 message waits in RAM for
    /// its destinations' acknowledgements before it is written and synced
    /// (a message every destination acknowledges in time is never
    /// written); the publisher's PUBACK waits for one or the other. 0:
    /// write at once.
    pub spill_after_ms: u64,
    pub overflow: Overflow,
    /// Requests queued to the store task before publishers wait.
    pub queue_capacity: usize,
    /// Messages one destination (session or bridge lane) may have stored.
    pub max_stored_messages_per_session: u64,
    /// Frame bytes one destination may have stored.
    pub max_stored_bytes_per_session: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("./edgemq-data"),
            capacity: 64 * 1024 * 1024,
            segment_size: 1024 * 1024,
            durability: Durability::Sync,
            sync_interval_ms: 100,
            ack_sync_interval_ms: 1000,
            commit_delay_us: 50_000,
            spill_after_ms: 100,
            overflow: Overflow::Reject,
            queue_capacity: 4096,
            max_stored_messages_per_session: 200_000,
            max_stored_bytes_per_session: 32 * 1024 * 1024,
        }
    }
}

impl StorageConfig {
    /// The quota every destination gets unless the bridge sets its own.
    pub fn default_quota(&self) -> super::Quota {
        super::Quota {
            messages: self.max_stored_messages_per_session,
            bytes: self.max_stored_bytes_per_session,
            overflow: None,
        }
    }

    /// Checks values a typed parse cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.segment_size < 4096 || self.segment_size % 4096 != 0 {
            return Err(("segment_size", "must be a multiple of 4096".into()));
        }
        if self.capacity < 5 * self.segment_size {
            return Err(("capacity", "must hold at least 5 segments".into()));
        }
        if self.capacity > u64::from(u32::MAX) {
            return Err(("capacity", "must be below 4 GiB".into()));
        }
        if self.queue_capacity == 0 {
            return Err(("queue_capacity", "must be at least 1".into()));
        }
        if self.sync_interval_ms == 0 {
            return Err(("sync_interval_ms", "must be at least 1".into()));
        }
        if self.ack_sync_interval_ms == 0 || self.ack_sync_interval_ms > 3_600_000 {
            return Err(("ack_sync_interval_ms", "must be 1 to 3600000".into()));
        }
        if self.commit_delay_us > 100_000 {
            return Err(("commit_delay_us", "must be at most 100000 (0.1 s)".into()));
        }
        if self.spill_after_ms > 10_000 {
            return Err(("spill_after_ms", "must be at most 10000 (10 s)".into()));
        }
        if self.max_stored_messages_per_session == 0 {
            return Err((
                "max_stored_messages_per_session",
                "must be at least 1".into(),
            ));
        }
        if self.max_stored_bytes_per_session < 4096 {
            return Err((
                "max_stored_bytes_per_session",
                "must be at least 4096".into(),
            ));
        }
        Ok(())
    }
}

//! The `[storage]` configuration section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When a PUBACK may be sent relative to the data reaching stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
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
    /// Sync period in `interval` mode; in `sync` mode, the longest writes
    /// nobody waits for (acks) stay unsynced when no durable batch follows.
    pub sync_interval_ms: u64,
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

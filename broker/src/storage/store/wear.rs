//! What the group-commit thread needs to know to spare the flash.
//!
//! Invariant: `unsynced()` is true from the first program or erase after a
//! sync until the next successful sync; the store thread never leaves a
//! write unsynced for longer than `ack_sync_interval_ms` (storage/task.rs).

use super::super::flash::Durable;
use super::Store;

impl<F: Durable> Store<F> {
    /// Something was programmed or erased since the last successful sync.
    pub fn unsynced(&self) -> bool {
        self.dirty
    }
}

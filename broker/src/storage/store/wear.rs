//! What the group-commit thread needs to know to spare the flash.
//!
//! Invariants: erase counts only grow (`seed_erase_counts` takes the
//! larger); `unsynced()` is true from the first program or erase after a
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

impl<F: Durable> Store<F> {
    /// Segments erased so far in this process.
    pub fn erases(&self) -> u64 {
        self.stats.erases
    }

    /// The erase count of every segment.
    pub fn erase_counts(&self) -> Vec<u32> {
        self.segs.iter().map(|g| g.erase_count).collect()
    }

    /// Takes saved erase counts back after a restart (`storage::wear_file`):
    /// each segment keeps the larger of its header's and the saved count.
    /// Ignored unless there is one count per segment.
    pub fn seed_erase_counts(&mut self, saved: &[u32]) {
        if saved.len() != self.segs.len() {
            return;
        }
        for (seg, &c) in self.segs.iter_mut().zip(saved) {
            seg.erase_count = seg.erase_count.max(c);
        }
    }
}

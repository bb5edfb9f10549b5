//! Erase counts for the wear figures and `storage::wear_file`.
//!
//! Invariant: a segment's erase count only grows: `seed_erase_counts`
//! keeps the larger of the header's and the saved count.

use super::super::flash::Durable;
use super::Store;

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

//! The budget: how many live bytes the store may promise.
//!
//! Invariants: see the list in `store/mod.rs` (4).

use super::*;

impl<F: Durable> Store<F> {
    /// Bytes we may promise: all segments but three (two kept free, one
    /// head), less their headers.
    pub(super) fn budget(&self) -> u64 {
        (self.segs.len() as u64 - 3) * u64::from(self.seg_size - HEADER_LEN as u32)
    }

    /// Applies the overflow policy when `need` more live bytes exceed the budget.
    pub(super) fn ensure_budget(
        &mut self,
        need: u64,
        destinations: &[String],
    ) -> Result<(), StoreError> {
        while self.live_bytes() + need > self.budget() {
            if self.overflow == Overflow::Reject {
                self.stats.rejected += 1;
                return Err(StoreError::Full);
            }
            // Drop the oldest message of the first destination that has one.
            let victim = destinations.iter().find_map(|d| {
                let id = *self.dest_ids.get(d)?;
                let oldest = *self.queues.get(&id)?.iter().next()?;
                Some((oldest, d.clone()))
            });
            let Some((oldest, dest)) = victim else {
                self.stats.rejected += 1;
                return Err(StoreError::Full);
            };
            self.ack(oldest, &dest)?;
            self.stats.dropped_oldest += 1;
        }
        Ok(())
    }
}

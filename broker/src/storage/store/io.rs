//! Every program, erase and sync goes through here (invariant 5 in
//! `store/mod.rs`): after the first failure nothing is written, erased or
//! synced again, and the failure is kept for the rest of the process.

use super::*;

impl<F: Durable> Store<F> {
    /// Err once the store has failed: nothing is programmed, erased or
    /// synced again in this process (invariant 5).
    pub(super) fn check_failed(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(f) => Err(StoreError::Failed(f.clone())),
            None => Ok(()),
        }
    }

    /// Makes the store failed for the rest of the process; returns `e`.
    pub(super) fn mark_failed(&mut self, e: StoreError) -> StoreError {
        if self.failed.is_none() {
            tracing::error!(error = %e, "store failed: no further writes, erases or syncs in this process");
            self.failed = Some(e.to_string());
        }
        e
    }

    /// True when something was written since the last sync.
    pub fn has_unsynced_writes(&self) -> bool {
        self.dirty
    }

    /// Bytes programmed since the last sync.
    pub fn unsynced_bytes(&self) -> u64 {
        self.unsynced_bytes
    }

    /// The reason the store failed, if it has.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Programs `bytes` at `off` (every program goes through here).
    pub(super) fn program(&mut self, off: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_failed()?;
        self.dirty = true;
        self.unsynced_bytes = self.unsynced_bytes.saturating_add(bytes.len() as u64);
        match self.flash.write(off, bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.mark_failed(StoreError::flash(e))),
        }
    }

    /// Erases `from..to` (every erase goes through here).
    pub(super) fn erase_range(&mut self, from: u32, to: u32) -> Result<(), StoreError> {
        self.check_failed()?;
        self.dirty = true;
        match self.flash.erase(from, to) {
            Ok(()) => {
                self.stats.erased_bytes += u64::from(to - from);
                Ok(())
            }
            Err(e) => Err(self.mark_failed(StoreError::flash(e))),
        }
    }

    /// Syncs the flash if anything was written since the last sync. A
    /// failed sync is never retried: on Linux the retry would report
    /// success for data that was dropped (fsyncgate), so the store fails.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        self.check_failed()?;
        if self.dirty {
            let started = std::time::Instant::now();
            if let Err(e) = self.flash.sync() {
                return Err(self.mark_failed(StoreError::flash(e)));
            }
            self.stats.sync_latency.record(started.elapsed());
            self.dirty = false;
            self.unsynced_bytes = 0;
            self.stats.syncs += 1;
        }
        Ok(())
    }
}

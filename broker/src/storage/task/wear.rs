//! The store thread's wear helpers (issue 13): the commit window, lazy
//! answers (written now, answered after the next sync, never causing one)
//! and the erase counts kept beside the image.
//!
//! Invariants: a lazy answer is sent only after a sync that covered its
//! write (or with the error that stopped it); the commit window never
//! holds more than `MAX_BATCH` requests, more than a page of unsynced
//! writes, or past `commit_delay_us` after the previous sync.

use std::time::Instant;

use super::super::flash::Durable;
use super::{Pending, Worker, MAX_BATCH};

/// A page of the page cache (and a typical flash write unit): bytes a sync
/// writes at least.
const PAGE: u64 = 4096;

impl<F: Durable> Worker<F> {
    /// The commit window: before a promised commit, takes more requests
    /// until `commit_delay` after the previous sync (`last_sync`), so its
    /// sync covers them too, or until a page of writes waits (a fuller page
    /// saves nothing more). A first message after a quiet spell is synced
    /// at once; at steady rates syncs are at least `commit_delay` apart.
    pub(super) fn gather(&mut self, pending: &mut Vec<Pending>, last_sync: Instant) {
        let deadline = last_sync + self.commit_delay;
        while pending.len() < MAX_BATCH && self.store.unsynced_bytes() < PAGE {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(r) => self.handle(r, pending),
                Err(_) => break,
            }
        }
    }

    /// Writes the erase counts beside the image after new erases (a
    /// statistic: a failure is logged, never fatal).
    pub(super) fn save_erase_counts(&mut self) {
        let erases = self.store.erases();
        if erases == self.saved_erases {
            return;
        }
        if let Some(path) = &self.wear_path {
            if let Err(e) = super::super::wear_file::save(path, &self.store.erase_counts()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot save erase counts");
            }
        }
        self.saved_erases = erases;
    }
}

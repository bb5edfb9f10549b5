//! The budget: how many live bytes the store may promise, and the
//! per-destination quotas.
//!
//! Invariants (4 in `store/mod.rs`):
//! - Every write that adds live bytes (a message, a retained message, a
//!   session, a pending QoS 2 id) is checked against the budget first and
//!   answered `Full` when it does not fit. Deletions (acks, clears, session
//!   removal, QoS 2 release) and compaction copies never are: with live
//!   bytes within the budget, three segments' worth of room stays
//!   reclaimable, so a tombstone always finds space.
//! - `Full` refuses one request and is never sticky: the store accepts
//!   again as soon as acks free enough space.
//! - No destination holds more than its quota (messages and bytes; a
//!   message's frame counts fully against each destination owing it).
//!   Under `drop-oldest` (the store's policy, or the destination's own
//!   when its quota names one: a bridge lane's `overflow`) the destination
//!   over its quota loses its own oldest message, never another
//!   destination's; under `reject` the
//!   message is not stored for it (counted), and it is refused when no
//!   destination can take it.

use super::*;

/// A destination's store quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Messages owed to the destination.
    pub messages: u64,
    /// Bytes of those messages' frames.
    pub bytes: u64,
    /// What happens when the destination is over its quota; `None` follows
    /// the store's `overflow` (a bridge lane can have its own).
    pub overflow: Option<Overflow>,
}

impl Quota {
    /// No limit beyond the store's budget.
    pub const UNLIMITED: Quota = Quota {
        messages: u64::MAX,
        bytes: u64::MAX,
        overflow: None,
    };
}

impl<F: Durable> Store<F> {
    /// Bytes we may promise: all segments but three (two kept free, one
    /// head), less their headers.
    pub(super) fn budget(&self) -> u64 {
        (self.segs.len() as u64 - 3) * u64::from(self.seg_size - HEADER_LEN as u32)
    }

    /// The quota every destination gets unless it has its own.
    pub fn set_default_quota(&mut self, quota: Quota) {
        self.default_quota = quota;
    }

    /// Gives `destination` its own quota (the bridge's lanes use this);
    /// `None` goes back to the default.
    pub fn set_destination_quota(&mut self, destination: &str, quota: Option<Quota>) {
        match quota {
            Some(q) => self.quotas.insert(destination.to_string(), q),
            None => self.quotas.remove(destination),
        };
    }

    fn quota_of(&self, destination: &str) -> Quota {
        self.quotas
            .get(destination)
            .copied()
            .unwrap_or(self.default_quota)
    }

    /// Bytes owed to `destination`.
    pub fn destination_bytes(&self, destination: &str) -> u64 {
        self.dest_ids
            .get(destination)
            .and_then(|d| self.dest_bytes.get(d))
            .copied()
            .unwrap_or(0)
    }

    /// True while the store refuses new messages for lack of space: the
    /// last refused append still would not fit. Cleared by the next append
    /// that fits, or as soon as enough space is freed.
    pub fn is_full(&self) -> bool {
        self.refused_need
            .is_some_and(|need| self.live_bytes() + need > self.budget())
    }

    /// The destinations of a new message (`need` frame bytes) that can take
    /// it within their quotas, after dropping their own oldest messages
    /// under `drop-oldest`.
    pub(super) fn within_quotas(
        &mut self,
        need: u64,
        destinations: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut accepted = Vec::with_capacity(destinations.len());
        for d in destinations {
            let q = self.quota_of(d);
            let policy = q.overflow.unwrap_or(self.overflow);
            let fits = |s: &Self| {
                (s.queue_len(d) as u64) < q.messages
                    && s.destination_bytes(d).saturating_add(need) <= q.bytes
            };
            while !fits(self) && policy == Overflow::DropOldest {
                let Some(oldest) = self.oldest_of(d) else {
                    break;
                };
                self.ack(oldest, d)?;
                self.stats.dropped_oldest += 1;
            }
            if fits(self) {
                accepted.push(d.clone());
            } else {
                self.stats.quota_rejected += 1;
                tracing::warn!(
                    destination = %d,
                    queued = self.queue_len(d),
                    bytes = self.destination_bytes(d),
                    "destination over its store quota: message not stored for it"
                );
            }
        }
        if accepted.is_empty() {
            return Err(StoreError::Full);
        }
        Ok(accepted)
    }

    fn oldest_of(&self, destination: &str) -> Option<u64> {
        let id = self.dest_ids.get(destination)?;
        self.queues.get(id)?.iter().next().copied()
    }

    /// Applies the overflow policy when `need` more live bytes exceed the
    /// budget: `reject` refuses; `drop-oldest` drops the oldest message of
    /// the destination holding the most bytes (the one hoarding space).
    pub(super) fn ensure_budget(&mut self, need: u64) -> Result<(), StoreError> {
        while self.live_bytes() + need > self.budget() {
            let victim = match self.overflow {
                Overflow::Reject => None,
                Overflow::DropOldest => self
                    .dest_bytes
                    .iter()
                    .filter(|(_, b)| **b > 0)
                    .max_by_key(|(d, b)| (**b, std::cmp::Reverse(**d)))
                    .and_then(|(d, _)| {
                        let name = self.dest_names.get(*d as usize)?.clone();
                        Some((self.oldest_of(&name)?, name))
                    }),
            };
            let Some((oldest, dest)) = victim else {
                self.stats.rejected += 1;
                self.refused_need = Some(need);
                return Err(StoreError::Full);
            };
            self.ack(oldest, &dest)?;
            self.stats.dropped_oldest += 1;
        }
        self.refused_need = None;
        Ok(())
    }

    /// Checks that a keyed record (retained, session, QoS 2) growing the
    /// live bytes by `len` less what it replaces fits the budget.
    pub(super) fn ensure_room_for_keyed(
        &mut self,
        rec: &Record,
        replaces: Option<Loc>,
    ) -> Result<(), StoreError> {
        let len = record::frame_len(self.body_of(rec)?.len(), F::WRITE_SIZE) as u64;
        let grow = len.saturating_sub(replaces.map_or(0, |l| u64::from(l.len)));
        if grow > 0 && self.live_bytes() + grow > self.budget() {
            self.stats.rejected += 1;
            return Err(StoreError::Full);
        }
        Ok(())
    }
}

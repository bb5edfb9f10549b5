//! The store thread's side of write-behind (`[storage] spill_after_ms`,
//! issue 13): appends are held in [`Behind`] instead of written when every
//! destination owes nothing on flash, acks and in-flight records of a held
//! message never reach the flash, due messages are appended before the
//! batch's sync, and page reads see held messages too.
//!
//! Invariants (with those of `behind`):
//! - Only `sync` mode holds (interval mode answers at once anyway), and only
//!   messages with a caller-chosen id (the broker's message id).
//! - A held message's reply is answered either when its last destination
//!   acknowledged it or was cleared (a `Pending::Now`, answered Ok at the
//!   end of that batch after its figures are published, with or without a
//!   sync: nothing was written and every destination that owed it has it),
//!   or as a `Pending::Id` of the batch whose sync covers its spill.
//! - At shutdown every held message is appended before the final sync.

use std::time::Instant;

use super::super::flash::Durable;
use super::super::{Durability, StoreError, StoredMessage};
use super::behind::{Acked, Held};
use super::{answer, Pending, Reply, Worker};

impl<F: Durable> Worker<F> {
    /// An append: held when write-behind may wait for its acks, else
    /// written now (its reply waits for the batch's sync).
    pub(super) fn append_or_hold(
        &mut self,
        msg: StoredMessage,
        dests: Vec<String>,
        tx: Reply<u64>,
        pending: &mut Vec<Pending>,
    ) {
        let holdable = self.durability == Durability::Sync
            && msg.id != 0
            && !dests.is_empty()
            && self.behind.has_room()
            && !self.behind.contains(msg.id)
            && dests.iter().all(|d| self.store.queue_len(d) == 0);
        if holdable {
            if let Some((tx, id)) = self.behind.hold(msg, dests, tx, Instant::now()) {
                self.spared += 1;
                pending.push(Pending::Now(tx, id));
            }
            return;
        }
        // Older held messages of these destinations go first (order).
        let older = self.behind.sharing(&dests);
        self.spill(older, pending);
        let id = msg.id;
        match self.store.append(msg, &dests) {
            Ok(id) => pending.push(Pending::Id(tx, id)),
            Err(e) => return self.write_error(e, tx),
        }
        // Acks that overtook this append (a fast subscriber) apply now.
        for d in &dests {
            if self.behind.take_early(id, d) {
                self.store_ack(id, d);
            }
        }
    }

    /// A destination acknowledged a message: a held one is answered when
    /// nobody owes it any more (never written); else the store records it.
    pub(super) fn ack(&mut self, id: u64, dest: &str, pending: &mut Vec<Pending>) {
        match self.behind.ack(id, dest) {
            Acked::Done(tx) => {
                self.spared += 1;
                pending.push(Pending::Now(tx, id));
            }
            Acked::StillOwed => {}
            Acked::NotHeld => {
                if !self.store_ack(id, dest) {
                    self.behind.early_ack(id, dest);
                }
            }
        }
    }

    /// The store's ack; false when it did not know the pair.
    fn store_ack(&mut self, id: u64, dest: &str) -> bool {
        match self.store.ack(id, dest) {
            Ok(known) => known,
            Err(e) => {
                self.background_error("ack", &e);
                true
            }
        }
    }

    /// An in-flight record: kept with a held message, else written.
    pub(super) fn inflight(&mut self, dest: &str, id: u64, pkid: u16, stage: u8) {
        if self.behind.inflight(dest, id, pkid, stage) {
            return;
        }
        // Best effort: without the record a crash costs a resend under a
        // new packet id, so a full store is no failure.
        match self.store.set_inflight(dest, id, pkid, stage) {
            Ok(_) | Err(StoreError::Full) => {}
            Err(e) => self.fail(&e),
        }
    }

    /// A destination's queue is cleared: held messages stop owing it.
    pub(super) fn clear_held(&mut self, dest: &str, pending: &mut Vec<Pending>) {
        for (tx, id) in self.behind.clear(dest) {
            self.spared += 1;
            pending.push(Pending::Now(tx, id));
        }
    }

    /// A page read: the store's messages and the held ones, in id order
    /// (a destination has only one of the two at a time).
    pub(super) fn read(
        &mut self,
        dest: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = self.store.read(dest, after, max)?;
        let held = self.behind.read(dest, after, max);
        if !held.is_empty() {
            out.extend(held);
            out.sort_by_key(|m| m.id);
            out.truncate(max);
        }
        Ok(out)
    }

    /// Appends every held message whose deadline passed (with those sharing
    /// a destination) for the destinations still owing it; their replies
    /// wait for this batch's sync.
    pub(super) fn spill_due(&mut self, pending: &mut Vec<Pending>) {
        let due = self.behind.due(Instant::now());
        self.spill(due, pending);
    }

    /// Shutdown: appends everything still held.
    pub(super) fn spill_all(&mut self, pending: &mut Vec<Pending>) {
        let all = self.behind.drain();
        self.spill(all, pending);
    }

    fn spill(&mut self, held: Vec<Held<Reply<u64>>>, pending: &mut Vec<Pending>) {
        for h in held {
            if let Some(f) = self.failure() {
                answer(Pending::Id(h.reply, h.msg.id), Err(f));
                continue;
            }
            self.spilled += 1;
            match self.store.append(h.msg, &h.owed) {
                Ok(id) => {
                    pending.push(Pending::Id(h.reply, id));
                    for (dest, pkid, stage) in h.inflight {
                        self.inflight(&dest, id, pkid, stage);
                    }
                }
                Err(e) => self.write_error(e, h.reply),
            }
        }
    }
}

//! Write-behind with a deadline (issue 13, `[storage] spill_after_ms`): the
//! table of messages held in RAM while their destinations may still
//! acknowledge them.
//!
//! A message is held instead of appended when none of its destinations owes
//! anything on flash (the store thread checks that). Each destination's
//! acknowledgement removes it from the message's `owed` list; when the list
//! is empty the message was never written and its reply is answered at once
//! (the promise: acknowledged by every destination that owes it). At the
//! deadline the message *spills*: the store thread appends it for the
//! destinations still owing it, with the in-flight records they reported,
//! syncs, and only then answers.
//!
//! Invariants:
//! - A destination never has held messages and messages on flash at the same
//!   time: when one held message spills, every held message sharing a
//!   destination with it spills too (transitively), in id order; while a
//!   destination owes anything on flash new messages for it are not held;
//!   and a message written at once (the table is full) first takes the held
//!   messages of its destinations to flash (`sharing`).
//!   So the flash order of a destination is its id order and a page read
//!   sees one source only.
//! - An entry's reply is answered exactly once: by `ack`/`clear` (no write),
//!   or by the store thread after the spill's sync.
//! - At most `max` entries are held (the caller writes at once beyond it);
//!   at most `max` early acks are remembered (oldest forgotten first).
//! - The table knows nothing of the broker: destinations are strings.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::storage::StoredMessage;

/// One held message.
pub(crate) struct Held<R> {
    pub msg: StoredMessage,
    /// Destinations that have not acknowledged it yet (never empty).
    pub owed: Vec<String>,
    /// In-flight records reported while held: (destination, packet id,
    /// stage), written after the message if it spills.
    pub inflight: Vec<(String, u16, u8)>,
    pub reply: R,
    pub deadline: Instant,
}

/// What an ack did to the table.
pub(crate) enum Acked<R> {
    /// Not held for that destination: the store's business.
    NotHeld,
    /// Held, still owed to another destination.
    StillOwed,
    /// The last destination acknowledged: answer now, nothing is written.
    Done(R),
}

/// The pending table. `R` is the reply (a oneshot sender in the store
/// thread, anything in tests).
pub(crate) struct Behind<R> {
    spill_after: Duration,
    max: usize,
    held: BTreeMap<u64, Held<R>>,
    /// Ids in the order they were held (deadlines are in the same order);
    /// ids already gone are skipped lazily.
    order: VecDeque<u64>,
    /// Acks that arrived before their message (a subscriber can answer
    /// before the publisher's append reaches the store thread).
    early: HashSet<(u64, String)>,
    early_order: VecDeque<(u64, String)>,
}

impl<R> Behind<R> {
    /// `spill_after` zero disables holding.
    pub fn new(spill_after: Duration, max: usize) -> Behind<R> {
        Behind {
            spill_after,
            max,
            held: BTreeMap::new(),
            order: VecDeque::new(),
            early: HashSet::new(),
            early_order: VecDeque::new(),
        }
    }

    /// Holding is on and there is room for one more message.
    pub fn has_room(&self) -> bool {
        !self.spill_after.is_zero() && self.held.len() < self.max
    }

    /// True when message `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        self.held.contains_key(&id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Holds `msg` for `dests` until `now + spill_after`. Returns the reply
    /// when every destination had already acknowledged it (early acks): the
    /// caller answers it at once. Call only after [`Behind::has_room`], for
    /// an id not [`Behind::contains`]ed.
    pub fn hold(
        &mut self,
        msg: StoredMessage,
        dests: Vec<String>,
        reply: R,
        now: Instant,
    ) -> Option<(R, u64)> {
        let id = msg.id;
        let owed: Vec<String> = dests
            .into_iter()
            .filter(|d| !self.early.remove(&(id, d.clone())))
            .collect();
        if owed.is_empty() {
            return Some((reply, id));
        }
        let deadline = now + self.spill_after;
        self.held.insert(
            id,
            Held {
                msg,
                owed,
                inflight: Vec::new(),
                reply,
                deadline,
            },
        );
        self.order.push_back(id);
        None
    }

    /// `dest` acknowledged `id`.
    pub fn ack(&mut self, id: u64, dest: &str) -> Acked<R> {
        let Some(entry) = self.held.get_mut(&id) else {
            return Acked::NotHeld;
        };
        let before = entry.owed.len();
        entry.owed.retain(|d| d != dest);
        if entry.owed.len() == before {
            return Acked::NotHeld;
        }
        entry.inflight.retain(|(d, _, _)| d != dest);
        if !entry.owed.is_empty() {
            return Acked::StillOwed;
        }
        match self.held.remove(&id) {
            Some(e) => Acked::Done(e.reply),
            None => Acked::NotHeld,
        }
    }

    /// Remembers an ack the store did not know (it may precede its message).
    pub fn early_ack(&mut self, id: u64, dest: &str) {
        if self.spill_after.is_zero() || self.max == 0 {
            return;
        }
        let key = (id, dest.to_string());
        if self.early.insert(key.clone()) {
            self.early_order.push_back(key);
        }
        while self.early_order.len() > self.max {
            if let Some(old) = self.early_order.pop_front() {
                self.early.remove(&old);
            }
        }
    }

    /// Forgets the early ack of (`id`, `dest`); true if there was one.
    pub fn take_early(&mut self, id: u64, dest: &str) -> bool {
        if self.early.is_empty() {
            return false;
        }
        self.early.remove(&(id, dest.to_string()))
    }

    /// Keeps the in-flight record of a held message; false when not held.
    pub fn inflight(&mut self, dest: &str, id: u64, pkid: u16, stage: u8) -> bool {
        let Some(entry) = self.held.get_mut(&id) else {
            return false;
        };
        if !entry.owed.iter().any(|d| d == dest) {
            return false;
        }
        entry.inflight.retain(|(d, _, _)| d != dest);
        entry.inflight.push((dest.to_string(), pkid, stage));
        true
    }

    /// `dest` is gone (its session ended): it owes nothing any more. Returns
    /// the replies of messages nobody owes now (answer them at once).
    pub fn clear(&mut self, dest: &str) -> Vec<(R, u64)> {
        let mut done = Vec::new();
        let ids: Vec<u64> = self.held.keys().copied().collect();
        for id in ids {
            if let Some(entry) = self.held.get_mut(&id) {
                entry.owed.retain(|d| d != dest);
                entry.inflight.retain(|(d, _, _)| d != dest);
                if entry.owed.is_empty() {
                    if let Some(e) = self.held.remove(&id) {
                        done.push((e.reply, id));
                    }
                }
            }
        }
        done
    }

    /// Held messages owed to `dest` with ids above `after`, in id order.
    pub fn read(&self, dest: &str, after: Option<u64>, max: usize) -> Vec<StoredMessage> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        self.held
            .range(start..)
            .filter(|(_, e)| e.owed.iter().any(|d| d == dest))
            .take(max)
            .map(|(_, e)| e.msg.clone())
            .collect()
    }

    /// True when `dest` has a held message.
    #[cfg(test)]
    pub fn holds_for(&self, dest: &str) -> bool {
        self.held.values().any(|e| e.owed.iter().any(|d| d == dest))
    }

    /// The earliest deadline of a held message.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(id) = self.order.front() {
            match self.held.get(id) {
                Some(e) => return Some(e.deadline),
                None => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Takes every message whose deadline has passed, and every held
    /// message sharing a destination with one taken (transitively), in id
    /// order: these must be written now.
    pub fn due(&mut self, now: Instant) -> Vec<Held<R>> {
        let mut spilling: HashSet<String> = HashSet::new();
        let mut take: Vec<u64> = Vec::new();
        while let Some(&id) = self.order.front() {
            match self.held.get(&id) {
                Some(e) if e.deadline <= now => {
                    spilling.extend(e.owed.iter().cloned());
                    take.push(id);
                    self.order.pop_front();
                }
                Some(_) => break,
                None => {
                    self.order.pop_front();
                }
            }
        }
        if take.is_empty() {
            return Vec::new();
        }
        self.take_closure(take, spilling)
    }

    /// Takes every held message sharing a destination with `dests`
    /// (transitively), in id order: `dests` are about to get a message
    /// written at once, and their older held ones must be on flash first.
    pub fn sharing(&mut self, dests: &[String]) -> Vec<Held<R>> {
        if self.held.is_empty() {
            return Vec::new();
        }
        self.take_closure(Vec::new(), dests.iter().cloned().collect())
    }

    /// `take` plus every held message owing one of `spilling`, closed over
    /// the destinations of what is taken; removed and returned in id order.
    fn take_closure(&mut self, take: Vec<u64>, mut spilling: HashSet<String>) -> Vec<Held<R>> {
        let mut taken: HashSet<u64> = take.into_iter().collect();
        loop {
            let more: Vec<u64> = self
                .held
                .iter()
                .filter(|(id, e)| {
                    !taken.contains(id) && e.owed.iter().any(|d| spilling.contains(d))
                })
                .map(|(id, _)| *id)
                .collect();
            if more.is_empty() {
                break;
            }
            for id in more {
                if let Some(e) = self.held.get(&id) {
                    spilling.extend(e.owed.iter().cloned());
                }
                taken.insert(id);
            }
        }
        let mut ids: Vec<u64> = taken.into_iter().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.held.remove(&id))
            .collect()
    }

    /// Takes everything (shutdown: write it all), in id order.
    pub fn drain(&mut self) -> Vec<Held<R>> {
        self.order.clear();
        std::mem::take(&mut self.held).into_values().collect()
    }
}

#[cfg(test)]
#[path = "behind_tests.rs"]
mod tests;

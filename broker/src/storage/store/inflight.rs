//! Outgoing packet ids in the store (issue 11, review finding W7).
//!
//! When a persistent session is sent a QoS 1/2 message, and again when its
//! PUBREC arrives, the broker records `Record::Inflight { destination, id,
//! pkid, stage }`. After a crash the restore puts those messages back in the
//! session's in-flight window, so the reconnecting client gets them with
//! DUP=1 and their original packet id, or gets the PUBREL of a message it
//! already PUBRECed, instead of a second copy under a new id.
//!
//! Invariants:
//! - an entry is live only while its message is owed to its destination:
//!   the ack (or destination clear) that ends the debt drops the entry
//!   (`drop_destination` calls [`Store::drop_inflight`]), and recovery
//!   purges entries whose message is not owed any more (an entry may be
//!   replayed before its message's copy in a later segment);
//! - the latest record for a (destination, message) wins, as for every
//!   keyed record; live entries are copied forward by reclamation with the
//!   other keyed records.

use super::{Durable, Loc, Record, Store, StoreError};

/// A live outgoing packet id.
#[derive(Debug, Clone, Copy)]
pub(super) struct InflightEntry {
    pub loc: Loc,
    pub pkid: u16,
    pub stage: u8,
}

impl<F: Durable> Store<F> {
    /// Applies an `Inflight` record (recovery and live writes).
    pub(super) fn apply_inflight(
        &mut self,
        destination: &str,
        id: u64,
        pkid: u16,
        stage: u8,
        loc: Loc,
    ) {
        let d = self.intern(destination);
        self.segs[loc.seg as usize].live_bytes += loc.len;
        let entry = InflightEntry { loc, pkid, stage };
        if let Some(old) = self.inflight.insert((d, id), entry) {
            self.unlive(old.loc);
        }
    }

    /// Forgets the packet id of (`dest`, `id`), if any.
    pub(super) fn drop_inflight(&mut self, dest: u32, id: u64) {
        if let Some(old) = self.inflight.remove(&(dest, id)) {
            self.unlive(old.loc);
        }
    }

    /// Drops entries whose message is no longer owed to their destination.
    pub(super) fn purge_stale_inflight(&mut self) {
        let stale: Vec<(u32, u64)> = self
            .inflight
            .keys()
            .filter(|(d, id)| !self.messages.get(id).is_some_and(|e| e.dests.contains(d)))
            .copied()
            .collect();
        for (d, id) in stale {
            self.drop_inflight(d, id);
        }
    }

    /// Where the live entries are.
    pub(super) fn inflight_locs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.inflight.values().map(|e| e.loc)
    }

    /// Records that message `id`, owed to `destination`, went out with
    /// packet id `pkid` and is at `stage`. False (nothing written) when the
    /// message is not owed there; a repeat of the current state writes
    /// nothing either.
    pub fn set_inflight(
        &mut self,
        destination: &str,
        id: u64,
        pkid: u16,
        stage: u8,
    ) -> Result<bool, StoreError> {
        let Some(&d) = self.dest_ids.get(destination) else {
            return Ok(false);
        };
        if !self.messages.get(&id).is_some_and(|e| e.dests.contains(&d)) {
            return Ok(false);
        }
        if self
            .inflight
            .get(&(d, id))
            .is_some_and(|e| e.pkid == pkid && e.stage == stage)
        {
            return Ok(true);
        }
        let rec = Record::Inflight {
            destination: destination.to_string(),
            id,
            pkid,
            stage,
        };
        // A live record like any other: it counts against the budget (W1).
        let replaces = self.inflight.get(&(d, id)).map(|e| e.loc);
        self.ensure_room_for_keyed(&rec, replaces)?;
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(true)
    }

    /// (message id, packet id, stage) of every live entry of `destination`,
    /// in message id order.
    pub fn inflight_of(&self, destination: &str) -> Vec<(u64, u16, u8)> {
        let Some(&d) = self.dest_ids.get(destination) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, u16, u8)> = self
            .inflight
            .iter()
            .filter(|((dest, _), _)| *dest == d)
            .map(|((_, id), e)| (*id, e.pkid, e.stage))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Entries survive a reopen and reclamation, and die with their debt.

    use crate::storage::flash::{RamFlash, BLOCK};
    use crate::storage::{Overflow, Store, StoredMessage};

    fn message(payload_len: usize) -> StoredMessage {
        StoredMessage {
            topic: "t".into(),
            qos: 2,
            payload: vec![7u8; payload_len].into(),
            ..Default::default()
        }
    }

    fn reopen(store: Store<RamFlash>) -> Store<RamFlash> {
        Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject)
            .unwrap()
            .0
    }

    #[test]
    fn inflight_entries_survive_reopen_and_end_with_the_ack() {
        let (mut store, _) =
            Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
        let dests = ["session/a".to_string(), "session/b".to_string()];
        let m1 = store.append(message(10), &dests).unwrap();
        let m2 = store.append(message(10), &dests[..1]).unwrap();
        assert!(store.set_inflight("session/a", m1, 5, 2).unwrap());
        assert!(store.set_inflight("session/a", m1, 5, 3).unwrap());
        assert!(store.set_inflight("session/a", m2, 6, 1).unwrap());
        assert!(store.set_inflight("session/b", m1, 9, 2).unwrap());
        assert!(
            !store.set_inflight("session/c", m1, 1, 1).unwrap(),
            "not owed there"
        );
        store.commit().unwrap();
        let mut store = reopen(store);
        assert_eq!(store.inflight_of("session/a"), [(m1, 5, 3), (m2, 6, 1)]);
        store.ack(m2, "session/a").unwrap();
        store.clear_destination("session/b").unwrap();
        store.commit().unwrap();
        let store = reopen(store);
        assert_eq!(store.inflight_of("session/a"), [(m1, 5, 3)]);
        assert!(store.inflight_of("session/b").is_empty());
    }

    #[test]
    fn inflight_entries_are_copied_forward_by_reclamation() {
        let (mut store, _) =
            Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
        let dest = ["session/a".to_string()];
        let kept = store.append(message(10), &dest).unwrap();
        store.set_inflight("session/a", kept, 42, 2).unwrap();
        // Churn until the first segments are reclaimed or erased.
        for _ in 0..400 {
            let id = store.append(message(200), &dest).unwrap();
            store.ack(id, "session/a").unwrap();
            store.commit().unwrap();
        }
        assert!(
            store.stats().reclaims > 0,
            "the first segment was never reclaimed"
        );
        assert_eq!(store.inflight_of("session/a"), [(kept, 42, 2)]);
        let store = reopen(store);
        assert_eq!(store.inflight_of("session/a"), [(kept, 42, 2)]);
    }
}

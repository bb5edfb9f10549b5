//! Reclamation: opening heads, copying live records out of the oldest
//! segment, erasing segments.
//!
//! Invariants: see the list in `store/mod.rs` (2, 3 and 4 live here).

use super::*;

impl<F: Durable> Store<F> {
    pub(super) fn free_segments(&self) -> usize {
        self.segs.iter().filter(|s| s.seq.is_none()).count()
    }

    /// Opens the next free segment in ring order as the head.
    pub(super) fn open_new_head(&mut self) -> Result<(), StoreError> {
        let n = self.segs.len();
        let next = (1..=n)
            .map(|k| (self.head + k) % n)
            .find(|&i| self.segs[i].seq.is_none())
            .ok_or(StoreError::Full)?;
        if !self.segs[next].clean && !self.reads_erased(next)? {
            self.erase_segment(next)?;
        }
        let header = Header {
            seq: self.next_seq,
            erase_count: self.segs[next].erase_count,
            segment_size: self.seg_size,
            capacity: self.capacity_u32()?,
        };
        self.program(self.seg_base(next), &header.encode())?;
        self.stats.bytes_written += HEADER_LEN as u64;
        let seg = &mut self.segs[next];
        seg.seq = Some(self.next_seq);
        seg.write_off = HEADER_LEN as u32;
        seg.clean = false;
        seg.v1 = false;
        self.next_seq += 1;
        self.head = next;
        self.dirty = true;
        Ok(())
    }

    /// Erases a segment between syncs (invariant 3): what made it dead is
    /// durable before the erase, and the erase is durable before anything
    /// is programmed into the segment again. The header block goes first
    /// and is synced on its own (D6): a power cut in the middle of the rest
    /// leaves a segment without a header (free, erased again before use),
    /// never a header in front of a half-erased body.
    pub(super) fn erase_segment(&mut self, i: usize) -> Result<(), StoreError> {
        self.sync()?;
        let base = self.seg_base(i);
        let block = (F::ERASE_SIZE as u32).min(self.seg_size);
        self.erase_range(base, base + block)?;
        self.sync()?;
        if block < self.seg_size {
            self.erase_range(base + block, base + self.seg_size)?;
            self.sync()?;
        }
        let seg = &mut self.segs[i];
        *seg = Segment {
            erase_count: seg.erase_count + 1,
            clean: true,
            ..Segment::default()
        };
        self.stats.erases += 1;
        Ok(())
    }

    /// True when a free segment already reads as erased (all 0xFF), so it
    /// need not be erased again (M2: after a restart every free segment
    /// used to be erased once more). Synced first if anything is pending,
    /// so the erased state the read saw is durable before a header goes in.
    fn reads_erased(&mut self, i: usize) -> Result<bool, StoreError> {
        let mut buf = vec![0u8; self.seg_size as usize];
        self.flash
            .read(self.seg_base(i), &mut buf)
            .map_err(StoreError::flash)?;
        if buf.iter().any(|b| *b != 0xFF) {
            return Ok(false);
        }
        self.sync()?;
        self.segs[i].clean = true;
        Ok(true)
    }

    /// The image's capacity as the header records it.
    pub(super) fn capacity_u32(&self) -> Result<u32, StoreError> {
        u32::try_from(self.flash.capacity())
            .map_err(|_| StoreError::Config("storage.capacity must be below 4 GiB".into()))
    }

    /// Ensures the head can take `len` more bytes. Free segments are kept
    /// at two or more at rest (invariant 4): a new head is opened from them
    /// while three or more are free; otherwise the oldest segment is
    /// reclaimed into a fresh head, which its live records always fit. Even a
    /// crash in the middle of a reclamation leaves one free segment for the
    /// head recovery opens.
    pub(super) fn make_room(&mut self, len: usize) -> Result<(), StoreError> {
        let mut reclaims = 0;
        while !self.head_fits(len) {
            let free = self.free_segments();
            if free >= 3 {
                self.open_new_head()?;
                continue;
            }
            // Reclaim into the head when the oldest segment's live data fits
            // there (no free segment used); otherwise into a fresh head.
            if reclaims == self.segs.len() {
                return Err(StoreError::Full);
            }
            let tail_live = self
                .oldest_sealed()
                .map_or(0, |t| self.segs[t].live_bytes as usize);
            if !self.head_fits(tail_live) && free > 0 {
                self.open_new_head()?;
            }
            self.reclaim_oldest()?;
            reclaims += 1;
        }
        Ok(())
    }

    /// Copies the live records of the oldest segment to the head, then erases it.
    pub(super) fn reclaim_oldest(&mut self) -> Result<(), StoreError> {
        let Some(tail) = self.oldest_sealed() else {
            return Err(StoreError::Full);
        };
        let live: Vec<Record> = self.live_records_in(tail)?;
        for rec in live {
            let body = self.body_of(&rec)?;
            let len = record::frame_len(body.len(), F::WRITE_SIZE);
            if !self.head_fits(len) {
                if self.free_segments() == 0 {
                    return Err(StoreError::Full);
                }
                self.open_new_head()?;
            }
            let loc = self.write_record_at_head(&body)?;
            self.stats.bytes_copied += len as u64;
            self.apply(rec, loc);
        }
        self.erase_segment(tail)?;
        self.stats.reclaims += 1;
        Ok(())
    }

    pub(super) fn oldest_sealed(&self) -> Option<usize> {
        self.segs
            .iter()
            .enumerate()
            .filter(|(i, s)| s.seq.is_some() && *i != self.head)
            .min_by_key(|(_, s)| s.seq)
            .map(|(i, _)| i)
    }

    /// The records of segment `i` that are still live, ready to rewrite.
    pub(super) fn live_records_in(&mut self, i: usize) -> Result<Vec<Record>, StoreError> {
        let seg = i as u32;
        let mut out = Vec::new();
        // Cloned, not taken: if the reclaim fails half way, the next one
        // still knows which messages live here (D7). Copied ones now point
        // at the head and are skipped by the filter below.
        let ids = self.segs[i].ids.clone();
        for id in ids {
            let Some(entry) = self.messages.get(&id).filter(|e| e.loc.seg == seg) else {
                continue;
            };
            let (loc, dests) = (entry.loc, entry.dests.clone());
            let mut m = self.read_message(loc, id)?;
            m.destinations = dests
                .iter()
                .map(|d| self.dest_names[*d as usize].clone())
                .collect();
            out.push(Record::Message(m));
        }
        let keyed: Vec<Loc> = self
            .retained
            .values()
            .chain(self.sessions.values())
            .chain(self.qos2.values())
            .copied()
            .chain(self.inflight_locs())
            .filter(|l| l.seg == seg)
            .collect();
        for loc in keyed {
            out.push(self.read_record(loc)?);
        }
        Ok(out)
    }

    /// Erases the oldest segments while nothing in them is live (in ring
    /// order only: invariant 2).
    pub(super) fn erase_dead_tails(&mut self) -> Result<(), StoreError> {
        while let Some(tail) = self.oldest_sealed() {
            if self.segs[tail].live_bytes > 0 {
                break;
            }
            self.erase_segment(tail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::super::flash::{RamFlash, BLOCK};
    use super::*;

    fn filled() -> Store<RamFlash> {
        let (mut store, _) =
            Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
        for i in 0..60u32 {
            let m = StoredMessage {
                topic: "t".into(),
                payload: bytes::Bytes::from(i.to_le_bytes().repeat(50)),
                ..Default::default()
            };
            store.append(m, &["d".into()]).unwrap();
        }
        store.commit().unwrap();
        store
    }

    /// D7: a reclaim that fails half way keeps the list of the messages
    /// living in the tail (it used to be taken, so a later reclaim would
    /// have erased them).
    #[test]
    fn d7_a_failed_reclaim_keeps_the_tails_ids() {
        let mut store = filled();
        let tail = store.oldest_sealed().unwrap();
        let before = store.segs[tail].ids.clone();
        assert!(!before.is_empty());
        store.flash_mut().power_fail_after(Some(3));
        assert!(store.reclaim_oldest().is_err());
        assert_eq!(store.segs[tail].ids, before);
    }

    /// D7: a read checks that the record at a location is the message the
    /// index expects.
    #[test]
    fn d7_reads_check_the_message_id() {
        let mut store = filled();
        let (&id, entry) = store.messages.iter().next().unwrap();
        let loc = entry.loc;
        assert_eq!(store.read_message(loc, id).unwrap().id, id);
        assert!(matches!(
            store.read_message(loc, id + 1000),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

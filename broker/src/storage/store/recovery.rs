//! Recovery: rebuilding the RAM index from what is on flash.
//!
//! Invariants: see the list in `store/mod.rs`.

use super::*;

impl<F: Durable> Store<F> {
    pub(super) fn recover(&mut self) -> Result<RecoveryReport, StoreError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let mut order = Vec::new();
        for i in 0..self.segs.len() {
            let mut raw = [0u8; HEADER_LEN];
            self.flash
                .read(self.seg_base(i), &mut raw)
                .map_err(StoreError::flash)?;
            match Header::decode(&raw) {
                Some(h) => {
                    self.segs[i].seq = Some(h.seq);
                    self.segs[i].erase_count = h.erase_count;
                    order.push((h.seq, i));
                }
                // No valid header: free, but it may hold unsynced writes
                // whose header was lost, so it is erased before reuse.
                None => self.segs[i].clean = false,
            }
        }
        order.sort_unstable();
        let mut buf = vec![0u8; self.seg_size as usize];
        let mut newest_clean = false;
        for &(seq, i) in &order {
            self.flash
                .read(self.seg_base(i), &mut buf)
                .map_err(StoreError::flash)?;
            let (end, records, torn) = self.replay_segment(i as u32, &buf);
            self.segs[i].write_off = end;
            newest_clean = !torn && buf[end as usize..].iter().all(|b| *b == 0xFF);
            report.records += records;
            report.torn_segments += usize::from(torn);
            self.next_seq = self.next_seq.max(seq + 1);
        }
        report.segments = order.len();
        // Recount live bytes from the index now that every record is applied.
        for seg in &mut self.segs {
            seg.live_bytes = 0;
        }
        let locs: Vec<Loc> = self
            .messages
            .values()
            .map(|m| m.loc)
            .chain(self.retained.values().copied())
            .chain(self.sessions.values().copied())
            .chain(self.qos2.values().copied())
            .collect();
        for loc in locs {
            self.segs[loc.seg as usize].live_bytes += loc.len;
        }
        self.next_id = self
            .messages
            .keys()
            .max()
            .map_or(self.next_id, |m| (m + 1).max(self.next_id));
        self.stats.recovered_next_id = self.next_id;
        // Erase superseded segments first (a lost erase brings one back).
        let newest = order.last().map(|&(_, i)| i);
        self.head = usize::MAX;
        self.erase_dead_tails()?;
        // Keep appending to the newest segment only if it ends cleanly: never
        // write behind a torn record (invariant 1).
        match newest {
            Some(i) if newest_clean && self.segs[i].seq.is_some() => self.head = i,
            Some(i) => {
                self.head = i;
                self.open_new_head()?;
            }
            None => {
                self.head = self.segs.len() - 1;
                self.open_new_head()?;
            }
        }
        // Opening a fresh head may have used a reserved segment: reclaim old
        // segments into it until two are free again (invariant 4).
        let mut reclaims = 0;
        while self.free_segments() < 2 && reclaims < self.segs.len() {
            let Some(tail) = self.oldest_sealed() else {
                break;
            };
            if !self.head_fits(self.segs[tail].live_bytes as usize) {
                break;
            }
            self.reclaim_oldest()?;
            reclaims += 1;
        }
        report.messages = self.messages.len();
        report.retained = self.retained.len();
        report.sessions = self.sessions.len();
        report.millis = started.elapsed().as_millis() as u64;
        self.stats.recovery_millis = report.millis;
        Ok(report)
    }

    /// Applies the valid records of one segment; returns (end offset, records, torn).
    pub(super) fn replay_segment(&mut self, seg: u32, buf: &[u8]) -> (u32, u64, bool) {
        let word = F::WRITE_SIZE;
        let mut off = HEADER_LEN;
        let mut count = 0;
        while off + FRAME_HEADER <= buf.len() {
            let len = u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
            if len == ERASED_LEN {
                return (off as u32, count, false);
            }
            let crc = u32::from_le_bytes([buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]]);
            let body_end = off + FRAME_HEADER + len as usize;
            if body_end > buf.len()
                || record::frame_crc(len, &buf[off + FRAME_HEADER..body_end]) != crc
            {
                return (off as u32, count, true);
            }
            let Some(rec) = record::decode_body(&buf[off + FRAME_HEADER..body_end]) else {
                return (off as u32, count, true);
            };
            let frame = record::frame_len(len as usize, word) as u32;
            self.apply(
                rec,
                Loc {
                    seg,
                    off: off as u32,
                    len: frame,
                },
            );
            count += 1;
            off += frame as usize;
        }
        (off as u32, count, false)
    }
}

//! Recovery: rebuilding the RAM index from what is on flash.
//!
//! Invariants: see the list in `store/mod.rs`.

use super::super::segment::{self, Decoded};
use super::*;

/// How the newest segment ends after replay.
#[derive(Clone, Copy)]
struct NewestEnd {
    /// No torn or damaged data, and erased space after the last record.
    clean: bool,
    /// Where its used space ends (past any torn data).
    used: u32,
}

impl<F: Durable> Store<F> {
    pub(super) fn recover(&mut self) -> Result<RecoveryReport, StoreError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let order = self.scan_headers(&mut report)?;
        let newest_end = self.replay_in_order(&order, &mut report)?;
        report.segments = order.len();
        self.stats.damaged += report.damaged as u64;
        self.recount_live();
        let newest = order.last().map(|&(_, i)| i);
        self.reopen_head(newest, newest_end)?;
        report.messages = self.messages.len();
        report.retained = self.retained.len();
        report.sessions = self.sessions.len();
        report.millis = started.elapsed().as_millis() as u64;
        self.stats.recovery_millis = report.millis;
        Ok(report)
    }

    /// Reads every segment header: records each segment's sequence number
    /// and erase count, refuses another geometry or a newer format, and
    /// returns the written segments as `(seq, index)` in sequence order.
    fn scan_headers(
        &mut self,
        report: &mut RecoveryReport,
    ) -> Result<Vec<(u64, usize)>, StoreError> {
        let mut order = Vec::new();
        let capacity = self.capacity_u32()?;
        for i in 0..self.segs.len() {
            let mut raw = [0u8; HEADER_LEN];
            self.flash
                .read(self.seg_base(i), &mut raw)
                .map_err(StoreError::flash)?;
            match segment::decode(&raw) {
                Decoded::Current(h) => {
                    self.check_geometry(i, &h, capacity)?;
                    self.segs[i].seq = Some(h.seq);
                    self.segs[i].erase_count = h.erase_count;
                    order.push((h.seq, i));
                }
                Decoded::V1 { seq, erase_count } => {
                    self.segs[i].seq = Some(seq);
                    self.segs[i].erase_count = erase_count;
                    self.segs[i].v1 = true;
                    order.push((seq, i));
                }
                Decoded::Newer(v) => {
                    return Err(StoreError::Config(format!(
                        "segment {i} (offset {}) of the image is in on-flash format version {v}, \
                         newer than this edgemq's {}: refusing to open it (a downgrade would \
                         lose data); run a newer edgemq or move the image away",
                        self.seg_base(i),
                        segment::FORMAT_VERSION
                    )));
                }
                // Free, but it may hold unsynced writes whose header was
                // lost, so it is erased before reuse.
                Decoded::Erased => self.segs[i].clean = false,
                Decoded::Damaged => {
                    // Never dropped silently (D8): a torn header program is
                    // normal after a power cut, anything else is damage.
                    tracing::warn!(
                        segment = i,
                        offset = self.seg_base(i),
                        "segment header is damaged (neither erased nor valid): its records \
                         cannot be trusted; the segment will be erased before reuse"
                    );
                    report.damaged += 1;
                    self.segs[i].clean = false;
                }
            }
        }
        order.sort_unstable();
        Ok(order)
    }

    /// Replays the records of the segments in sequence order into the RAM
    /// index; counts damage in sealed segments and a torn newest segment.
    fn replay_in_order(
        &mut self,
        order: &[(u64, usize)],
        report: &mut RecoveryReport,
    ) -> Result<NewestEnd, StoreError> {
        let mut buf = vec![0u8; self.seg_size as usize];
        let mut newest_clean = false;
        // Where the newest segment's used space ends (past any torn data).
        let mut newest_used = 0u32;
        let last = order.len().saturating_sub(1);
        for (k, &(seq, i)) in order.iter().enumerate() {
            self.flash
                .read(self.seg_base(i), &mut buf)
                .map_err(StoreError::flash)?;
            let r = self.replay_segment(i, &buf);
            self.segs[i].write_off = r.end;
            newest_clean = r.skipped.is_empty() && buf[r.end as usize..].iter().all(|b| *b == 0xFF);
            report.records += r.records;
            let word = F::WRITE_SIZE;
            newest_used = buf
                .iter()
                .rposition(|b| *b != 0xFF)
                .map_or(r.end, |p| ((p + 1).div_ceil(word) * word) as u32)
                .max(r.end);
            let torn = !newest_clean;
            if k == last {
                report.torn_segments += usize::from(torn);
            } else {
                // A sealed segment: every bad range in it is damage.
                for &(off, len) in &r.skipped {
                    tracing::error!(
                        segment = i,
                        offset = off,
                        bytes = len,
                        "damaged data in a sealed segment skipped (resynchronised on the next valid record)"
                    );
                }
                report.damaged += r.skipped.len();
            }
            self.next_seq = self.next_seq.max(seq + 1);
        }
        Ok(NewestEnd {
            clean: newest_clean,
            used: newest_used,
        })
    }

    /// Recounts the live bytes of every segment and the next message id
    /// from the index, now that every record is applied.
    fn recount_live(&mut self) {
        self.purge_stale_inflight();
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
            .chain(self.inflight_locs())
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
    }

    /// Picks the head to append to after recovery and restores two free
    /// segments (invariants 1 and 4).
    fn reopen_head(&mut self, newest: Option<usize>, end: NewestEnd) -> Result<(), StoreError> {
        let (newest_clean, newest_used) = (end.clean, end.used);
        // Erase superseded segments first (a lost erase brings one back).
        self.head = usize::MAX;
        self.erase_dead_tails()?;
        // Keep appending to the newest segment only if it ends cleanly: never
        // write behind a torn record (invariant 1).
        match newest {
            Some(i) if newest_clean && self.segs[i].seq.is_some() && !self.segs[i].v1 => {
                self.head = i
            }
            Some(i) => {
                self.head = i;
                self.open_head_for_recovery(i, newest_used)?;
            }
            None => {
                self.head = self.segs.len() - 1;
                self.open_new_head()?;
            }
        }
        // Opening a fresh head may have used a reserved segment: reclaim old
        // segments until two are free again (invariant 4), opening fresh
        // heads as needed (C2: the old loop stopped when the tail did not
        // fit in the current head and left one free segment).
        let mut reclaims = 0;
        while self.free_segments() < 2 && reclaims < self.segs.len() {
            if self.oldest_sealed().is_none() {
                break;
            }
            self.reclaim_oldest()?;
            reclaims += 1;
        }
        Ok(())
    }

    /// Refuses an image written with another geometry (D4): reading it with
    /// this one would drop or erase data.
    fn check_geometry(&self, i: usize, h: &Header, capacity: u32) -> Result<(), StoreError> {
        if h.segment_size != self.seg_size {
            return Err(StoreError::Config(format!(
                "storage.segment_size = {} but the image was written with segment_size = {} \
                 (segment {i}); set segment_size = {} again, or move the image away to start empty",
                self.seg_size, h.segment_size, h.segment_size
            )));
        }
        if h.capacity != capacity {
            return Err(StoreError::Config(format!(
                "storage.capacity = {capacity} but the image was written with capacity = {} \
                 (segment {i}); set capacity = {} again, or move the image away to start empty",
                h.capacity, h.capacity
            )));
        }
        Ok(())
    }

    /// Makes a head when the newest segment `i` does not end cleanly. A
    /// fresh segment is used while two or more are free. With fewer (a
    /// power cut during a compaction, or two in a row, C2), appending
    /// continues in segment `i` after its last used byte instead: recovery
    /// resynchronises past the torn range (frames carry the seq, so nothing
    /// stale can verify), and no free segment is spent on a torn tail.
    fn open_head_for_recovery(&mut self, i: usize, used: u32) -> Result<(), StoreError> {
        let resumable = self.segs[i].seq.is_some() && !self.segs[i].v1;
        if self.free_segments() >= 2 || !resumable {
            return self.open_new_head();
        }
        let room = self.seg_size.saturating_sub(used) as usize;
        if room >= FRAME_HEADER + 2 * F::WRITE_SIZE {
            tracing::warn!(
                segment = i,
                offset = used,
                "few free segments after a power cut: appending after the torn tail of the newest segment"
            );
            self.segs[i].write_off = used;
            return Ok(());
        }
        self.open_new_head()
    }

    /// Applies the valid records of one segment. Past a bad frame it
    /// resynchronises on the next frame whose CRC (bound to this segment's
    /// seq) verifies, so one bad record does not drop the rest (D8).
    pub(super) fn replay_segment(&mut self, i: usize, buf: &[u8]) -> Replay {
        let word = F::WRITE_SIZE;
        let seg = i as u32;
        let crc_seq = match (self.segs[i].v1, self.segs[i].seq) {
            (false, Some(seq)) => Some(seq),
            _ => None,
        };
        let mut off = self.data_start(i);
        let mut out = Replay {
            end: off as u32,
            records: 0,
            skipped: Vec::new(),
        };
        loop {
            match parse_frame(buf, off, word, crc_seq) {
                Parsed::Record(rec, frame) => {
                    self.apply(
                        *rec,
                        Loc {
                            seg,
                            off: off as u32,
                            len: frame as u32,
                        },
                    );
                    out.records += 1;
                    off += frame;
                    out.end = off as u32;
                }
                Parsed::End if buf[off.min(buf.len())..].iter().all(|b| *b == 0xFF) => return out,
                // A hole or a bad frame. Version 1 frames do not carry the
                // seq, so a stale frame could verify: no resync there.
                _ if crc_seq.is_none() => {
                    out.skipped.push((off as u32, (buf.len() - off) as u32));
                    return out;
                }
                _ => {
                    let bad = off;
                    let next = (off + word..buf.len().saturating_sub(FRAME_HEADER - 1))
                        .step_by(word)
                        .find(|&o| {
                            matches!(parse_frame(buf, o, word, crc_seq), Parsed::Record(..))
                        });
                    match next {
                        Some(o) => {
                            out.skipped.push((bad as u32, (o - bad) as u32));
                            off = o;
                        }
                        None => {
                            if buf[bad..].iter().any(|b| *b != 0xFF) {
                                out.skipped.push((bad as u32, (buf.len() - bad) as u32));
                            }
                            return out;
                        }
                    }
                }
            }
        }
    }
}

/// What replaying one segment found.
pub(super) struct Replay {
    /// Offset after the last valid record (where appends would continue).
    pub end: u32,
    pub records: u64,
    /// Bad ranges skipped: (offset, bytes).
    pub skipped: Vec<(u32, u32)>,
}

/// What sits at one offset of a segment.
pub(super) enum Parsed {
    /// Erased flash, or no room left for a frame header: the end of data.
    End,
    /// A frame that is torn, corrupt or undecodable.
    Bad,
    /// A valid record and its frame length (padded).
    Record(Box<Record>, usize),
}

/// Parses the frame at `off` of `buf` (a whole segment). Every length read
/// from flash is checked before use: no overflow or out-of-range slice on
/// any byte pattern, on 32-bit targets too (C1).
pub(super) fn parse_frame(buf: &[u8], off: usize, word: usize, seq: Option<u64>) -> Parsed {
    let Some(head) = off
        .checked_add(FRAME_HEADER)
        .and_then(|end| buf.get(off..end))
    else {
        return Parsed::End;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len == ERASED_LEN {
        return Parsed::End;
    }
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let body_start = off + FRAME_HEADER;
    let Some(body) = usize::try_from(len)
        .ok()
        .and_then(|l| body_start.checked_add(l))
        .and_then(|end| buf.get(body_start..end))
    else {
        return Parsed::Bad;
    };
    let expected = match seq {
        Some(seq) => record::frame_crc_seq(seq, len, body),
        None => record::frame_crc(len, body),
    };
    if expected != crc {
        return Parsed::Bad;
    }
    match record::decode_body(body) {
        Some(rec) => Parsed::Record(Box::new(rec), record::frame_len(body.len(), word)),
        None => Parsed::Bad,
    }
}

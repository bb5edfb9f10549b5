//! The log-structured store: segments in a ring, a RAM index of what is
//! live, recovery, and reclamation.
//!
//! Invariants (tested by `storage::tests` with random power cuts):
//! 1. Segments are written in sequence-number order and only at their end.
//!    Recovery keeps appending to the newest segment only when its data ends
//!    cleanly in erased flash; otherwise it opens a fresh segment, so nothing
//!    is ever appended behind a torn record.
//! 2. Segments are reclaimed (erased) strictly oldest first. An ack, a
//!    retained clear or a session removal is therefore never needed once its
//!    segment is the oldest: whatever it cancels is in the same or an older,
//!    already erased, segment.
//! 3. Every erase sits between two syncs: live records copied out of the
//!    oldest segment are durable before it is erased, and the erase is
//!    durable before a new header is programmed into the segment, so stale
//!    records can never reappear under a new sequence number. Recovery
//!    applies segments in sequence order and a later record for a key wins.
//! 4. `live_bytes <= budget` and two segments stay free at rest, so
//!    reclamation always has a fresh segment to copy into, even right after
//!    a crash in the middle of a reclamation.

mod inflight;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::flash::Durable;
use super::record::{self, Record, StoredMessage, StoredSession, ERASED_LEN, FRAME_HEADER};
use super::segment::{Header, HEADER_LEN};
use super::{Overflow, StoreError, StoreStats};

/// Where a record lives on flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    seg: u32,
    off: u32,
    /// Frame length (header + body + padding).
    len: u32,
}

#[derive(Debug, Default, Clone)]
struct Segment {
    /// Sequence number; `None` while the segment is free.
    seq: Option<u64>,
    erase_count: u32,
    write_off: u32,
    /// Bytes of live records (messages owed somewhere, current retained and sessions).
    live_bytes: u32,
    /// Message ids written here (to find live ones when reclaiming).
    ids: Vec<u64>,
    /// False when the segment may hold data and must be erased before use.
    clean: bool,
}

struct MsgEntry {
    loc: Loc,
    /// Interned destinations still owed the message.
    dests: Vec<u32>,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub torn_segments: usize,
    pub messages: usize,
    pub retained: usize,
    pub sessions: usize,
    pub millis: u64,
}

/// The store over any flash with NOR semantics.
pub struct Store<F: Durable> {
    flash: F,
    seg_size: u32,
    segs: Vec<Segment>,
    head: usize,
    next_seq: u64,
    next_id: u64,
    messages: HashMap<u64, MsgEntry>,
    dest_names: Vec<String>,
    dest_ids: HashMap<String, u32>,
    queues: HashMap<u32, BTreeSet<u64>>,
    retained: HashMap<String, Loc>,
    sessions: HashMap<String, Loc>,
    /// Pending incoming QoS 2 packet ids by client.
    qos2: HashMap<(String, u16), Loc>,
    /// Outgoing packet ids by (destination, message id) (see `inflight`).
    inflight: HashMap<(u32, u64), inflight::InflightEntry>,
    overflow: Overflow,
    dirty: bool,
    stats: StoreStats,
}

impl<F: Durable> Store<F> {
    /// Opens a store on `flash`, recovering whatever a previous run left.
    pub fn open(
        flash: F,
        segment_size: usize,
        overflow: Overflow,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let block = F::ERASE_SIZE;
        let seg_size = (segment_size.max(block) / block * block) as u32;
        let nsegs = flash.capacity() / seg_size as usize;
        if nsegs < 5 {
            return Err(StoreError::Config(format!(
                "capacity {} holds {nsegs} segments of {seg_size} bytes; at least 5 are needed",
                flash.capacity()
            )));
        }
        let mut store = Store {
            flash,
            seg_size,
            segs: vec![Segment::default(); nsegs],
            head: 0,
            next_seq: 1,
            next_id: 1,
            messages: HashMap::new(),
            dest_names: Vec::new(),
            dest_ids: HashMap::new(),
            queues: HashMap::new(),
            retained: HashMap::new(),
            sessions: HashMap::new(),
            qos2: HashMap::new(),
            inflight: HashMap::new(),
            overflow,
            dirty: false,
            stats: StoreStats::default(),
        };
        let report = store.recover()?;
        store.stats.segments = nsegs as u64;
        store.stats.capacity_bytes = (nsegs as u64) * u64::from(seg_size);
        Ok((store, report))
    }

    /// The flash, for fault injection (tests turn failures on with it).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back (tests use it to cut power and reopen).
    pub fn into_flash(self) -> F {
        self.flash
    }

    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats.clone();
        s.live_bytes = self.live_bytes();
        s.queued_messages = self.messages.len() as u64;
        s.erase_counts = self.segs.iter().map(|g| g.erase_count).collect();
        s
    }

    // ---- recovery ----------------------------------------------------

    fn recover(&mut self) -> Result<RecoveryReport, StoreError> {
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
        self.purge_stale_inflight();
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
    fn replay_segment(&mut self, seg: u32, buf: &[u8]) -> (u32, u64, bool) {
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

    /// Applies one record to the index (recovery and live writes share this).
    fn apply(&mut self, rec: Record, loc: Loc) {
        match rec {
            Record::Message(m) => {
                let dests: Vec<u32> = m.destinations.iter().map(|d| self.intern(d)).collect();
                if let Some(old) = self.messages.remove(&m.id) {
                    self.unlive(old.loc);
                    for d in old.dests {
                        self.queue_remove(d, m.id);
                    }
                }
                for &d in &dests {
                    self.queues.entry(d).or_default().insert(m.id);
                }
                self.segs[loc.seg as usize].ids.push(m.id);
                if !dests.is_empty() {
                    self.segs[loc.seg as usize].live_bytes += loc.len;
                    self.messages.insert(m.id, MsgEntry { loc, dests });
                }
            }
            Record::Ack { id, destination } => {
                if let Some(&d) = self.dest_ids.get(&destination) {
                    self.drop_destination(id, d);
                }
            }
            Record::RetainedSet(m) => {
                self.segs[loc.seg as usize].live_bytes += loc.len;
                if let Some(old) = self.retained.insert(m.topic, loc) {
                    self.unlive(old);
                }
            }
            Record::RetainedClear { topic } => {
                if let Some(old) = self.retained.remove(&topic) {
                    self.unlive(old);
                }
            }
            Record::SessionSave(s) => {
                self.segs[loc.seg as usize].live_bytes += loc.len;
                if let Some(old) = self.sessions.insert(s.client_id, loc) {
                    self.unlive(old);
                }
            }
            Record::SessionRemove { client_id } => {
                if let Some(old) = self.sessions.remove(&client_id) {
                    self.unlive(old);
                }
                let gone: Vec<(String, u16)> = self
                    .qos2
                    .keys()
                    .filter(|(c, _)| *c == client_id)
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(old) = self.qos2.remove(&key) {
                        self.unlive(old);
                    }
                }
            }
            Record::Qos2Incoming {
                client_id,
                pkid,
                pending,
            } => {
                if pending {
                    self.segs[loc.seg as usize].live_bytes += loc.len;
                }
                let old = match pending {
                    true => self.qos2.insert((client_id, pkid), loc),
                    false => self.qos2.remove(&(client_id, pkid)),
                };
                if let Some(old) = old {
                    self.unlive(old);
                }
            }
            Record::Inflight {
                destination,
                id,
                pkid,
                stage,
            } => self.apply_inflight(&destination, id, pkid, stage, loc),
            Record::DestinationClear { destination } => {
                if let Some(&d) = self.dest_ids.get(&destination) {
                    let ids: Vec<u64> = self
                        .queues
                        .get(&d)
                        .map(|q| q.iter().copied().collect())
                        .unwrap_or_default();
                    for id in ids {
                        self.drop_destination(id, d);
                    }
                }
            }
        }
    }

    fn intern(&mut self, dest: &str) -> u32 {
        if let Some(&id) = self.dest_ids.get(dest) {
            return id;
        }
        let id = self.dest_names.len() as u32;
        self.dest_names.push(dest.to_string());
        self.dest_ids.insert(dest.to_string(), id);
        id
    }

    fn queue_remove(&mut self, dest: u32, id: u64) {
        if let Some(q) = self.queues.get_mut(&dest) {
            q.remove(&id);
            if q.is_empty() {
                self.queues.remove(&dest);
            }
        }
    }

    /// Removes one destination of a message; frees the message when none remain.
    fn drop_destination(&mut self, id: u64, dest: u32) -> bool {
        self.drop_inflight(dest, id);
        let Some(entry) = self.messages.get_mut(&id) else {
            return false;
        };
        let Some(pos) = entry.dests.iter().position(|d| *d == dest) else {
            return false;
        };
        entry.dests.swap_remove(pos);
        let emptied = entry.dests.is_empty();
        let loc = entry.loc;
        if emptied {
            self.messages.remove(&id);
            self.unlive(loc);
        }
        self.queue_remove(dest, id);
        true
    }

    fn unlive(&mut self, loc: Loc) {
        let seg = &mut self.segs[loc.seg as usize];
        seg.live_bytes = seg.live_bytes.saturating_sub(loc.len);
    }

    // ---- writing -----------------------------------------------------

    fn seg_base(&self, i: usize) -> u32 {
        i as u32 * self.seg_size
    }

    fn live_bytes(&self) -> u64 {
        self.segs.iter().map(|s| u64::from(s.live_bytes)).sum()
    }

    /// Bytes we may promise: all segments but three (two kept free, one
    /// head), less their headers.
    fn budget(&self) -> u64 {
        (self.segs.len() as u64 - 3) * u64::from(self.seg_size - HEADER_LEN as u32)
    }

    fn free_segments(&self) -> usize {
        self.segs.iter().filter(|s| s.seq.is_none()).count()
    }

    /// Opens the next free segment in ring order as the head.
    fn open_new_head(&mut self) -> Result<(), StoreError> {
        let n = self.segs.len();
        let next = (1..=n)
            .map(|k| (self.head + k) % n)
            .find(|&i| self.segs[i].seq.is_none())
            .ok_or(StoreError::Full)?;
        if !self.segs[next].clean {
            self.erase_segment(next)?;
        }
        let header = Header {
            seq: self.next_seq,
            erase_count: self.segs[next].erase_count,
        };
        self.flash
            .write(self.seg_base(next), &header.encode())
            .map_err(StoreError::flash)?;
        self.stats.bytes_written += HEADER_LEN as u64;
        let seg = &mut self.segs[next];
        seg.seq = Some(self.next_seq);
        seg.write_off = HEADER_LEN as u32;
        seg.clean = false;
        self.next_seq += 1;
        self.head = next;
        self.dirty = true;
        Ok(())
    }

    /// Erases a segment between two syncs (invariant 3): what made it dead
    /// is durable before the erase, and the erase is durable before anything
    /// is programmed into the segment again.
    fn erase_segment(&mut self, i: usize) -> Result<(), StoreError> {
        self.sync()?;
        let base = self.seg_base(i);
        self.flash
            .erase(base, base + self.seg_size)
            .map_err(StoreError::flash)?;
        self.dirty = true;
        self.sync()?;
        let seg = &mut self.segs[i];
        *seg = Segment {
            erase_count: seg.erase_count + 1,
            clean: true,
            ..Segment::default()
        };
        self.stats.erases += 1;
        self.dirty = true;
        Ok(())
    }

    /// Writes a record at the head, making room first. Returns its location.
    fn write_record(&mut self, rec: &Record) -> Result<Loc, StoreError> {
        let frame = record::encode_frame(rec, F::WRITE_SIZE)
            .map_err(|e| StoreError::Record(e.to_string()))?;
        if frame.len() > self.seg_size as usize - HEADER_LEN {
            return Err(StoreError::TooLarge(frame.len()));
        }
        self.make_room(frame.len())?;
        self.write_record_at_head(&frame)
    }

    fn head_fits(&self, len: usize) -> bool {
        self.segs[self.head].write_off as usize + len <= self.seg_size as usize
    }

    /// Ensures the head can take `len` more bytes. Free segments are kept
    /// at two or more at rest (invariant 4): a new head is opened from them
    /// while three or more are free; otherwise the oldest segment is
    /// reclaimed into a fresh head, which its live records always fit. Even a
    /// crash in the middle of a reclamation leaves one free segment for the
    /// head recovery opens.
    fn make_room(&mut self, len: usize) -> Result<(), StoreError> {
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
    fn reclaim_oldest(&mut self) -> Result<(), StoreError> {
        let Some(tail) = self.oldest_sealed() else {
            return Err(StoreError::Full);
        };
        let live: Vec<Record> = self.live_records_in(tail)?;
        for rec in live {
            let frame = record::encode_frame(&rec, F::WRITE_SIZE)
                .map_err(|e| StoreError::Record(e.to_string()))?;
            if !self.head_fits(frame.len()) {
                if self.free_segments() == 0 {
                    return Err(StoreError::Full);
                }
                self.open_new_head()?;
            }
            let loc = self.write_record_at_head(&frame)?;
            self.stats.bytes_copied += frame.len() as u64;
            self.apply(rec, loc);
        }
        self.erase_segment(tail)?;
        self.stats.reclaims += 1;
        Ok(())
    }

    fn write_record_at_head(&mut self, frame: &[u8]) -> Result<Loc, StoreError> {
        let seg = &mut self.segs[self.head];
        let loc = Loc {
            seg: self.head as u32,
            off: seg.write_off,
            len: frame.len() as u32,
        };
        seg.write_off += frame.len() as u32;
        let base = self.seg_base(self.head);
        self.flash
            .write(base + loc.off, frame)
            .map_err(StoreError::flash)?;
        self.stats.bytes_written += frame.len() as u64;
        self.dirty = true;
        Ok(loc)
    }

    fn oldest_sealed(&self) -> Option<usize> {
        self.segs
            .iter()
            .enumerate()
            .filter(|(i, s)| s.seq.is_some() && *i != self.head)
            .min_by_key(|(_, s)| s.seq)
            .map(|(i, _)| i)
    }

    /// The records of segment `i` that are still live, ready to rewrite.
    fn live_records_in(&mut self, i: usize) -> Result<Vec<Record>, StoreError> {
        let seg = i as u32;
        let mut out = Vec::new();
        let ids = std::mem::take(&mut self.segs[i].ids);
        for id in ids {
            let Some(entry) = self.messages.get(&id).filter(|e| e.loc.seg == seg) else {
                continue;
            };
            let (loc, dests) = (entry.loc, entry.dests.clone());
            if let Record::Message(mut m) = self.read_record(loc)? {
                m.destinations = dests
                    .iter()
                    .map(|d| self.dest_names[*d as usize].clone())
                    .collect();
                out.push(Record::Message(m));
            }
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

    fn read_record(&mut self, loc: Loc) -> Result<Record, StoreError> {
        let mut frame = vec![0u8; loc.len as usize];
        self.flash
            .read(self.seg_base(loc.seg as usize) + loc.off, &mut frame)
            .map_err(StoreError::flash)?;
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let body = frame
            .get(FRAME_HEADER..FRAME_HEADER + len)
            .ok_or(StoreError::Corrupt {
                seg: loc.seg,
                off: loc.off,
            })?;
        if record::frame_crc(len as u32, body) != crc {
            return Err(StoreError::Corrupt {
                seg: loc.seg,
                off: loc.off,
            });
        }
        record::decode_body(body).ok_or(StoreError::Corrupt {
            seg: loc.seg,
            off: loc.off,
        })
    }

    /// Syncs the flash if anything was written since the last sync.
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            let started = std::time::Instant::now();
            self.flash.sync().map_err(StoreError::flash)?;
            self.stats.sync_latency.record(started.elapsed());
            self.dirty = false;
            self.stats.syncs += 1;
        }
        Ok(())
    }

    /// The durability point: everything written so far survives a power cut
    /// once this returns Ok. Dead segments at the old end are erased too.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        self.erase_dead_tails()?;
        self.sync()
    }

    /// Erases the oldest segments while nothing in them is live (in ring
    /// order only: invariant 2).
    fn erase_dead_tails(&mut self) -> Result<(), StoreError> {
        while let Some(tail) = self.oldest_sealed() {
            if self.segs[tail].live_bytes > 0 {
                break;
            }
            self.erase_segment(tail)?;
        }
        Ok(())
    }

    // ---- API ---------------------------------------------------------

    /// Appends a message owed to `destinations`; returns its id. The caller
    /// may choose the id (`msg.id != 0`: the broker's message id, increasing
    /// in publish order); 0 lets the store assign the next one. Not durable
    /// until the next `commit()`.
    pub fn append(
        &mut self,
        mut msg: StoredMessage,
        destinations: &[String],
    ) -> Result<u64, StoreError> {
        if destinations.is_empty() {
            return Err(StoreError::NoDestination);
        }
        if msg.id == 0 {
            msg.id = self.next_id;
        }
        let id = msg.id;
        msg.destinations = destinations.to_vec();
        let rec = Record::Message(msg);
        let need = record::encode_frame(&rec, F::WRITE_SIZE)
            .map_err(|e| StoreError::Record(e.to_string()))?
            .len() as u64;
        self.ensure_budget(need, destinations)?;
        let loc = self.write_record(&rec)?;
        self.next_id = self.next_id.max(id + 1);
        if let Record::Message(m) = &rec {
            self.stats.payload_bytes += m.payload.len() as u64;
        }
        self.stats.appended += 1;
        self.apply(rec, loc);
        Ok(id)
    }

    /// The next id the store would assign; above every id it holds.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Forgets every message owed to `destination` (one record).
    pub fn clear_destination(&mut self, destination: &str) -> Result<(), StoreError> {
        if self.queue_len(destination) == 0 {
            return Ok(());
        }
        let rec = Record::DestinationClear {
            destination: destination.to_string(),
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Applies the overflow policy when `need` more live bytes exceed the budget.
    fn ensure_budget(&mut self, need: u64, destinations: &[String]) -> Result<(), StoreError> {
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

    /// Records that `destination` no longer needs message `id`. Acks may come
    /// in any order; acking an unknown pair is a no-op returning false.
    pub fn ack(&mut self, id: u64, destination: &str) -> Result<bool, StoreError> {
        let Some(&d) = self.dest_ids.get(destination) else {
            return Ok(false);
        };
        if !self.messages.get(&id).is_some_and(|e| e.dests.contains(&d)) {
            return Ok(false);
        }
        let rec = Record::Ack {
            id,
            destination: destination.to_string(),
        };
        self.write_record(&rec)?;
        Ok(self.drop_destination(id, d))
    }

    /// Up to `max` messages owed to `destination` with ids above `after`, in order.
    pub fn read(
        &mut self,
        destination: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(&d) = self.dest_ids.get(destination) else {
            return Ok(Vec::new());
        };
        let start = after.map_or(0, |a| a + 1);
        let locs: Vec<Loc> = self
            .queues
            .get(&d)
            .map(|q| {
                q.range(start..)
                    .take(max)
                    .filter_map(|id| self.messages.get(id).map(|e| e.loc))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            if let Record::Message(m) = self.read_record(loc)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Number of messages owed to `destination`.
    pub fn queue_len(&self, destination: &str) -> usize {
        self.dest_ids
            .get(destination)
            .and_then(|d| self.queues.get(d))
            .map_or(0, BTreeSet::len)
    }

    /// Destinations that are owed at least one message.
    pub fn destinations(&self) -> Vec<String> {
        self.queues
            .keys()
            .map(|d| self.dest_names[*d as usize].clone())
            .collect()
    }

    /// Sets (or replaces) the retained message of its topic.
    pub fn set_retained(&mut self, mut msg: StoredMessage) -> Result<(), StoreError> {
        msg.destinations.clear();
        let rec = Record::RetainedSet(msg);
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Clears the retained message of `topic` (no-op when there is none).
    pub fn clear_retained(&mut self, topic: &str) -> Result<(), StoreError> {
        if !self.retained.contains_key(topic) {
            return Ok(());
        }
        let rec = Record::RetainedClear {
            topic: topic.to_string(),
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Every retained message.
    pub fn retained(&mut self) -> Result<Vec<StoredMessage>, StoreError> {
        let locs: Vec<Loc> = self.retained.values().copied().collect();
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            if let Record::RetainedSet(m) = self.read_record(loc)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Saves (or replaces) a persistent session's state.
    pub fn save_session(&mut self, session: StoredSession) -> Result<(), StoreError> {
        let rec = Record::SessionSave(session);
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Forgets a session's state (its queued messages are acked separately).
    pub fn remove_session(&mut self, client_id: &str) -> Result<(), StoreError> {
        let has_qos2 = self.qos2.keys().any(|(c, _)| c == client_id);
        if !self.sessions.contains_key(client_id) && !has_qos2 {
            return Ok(());
        }
        let rec = Record::SessionRemove {
            client_id: client_id.to_string(),
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Records an incoming QoS 2 packet id as pending or released.
    pub fn set_qos2(
        &mut self,
        client_id: &str,
        pkid: u16,
        pending: bool,
    ) -> Result<(), StoreError> {
        let known = self.qos2.contains_key(&(client_id.to_string(), pkid));
        if known == pending {
            return Ok(());
        }
        let rec = Record::Qos2Incoming {
            client_id: client_id.to_string(),
            pkid,
            pending,
        };
        let loc = self.write_record(&rec)?;
        self.apply(rec, loc);
        Ok(())
    }

    /// Pending incoming QoS 2 packet ids by client.
    pub fn qos2_pending(&self) -> HashMap<String, Vec<u16>> {
        let mut out: HashMap<String, Vec<u16>> = HashMap::new();
        for (client, pkid) in self.qos2.keys() {
            out.entry(client.clone()).or_default().push(*pkid);
        }
        out
    }

    /// Every saved session.
    pub fn sessions(&mut self) -> Result<Vec<StoredSession>, StoreError> {
        let locs: Vec<Loc> = self.sessions.values().copied().collect();
        let mut out = Vec::with_capacity(locs.len());
        for loc in locs {
            if let Record::SessionSave(s) = self.read_record(loc)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

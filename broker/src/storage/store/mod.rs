//! The log-structured store: segments in a ring, a RAM index of what is
//! live, recovery, and reclamation.
//!
//! Invariants (tested by `storage::tests*` with random power cuts, power
//! failures inside an operation, failed syncs and bit flips):
//! 1. Segments are written in sequence-number order and only at their end.
//!    Recovery keeps appending to the newest segment when its data ends
//!    cleanly in erased flash. Otherwise it opens a fresh segment, or, with
//!    fewer than two free, continues after the last used byte of the newest
//!    one: replay resynchronises past the torn range (invariant 6).
//! 2. Segments are reclaimed (erased) strictly oldest first. An ack, a
//!    retained clear or a session removal is therefore never needed once its
//!    segment is the oldest: whatever it cancels is in the same or an older,
//!    already erased, segment.
//! 3. Every erase sits between syncs: live records copied out of the
//!    oldest segment are durable before it is erased, the header block is
//!    erased and synced before the rest (a torn erase leaves a headerless,
//!    free segment, never a header over a half-erased body), and the erase
//!    is durable before a new header is programmed. Each frame's CRC covers
//!    its segment's seq, so a stale frame can never verify under a new seq.
//!    Recovery applies segments in sequence order and a later record for a
//!    key wins.
//! 4. `live_bytes <= budget` for every live record (messages, retained,
//!    sessions, QoS 2 state), with room reserved so that deletions and
//!    compaction always succeed; two segments are free at rest, and
//!    recovery restores two even after consecutive power cuts during a
//!    compaction. `Full` answers one request; it is never sticky.
//! 5. After any failed program, erase or sync the store is failed for the
//!    rest of the process: it never programs, erases or syncs again (a
//!    retried fdatasync can succeed for data Linux dropped), and everything
//!    waiting for a sync is answered with an error.
//! 6. Recovery never panics on any byte pattern (all lengths read from
//!    flash are checked, on 32-bit too). A bad frame in a sealed segment is
//!    skipped by resynchronising on the next frame whose CRC verifies; a
//!    damaged header is never taken for an erased one; both are logged with
//!    segment and offset and counted (`StoreStats::damaged`).
//! 7. The image records its geometry and format version: an image written
//!    with another `segment_size` or `capacity`, or by a newer format, is
//!    refused, never read with the wrong geometry or erased.
//! 8. The index only points at records it has verified: a read checks the
//!    frame's CRC and that a message has the id the index expects.

mod inflight;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::flash::Durable;
use super::record::{self, Record, StoredMessage, StoredSession, ERASED_LEN, FRAME_HEADER};
use super::segment::{Header, HEADER_LEN, HEADER_LEN_V1};
use super::{Overflow, StoreError, StoreStats};

pub use budget::Quota;

mod budget;
mod io;
mod keyed;
mod reclaim;
mod recovery;
mod wear;

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
    /// Written in format version 1 (24-byte header, frame CRC without seq).
    v1: bool,
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
    /// Damaged ranges in sealed segments and damaged headers (logged with
    /// segment and offset; D8).
    pub damaged: usize,
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
    /// Bytes programmed since the last sync (the commit window stops
    /// gathering once a page's worth waits).
    unsynced_bytes: u64,
    /// Set by the first failed program, erase or sync; never cleared.
    failed: Option<String>,
    /// Frame bytes owed to each destination (quotas).
    dest_bytes: HashMap<u32, u64>,
    default_quota: Quota,
    quotas: HashMap<String, Quota>,
    /// Size of the last append refused for lack of space (`is_full`).
    refused_need: Option<u64>,
    stats: StoreStats,
}

impl<F: Durable> Store<F> {
    /// Opens a store on `flash`, recovering whatever a previous run left.
    pub fn open(
        flash: F,
        segment_size: usize,
        overflow: Overflow,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        Self::open_or_return(flash, segment_size, overflow).map_err(|(e, _)| e)
    }

    /// [`Store::open`] that gives the flash back when it fails (tests cut
    /// the power again after a recovery that failed half way).
    pub fn open_or_return(
        flash: F,
        segment_size: usize,
        overflow: Overflow,
    ) -> Result<(Self, RecoveryReport), (StoreError, F)> {
        let block = F::ERASE_SIZE;
        let seg_size = (segment_size.max(block) / block * block) as u32;
        let nsegs = flash.capacity() / seg_size as usize;
        if nsegs < 5 {
            let e = StoreError::Config(format!(
                "capacity {} holds {nsegs} segments of {seg_size} bytes; at least 5 are needed",
                flash.capacity()
            ));
            return Err((e, flash));
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
            unsynced_bytes: 0,
            failed: None,
            dest_bytes: HashMap::new(),
            default_quota: Quota::UNLIMITED,
            quotas: HashMap::new(),
            refused_need: None,
            stats: StoreStats::default(),
        };
        let report = match store.recover() {
            Ok(r) => r,
            Err(e) => return Err((e, store.flash)),
        };
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
        s.free_segments = self.free_segments() as u64;
        s.full = self.is_full();
        s.budget_bytes = self.budget();
        s
    }

    /// Applies one record to the index (recovery and live writes share this).
    fn apply(&mut self, rec: Record, loc: Loc) {
        match rec {
            Record::Message(m) => self.apply_message(&m, loc),
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
            Record::SessionSave(s) | Record::SessionSaveOwned { session: s, .. } => {
                self.segs[loc.seg as usize].live_bytes += loc.len;
                if let Some(old) = self.sessions.insert(s.client_id, loc) {
                    self.unlive(old);
                }
            }
            Record::SessionRemove { client_id } => self.apply_session_remove(&client_id),
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

    /// A message record: (re)indexes it under each destination it names; a
    /// message with no destination left is only counted in its segment.
    fn apply_message(&mut self, m: &StoredMessage, loc: Loc) {
        let dests: Vec<u32> = m.destinations.iter().map(|d| self.intern(d)).collect();
        if let Some(old) = self.messages.remove(&m.id) {
            self.unlive(old.loc);
            for d in old.dests {
                self.queue_remove(d, m.id);
                self.dest_bytes_sub(d, old.loc.len);
            }
        }
        for &d in &dests {
            self.queues.entry(d).or_default().insert(m.id);
            *self.dest_bytes.entry(d).or_default() += u64::from(loc.len);
        }
        self.segs[loc.seg as usize].ids.push(m.id);
        if !dests.is_empty() {
            self.segs[loc.seg as usize].live_bytes += loc.len;
            self.messages.insert(m.id, MsgEntry { loc, dests });
        }
    }

    /// A session removal: forgets its saved state and its QoS 2 receipts.
    fn apply_session_remove(&mut self, client_id: &str) {
        if let Some(old) = self.sessions.remove(client_id) {
            self.unlive(old);
        }
        let gone: Vec<(String, u16)> = self
            .qos2
            .keys()
            .filter(|(c, _)| c == client_id)
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.qos2.remove(&key) {
                self.unlive(old);
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
        self.dest_bytes_sub(dest, loc.len);
        true
    }

    fn dest_bytes_sub(&mut self, dest: u32, len: u32) {
        if let Some(b) = self.dest_bytes.get_mut(&dest) {
            *b = b.saturating_sub(u64::from(len));
            if *b == 0 {
                self.dest_bytes.remove(&dest);
            }
        }
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

    /// Writes a record at the head, making room first. Returns its location.
    fn write_record(&mut self, rec: &Record) -> Result<Loc, StoreError> {
        let body = self.body_of(rec)?;
        let len = record::frame_len(body.len(), F::WRITE_SIZE);
        if len > self.seg_size as usize - HEADER_LEN {
            return Err(StoreError::TooLarge(len));
        }
        self.make_room(len)?;
        self.write_record_at_head(&body)
    }

    fn body_of(&self, rec: &Record) -> Result<Vec<u8>, StoreError> {
        record::encode_body(rec).map_err(|e| StoreError::Record(e.to_string()))
    }

    fn head_fits(&self, len: usize) -> bool {
        self.segs[self.head].write_off as usize + len <= self.seg_size as usize
    }

    /// Frames `body` for the head segment (its seq is in the CRC) and
    /// programs it there; the caller made room.
    fn write_record_at_head(&mut self, body: &[u8]) -> Result<Loc, StoreError> {
        let seq = self.segs[self.head].seq.unwrap_or(0);
        let frame = record::frame_body(body, seq, F::WRITE_SIZE);
        let seg = &mut self.segs[self.head];
        let loc = Loc {
            seg: self.head as u32,
            off: seg.write_off,
            len: frame.len() as u32,
        };
        seg.write_off += frame.len() as u32;
        let base = self.seg_base(self.head);
        self.program(base + loc.off, &frame)?;
        self.stats.bytes_written += frame.len() as u64;
        Ok(loc)
    }

    /// Where the records of segment `i` start.
    fn data_start(&self, i: usize) -> usize {
        if self.segs[i].v1 {
            HEADER_LEN_V1
        } else {
            HEADER_LEN
        }
    }

    /// Reads the message `id` at `loc`, checking that it is that message (D7).
    fn read_message(&mut self, loc: Loc, id: u64) -> Result<StoredMessage, StoreError> {
        match self.read_record(loc)? {
            Record::Message(m) if m.id == id => Ok(m),
            _ => Err(StoreError::Corrupt {
                seg: loc.seg,
                off: loc.off,
            }),
        }
    }

    fn read_record(&mut self, loc: Loc) -> Result<Record, StoreError> {
        let corrupt = StoreError::Corrupt {
            seg: loc.seg,
            off: loc.off,
        };
        let mut frame = vec![0u8; loc.len as usize];
        self.flash
            .read(self.seg_base(loc.seg as usize) + loc.off, &mut frame)
            .map_err(StoreError::flash)?;
        let Some(head) = frame.get(..FRAME_HEADER) else {
            return Err(corrupt);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body = usize::try_from(len)
            .ok()
            .and_then(|l| FRAME_HEADER.checked_add(l))
            .and_then(|end| frame.get(FRAME_HEADER..end))
            .ok_or(corrupt.clone())?;
        let seg = &self.segs[loc.seg as usize];
        let expected = match (seg.v1, seg.seq) {
            (true, _) => record::frame_crc(len, body),
            (false, Some(seq)) => record::frame_crc_seq(seq, len, body),
            (false, None) => return Err(corrupt),
        };
        if expected != crc {
            return Err(corrupt);
        }
        record::decode_body(body).ok_or(corrupt)
    }

    /// The durability point: everything written so far survives a power cut
    /// once this returns Ok. Dead segments at the old end are erased too.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        self.erase_dead_tails()?;
        self.sync()
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
        let mut rec = Record::Message(msg);
        let need = record::frame_len(self.body_of(&rec)?.len(), F::WRITE_SIZE) as u64;
        let accepted = self.within_quotas(need, destinations)?;
        if accepted.len() < destinations.len() {
            if let Record::Message(m) = &mut rec {
                m.destinations = accepted;
            }
        }
        self.ensure_budget(need)?;
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
}

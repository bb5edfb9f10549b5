//! RAM flash for tests: enforces NOR rules and is as hostile as real
//! hardware.
//!
//! Rules enforced (each violation is an error, so a log bug fails a test
//! instead of silently working on a file): erase sets whole blocks to 0xFF;
//! programs are word-aligned and only into erased words; no rewrite in place.
//!
//! Fault model (invariants the store is tested against):
//! - The flash keeps two images: `data` (what reads see, like a page
//!   cache) and `synced` (what survives a power cut), plus the operations
//!   made since the last successful sync. A successful `sync` applies those
//!   operations to `synced`.
//! - `power_cut` rebuilds the image from `synced` plus an arbitrary subset
//!   of the unsynced operations, in order. An erase persists block by block
//!   (each 4 KiB block of it independently), and one word of one program is
//!   torn (random bits cleared), which is what a real cut can leave.
//! - `fail_next_sync_dropping`: the next `sync` fails AND forgets the
//!   unsynced operations (Linux since 4.13: the failed pages are marked
//!   clean, so the data still reads back but is not on the device), while
//!   later syncs succeed. Trusting such a later sync is the "fsyncgate" bug.
//! - `power_fail_after(k)`: the k-th program or erase from now is cut in
//!   the middle (a prefix of its words or blocks reaches `data`) and it and
//!   every later operation and sync fail, until `power_cut` "reboots".
//! - `power_fail_at_sync(k)`: the power fails just before the k-th sync.
//! - `flip_bit` flips one bit in both images: bit rot in an erased or a
//!   programmed word.
//! - `set_fail_write`/`set_fail_sync` make every program/erase or sync fail
//!   (keeping the data) until turned off.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use rand::Rng;

use super::{Durable, BLOCK, WORD};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RamFlashError {
    #[error("access out of bounds or misaligned at offset {0}")]
    Bounds(u32),
    #[error("program into a word that is not erased at offset {0}")]
    NotErased(u32),
    #[error("injected failure: {0}")]
    Injected(&'static str),
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::Bounds(_) => NorFlashErrorKind::OutOfBounds,
            RamFlashError::NotErased(_) | RamFlashError::Injected(_) => NorFlashErrorKind::Other,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u32, bytes: Vec<u8> },
    Erase { from: u32, to: u32 },
}

impl Op {
    fn apply(&self, image: &mut [u8]) {
        match self {
            Op::Write { offset, bytes } => {
                let at = *offset as usize;
                image[at..at + bytes.len()].copy_from_slice(bytes);
            }
            Op::Erase { from, to } => image[*from as usize..*to as usize].fill(0xFF),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RamFlash {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Op>,
    fail_write: bool,
    fail_sync: bool,
    drop_next_sync: bool,
    /// Programs/erases left before the power fails inside one.
    power_fail_in: Option<u64>,
    /// Syncs left before the power fails just before one.
    sync_fail_in: Option<u64>,
    /// The power failed: everything fails until `power_cut`.
    powered_off: bool,
    ops: u64,
    syncs: u64,
}

impl RamFlash {
    /// A fully erased flash of `capacity` bytes (rounded down to whole blocks).
    pub fn new(capacity: usize) -> RamFlash {
        let data = vec![0xFF; capacity - capacity % BLOCK];
        RamFlash {
            synced: data.clone(),
            data,
            pending: Vec::new(),
            fail_write: false,
            fail_sync: false,
            drop_next_sync: false,
            power_fail_in: None,
            sync_fail_in: None,
            powered_off: false,
            ops: 0,
            syncs: 0,
        }
    }

    /// Makes every later program (and erase) fail until turned off.
    pub fn set_fail_write(&mut self, fail: bool) {
        self.fail_write = fail;
    }

    /// Makes every later `sync()` fail until turned off.
    pub fn set_fail_sync(&mut self, fail: bool) {
        self.fail_sync = fail;
    }

    /// The next `sync()` fails and drops every unsynced operation from the
    /// durable image (reads still see them); later syncs succeed.
    pub fn fail_next_sync_dropping(&mut self) {
        self.drop_next_sync = true;
    }

    /// The power fails in the middle of the `k`-th program or erase from
    /// now (k = 0: the next one). `None` disarms.
    pub fn power_fail_after(&mut self, k: Option<u64>) {
        self.power_fail_in = k;
    }

    /// The power fails just before the `k`-th sync from now (k = 0: the
    /// next one): what was written since the last sync is left to
    /// `power_cut`, erases block by block. `None` disarms.
    pub fn power_fail_at_sync(&mut self, k: Option<u64>) {
        self.sync_fail_in = k;
    }

    /// True once an armed power failure has happened (until `power_cut`).
    pub fn powered_off(&self) -> bool {
        self.powered_off
    }

    /// Programs and erases made so far (to aim `power_fail_after`).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Flips one bit at `offset` in both images (bit rot).
    pub fn flip_bit(&mut self, offset: usize, bit: u8) {
        let mask = 1u8 << (bit % 8);
        if let Some(b) = self.data.get_mut(offset) {
            *b ^= mask;
        }
        if let Some(b) = self.synced.get_mut(offset) {
            *b ^= mask;
        }
    }

    /// Writes raw bytes into both images, bypassing the NOR rules (tests
    /// use it to plant damage or a foreign image).
    pub fn poke(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(d) = self.data.get_mut(offset..offset + bytes.len()) {
            d.copy_from_slice(bytes);
        }
        if let Some(d) = self.synced.get_mut(offset..offset + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    }

    /// Operations made since the last sync (what a power cut may lose).
    pub fn unsynced_ops(&self) -> usize {
        self.pending.len()
    }

    /// Simulates a power cut: keeps the synced image plus a random subset of
    /// the operations since (erases block by block), and tears one word of
    /// one program. The flash is powered again afterwards.
    pub fn power_cut(&mut self, rng: &mut impl Rng) {
        let mut image = self.synced.clone();
        let torn = (!self.pending.is_empty()).then(|| rng.random_range(0..self.pending.len()));
        for (i, op) in self.pending.iter().enumerate() {
            match op {
                Op::Erase { from, to } => {
                    // Each block of an erase reaches the device on its own.
                    let mut at = *from as usize;
                    while at < *to as usize {
                        if rng.random_bool(0.5) {
                            image[at..at + BLOCK].fill(0xFF);
                        }
                        at += BLOCK;
                    }
                }
                Op::Write { offset, bytes } => {
                    let at = *offset as usize;
                    if Some(i) == torn {
                        // Keep a prefix of whole words, then one torn word.
                        let words = bytes.len() / WORD;
                        let whole = rng.random_range(0..words.max(1));
                        image[at..at + whole * WORD].copy_from_slice(&bytes[..whole * WORD]);
                        if whole < words {
                            for b in &mut image[at + whole * WORD..at + (whole + 1) * WORD] {
                                *b &= rng.random::<u8>();
                            }
                        }
                    } else if rng.random_bool(0.5) {
                        image[at..at + bytes.len()].copy_from_slice(bytes);
                    }
                }
            }
        }
        self.data = image.clone();
        self.synced = image;
        self.pending.clear();
        self.powered_off = false;
        self.power_fail_in = None;
        self.sync_fail_in = None;
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), RamFlashError> {
        let end = (offset as usize).checked_add(len);
        if end.is_none_or(|e| e > self.data.len())
            || offset as usize % align != 0
            || len % align != 0
        {
            return Err(RamFlashError::Bounds(offset));
        }
        Ok(())
    }

    /// Counts an operation; `Some(op)` when the power fails inside it (the
    /// caller applies the returned prefix and fails).
    fn power_check(&mut self, op: &Op) -> Result<(), RamFlashError> {
        if self.powered_off {
            return Err(RamFlashError::Injected("power lost"));
        }
        self.ops += 1;
        match self.power_fail_in {
            Some(0) => {
                self.powered_off = true;
                // Half of the operation (in words or blocks) got through.
                let partial = match op {
                    Op::Write { offset, bytes } => {
                        let keep = bytes.len() / WORD / 2 * WORD;
                        Op::Write {
                            offset: *offset,
                            bytes: bytes[..keep].to_vec(),
                        }
                    }
                    Op::Erase { from, to } => {
                        let blocks = (to - from) as usize / BLOCK;
                        Op::Erase {
                            from: *from,
                            to: from + (blocks / 2 * BLOCK) as u32,
                        }
                    }
                };
                partial.apply(&mut self.data);
                self.pending.push(partial);
                Err(RamFlashError::Injected("power lost inside an operation"))
            }
            Some(k) => {
                self.power_fail_in = Some(k - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl ErrorType for RamFlash {
    type Error = RamFlashError;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), 1)?;
        let at = offset as usize;
        bytes.copy_from_slice(&self.data[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = BLOCK;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if self.fail_write {
            return Err(RamFlashError::Injected("erase"));
        }
        self.check(from, to.saturating_sub(from) as usize, BLOCK)?;
        let op = Op::Erase { from, to };
        self.power_check(&op)?;
        op.apply(&mut self.data);
        self.pending.push(op);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if self.fail_write {
            return Err(RamFlashError::Injected("program"));
        }
        self.check(offset, bytes.len(), WORD)?;
        let at = offset as usize;
        if let Some(word) = self.data[at..at + bytes.len()]
            .chunks(WORD)
            .position(|w| w.iter().any(|b| *b != 0xFF))
        {
            return Err(RamFlashError::NotErased(offset + (word * WORD) as u32));
        }
        let op = Op::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        self.power_check(&op)?;
        op.apply(&mut self.data);
        self.pending.push(op);
        Ok(())
    }
}

impl Durable for RamFlash {
    fn sync(&mut self) -> Result<(), Self::Error> {
        if self.powered_off {
            return Err(RamFlashError::Injected("power lost"));
        }
        match self.sync_fail_in {
            Some(0) => {
                self.powered_off = true;
                return Err(RamFlashError::Injected("power lost before a sync"));
            }
            Some(k) => self.sync_fail_in = Some(k - 1),
            None => {}
        }
        if self.fail_sync {
            return Err(RamFlashError::Injected("sync"));
        }
        if self.drop_next_sync {
            // Linux semantics: the error is reported once, the failed pages
            // are clean in the cache and never reach the device.
            self.drop_next_sync = false;
            self.pending.clear();
            return Err(RamFlashError::Injected("sync (unsynced data dropped)"));
        }
        for op in self.pending.drain(..) {
            op.apply(&mut self.synced);
        }
        self.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn enforces_nor_rules() {
        let mut f = RamFlash::new(2 * BLOCK);
        f.write(0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(f.write(0, &[1, 2, 3, 4]), Err(RamFlashError::NotErased(0)));
        assert_eq!(f.write(2, &[1, 2, 3, 4]), Err(RamFlashError::Bounds(2)));
        assert_eq!(f.write(4, &[1, 2]), Err(RamFlashError::Bounds(4)));
        f.erase(0, BLOCK as u32).unwrap();
        f.write(0, &[9, 9, 9, 9]).unwrap();
        let mut out = [0u8; 8];
        f.read(0, &mut out).unwrap();
        assert_eq!(out, [9, 9, 9, 9, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn power_cut_keeps_synced_data() {
        let mut rng = rand::rng();
        for _ in 0..50 {
            let mut f = RamFlash::new(BLOCK);
            f.write(0, &[1; 8]).unwrap();
            f.sync().unwrap();
            f.write(8, &[2; 8]).unwrap();
            f.power_cut(&mut rng);
            let mut out = [0u8; 8];
            f.read(0, &mut out).unwrap();
            assert_eq!(out, [1; 8]);
            assert_eq!(f.unsynced_ops(), 0);
        }
    }

    #[test]
    fn a_failed_sync_drops_the_unsynced_data_and_the_next_sync_succeeds() {
        let mut f = RamFlash::new(BLOCK);
        f.write(0, &[1; 4]).unwrap();
        f.fail_next_sync_dropping();
        assert!(f.sync().is_err());
        f.write(4, &[2; 4]).unwrap();
        assert!(f.sync().is_ok(), "later syncs succeed (Linux errseq)");
        let mut out = [0u8; 8];
        f.read(0, &mut out).unwrap();
        assert_eq!(
            out,
            [1, 1, 1, 1, 2, 2, 2, 2],
            "reads still see the dropped data"
        );
        f.power_cut(&mut rand::rng());
        f.read(0, &mut out).unwrap();
        assert_eq!(
            out,
            [0xFF, 0xFF, 0xFF, 0xFF, 2, 2, 2, 2],
            "but it is not durable"
        );
    }

    #[test]
    fn an_erase_is_torn_at_block_granularity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut mixed = false;
        for _ in 0..50 {
            let mut f = RamFlash::new(4 * BLOCK);
            for b in 0..4 {
                f.write((b * BLOCK) as u32, &[0; 4]).unwrap();
            }
            f.sync().unwrap();
            f.erase(0, 4 * BLOCK as u32).unwrap();
            f.power_cut(&mut rng);
            let erased: Vec<bool> = (0..4)
                .map(|b| {
                    let mut w = [0u8; 4];
                    f.read((b * BLOCK) as u32, &mut w).unwrap();
                    w == [0xFF; 4]
                })
                .collect();
            mixed |= erased.iter().any(|e| *e) && erased.iter().any(|e| !*e);
        }
        assert!(mixed, "no power cut left an erase half done");
    }

    #[test]
    fn power_fails_inside_the_kth_operation() {
        let mut f = RamFlash::new(BLOCK);
        f.power_fail_after(Some(1));
        f.write(0, &[1; 8]).unwrap();
        assert!(f.write(8, &[2; 8]).is_err());
        assert!(f.powered_off());
        assert!(f.write(16, &[3; 4]).is_err());
        assert!(f.sync().is_err());
        let mut out = [0u8; 16];
        f.read(0, &mut out).unwrap();
        assert_eq!(
            &out[8..16],
            &[2, 2, 2, 2, 0xFF, 0xFF, 0xFF, 0xFF],
            "half written"
        );
        f.power_cut(&mut rand::rng());
        assert!(!f.powered_off());
        f.write(16, &[3; 4]).unwrap();
    }

    #[test]
    fn bit_flips_reach_both_images() {
        let mut f = RamFlash::new(BLOCK);
        f.flip_bit(24, 0);
        f.power_cut(&mut rand::rng());
        let mut w = [0u8; 4];
        f.read(24, &mut w).unwrap();
        assert_eq!(u32::from_le_bytes(w), 0xFFFF_FFFE);
    }
}

//! RAM flash for tests: enforces NOR rules and simulates power cuts.
//!
//! Rules enforced (each violation is an error, so a log bug fails a test
//! instead of silently working on a file): erase sets whole blocks to 0xFF;
//! programs are word-aligned and only into erased words; no rewrite in place.
//!
//! Power cuts: the flash remembers the image as of the last `sync()` and the
//! operations made since. `power_cut` rebuilds the image from the synced one
//! plus an arbitrary subset of those operations, in order, and tears one
//! word of one operation (random bytes), which is what a real cut can leave.
//! Failure injection makes programs or syncs fail on purpose.

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

#[derive(Debug, Clone)]
pub struct RamFlash {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Op>,
    fail_write: bool,
    fail_sync: bool,
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

    /// Operations made since the last sync (what a power cut may lose).
    pub fn unsynced_ops(&self) -> usize {
        self.pending.len()
    }

    /// Simulates a power cut: keeps the synced image plus a random subset of
    /// the operations since, and tears one word of one of them.
    pub fn power_cut(&mut self, rng: &mut impl Rng) {
        let mut image = self.synced.clone();
        let torn = (!self.pending.is_empty()).then(|| rng.random_range(0..self.pending.len()));
        for (i, op) in self.pending.iter().enumerate() {
            let keep = rng.random_bool(0.5);
            match op {
                Op::Erase { from, to } if keep => image[*from as usize..*to as usize].fill(0xFF),
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
                    } else if keep {
                        image[at..at + bytes.len()].copy_from_slice(bytes);
                    }
                }
                Op::Erase { .. } => {}
            }
        }
        self.data = image.clone();
        self.synced = image;
        self.pending.clear();
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), RamFlashError> {
        if offset as usize + len > self.data.len()
            || offset as usize % align != 0
            || len % align != 0
        {
            return Err(RamFlashError::Bounds(offset));
        }
        Ok(())
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
        self.data[from as usize..to as usize].fill(0xFF);
        self.pending.push(Op::Erase { from, to });
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if self.fail_write {
            return Err(RamFlashError::Injected("program"));
        }
        self.check(offset, bytes.len(), WORD)?;
        let at = offset as usize;
        let target = &mut self.data[at..at + bytes.len()];
        if let Some(word) = target
            .chunks(WORD)
            .position(|w| w.iter().any(|b| *b != 0xFF))
        {
            return Err(RamFlashError::NotErased(offset + (word * WORD) as u32));
        }
        target.copy_from_slice(bytes);
        self.pending.push(Op::Write {
            offset,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }
}

impl Durable for RamFlash {
    fn sync(&mut self) -> Result<(), Self::Error> {
        if self.fail_sync {
            return Err(RamFlashError::Injected("sync"));
        }
        self.synced.clone_from(&self.data);
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}

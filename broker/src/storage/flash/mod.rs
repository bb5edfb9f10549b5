//! The lowest storage layer: flash with NOR semantics.
//!
//! Everything above this layer is written against
//! `embedded_storage::nor_flash::NorFlash`: a block must be erased (to all
//! 0xFF) before it is programmed, programming is aligned to `WRITE_SIZE`,
//! and a programmed word is never rewritten. Holding the log to these rules
//! means the same code runs on a raw NOR chip, an MTD partition or an image
//! file on an SD card, and it makes torn writes detectable: the only states a
//! word can be in are erased, fully written, or torn (caught by the CRC).
//!
//! `Durable` adds the one thing NorFlash lacks: a point after which every
//! earlier program and erase is guaranteed to survive a power cut.

mod file;
mod ram;

pub use file::{FileFlash, FileFlashError};
pub use ram::{RamFlash, RamFlashError};

use embedded_storage::nor_flash::NorFlash;

/// Word size of our flash backends: programming is in 4-byte units.
pub const WORD: usize = 4;
/// Erase block size of our flash backends.
pub const BLOCK: usize = 4096;

/// A flash whose writes can be made durable.
pub trait Durable: NorFlash {
    /// Blocks until every program and erase made so far is on stable storage.
    fn sync(&mut self) -> Result<(), Self::Error>;
}

//! Recovery from an arbitrary flash image: the logic of the
//! `store_recovery` fuzz target, in the library so the same code also runs
//! as a seeded unit test on every target (armv7 under qemu included, where
//! `usize` is 32 bits).
//!
//! Invariant: whatever the bytes, `Store::open` returns (Ok or Err) without
//! a panic, and everything an opened store reports can be read back.

use embedded_storage::nor_flash::NorFlash as _;

use super::flash::{RamFlash, BLOCK};
use super::{Overflow, Store};

/// Segments of the image the fuzz target builds.
pub const FUZZ_SEGMENTS: usize = 8;

/// Lays `data` over an erased flash of [`FUZZ_SEGMENTS`] one-block segments,
/// opens a store on it and reads back everything it reports. Panics only
/// if the store does.
pub fn recover_arbitrary_image(data: &[u8]) {
    let mut flash = RamFlash::new(FUZZ_SEGMENTS * BLOCK);
    let len = data.len().min(FUZZ_SEGMENTS * BLOCK) / 4 * 4;
    if len > 0 && flash.write(0, &data[..len]).is_err() {
        return;
    }
    exercise(flash);
}

/// Opens a store on `flash` and reads back everything it reports.
pub fn exercise(flash: RamFlash) {
    if let Ok((mut store, _)) = Store::open(flash, BLOCK, Overflow::Reject) {
        for d in store.destinations() {
            let _ = store.read(&d, None, usize::MAX);
        }
        let _ = store.retained();
        let _ = store.sessions();
        let _ = store.commit();
    }
}

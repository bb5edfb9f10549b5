//! Fuzzes store recovery: an arbitrary flash image (a few segments) must be
//! recovered without a panic, and whatever is recovered must be readable.
#![no_main]

use edgemq::storage::flash::{RamFlash, BLOCK};
use edgemq::storage::{Overflow, Store};
use embedded_storage::nor_flash::NorFlash as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut flash = RamFlash::new(8 * BLOCK);
    let len = data.len().min(8 * BLOCK) / 4 * 4;
    if len > 0 && flash.write(0, &data[..len]).is_err() {
        return;
    }
    if let Ok((mut store, _)) = Store::open(flash, BLOCK, Overflow::Reject) {
        for d in store.destinations() {
            let _ = store.read(&d, None, usize::MAX);
        }
        let _ = store.retained();
        let _ = store.sessions();
    }
});

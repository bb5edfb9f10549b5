//! Fuzzes store recovery: an arbitrary flash image (a few segments) must be
//! recovered without a panic, and whatever is recovered must be readable.
//! The logic lives in `edgemq::storage::fuzzing` so that a seeded unit test
//! runs it on armv7 too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgemq::storage::fuzzing::recover_arbitrary_image(data);
});

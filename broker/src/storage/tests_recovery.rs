//! Recovery under damage: bit flips, torn erases, power failures inside an
//! operation, foreign geometry. Each test names the review finding it pins.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::flash::{RamFlash, BLOCK};
use super::fuzzing::{exercise, recover_arbitrary_image, FUZZ_SEGMENTS};
use super::*;

fn scale() -> u64 {
    std::env::var("EDGEMQ_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn msg(payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: "t".into(),
        qos: 1,
        payload: Bytes::copy_from_slice(payload),
        ..Default::default()
    }
}

/// Offset of the first erased word at or after `from` (a record slot).
fn first_erased_word(flash: &mut RamFlash, from: usize) -> usize {
    use embedded_storage::nor_flash::ReadNorFlash as _;
    let mut off = from;
    loop {
        let mut w = [0u8; 4];
        flash.read(off as u32, &mut w).unwrap();
        if w == [0xFF; 4] {
            return off;
        }
        off += 4;
    }
}

/// C1: one bit flipped in the erased word after the last record makes its
/// length 0xFFFFFFFE; on 32-bit targets `off + 8 + len` wrapped and the
/// slice panicked at every start.
#[test]
fn c1_length_word_0xfffffffe_after_the_last_record_does_not_panic() {
    let (mut store, _) = Store::open(RamFlash::new(8 * BLOCK), BLOCK, Overflow::Reject).unwrap();
    let id = store.append(msg(b"kept"), &["session/a".into()]).unwrap();
    store.commit().unwrap();
    let mut flash = store.into_flash();
    // The first head is segment 0; its records start after the header.
    let slot = first_erased_word(&mut flash, segment::HEADER_LEN);
    flash.poke(slot, &0xFFFF_FFFEu32.to_le_bytes());
    let (mut store, _) = Store::open(flash, BLOCK, Overflow::Reject).unwrap();
    let got = store.read("session/a", None, 10).unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    // The store is usable: a round trip through a reopen.
    let id2 = store.append(msg(b"new"), &["session/a".into()]).unwrap();
    store.commit().unwrap();
    let (mut store, _) = Store::open(store.into_flash(), BLOCK, Overflow::Reject).unwrap();
    let ids: Vec<u64> = store
        .read("session/a", None, 10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![id, id2]);
}

/// C1, every large length: no length word may make recovery panic.
#[test]
fn c1_huge_length_words_never_panic() {
    for len in [
        0xFFFF_FFFEu32,
        0xFFFF_FFF8,
        0xFFFF_FFE7,
        0x8000_0000,
        0x7FFF_FFFF,
        u32::MAX - 24,
    ] {
        let mut flash = RamFlash::new(8 * BLOCK);
        let (mut store, _) = Store::open(flash, BLOCK, Overflow::Reject).unwrap();
        store.append(msg(b"x"), &["d".into()]).unwrap();
        store.commit().unwrap();
        flash = store.into_flash();
        let slot = first_erased_word(&mut flash, segment::HEADER_LEN);
        flash.poke(slot, &len.to_le_bytes());
        exercise(flash);
    }
}

/// The fuzz target's logic on seeded random images, and on valid images
/// with random damage, so it runs on armv7 under qemu as well.
#[test]
fn recovery_never_panics_on_random_or_damaged_images() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..scale() * 20 {
        let len = rng.random_range(0..FUZZ_SEGMENTS * BLOCK);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        recover_arbitrary_image(&data);
    }
    for _ in 0..scale() * 20 {
        let (mut store, _) = Store::open(
            RamFlash::new(FUZZ_SEGMENTS * BLOCK),
            BLOCK,
            Overflow::Reject,
        )
        .unwrap();
        for i in 0..rng.random_range(1..60u32) {
            let _ = store.append(msg(&i.to_le_bytes().repeat(10)), &["a".into(), "b".into()]);
            if rng.random_bool(0.3) {
                let _ = store.ack(u64::from(i), "a");
            }
            let _ = store.commit();
        }
        let mut flash = store.into_flash();
        for _ in 0..rng.random_range(1..8) {
            flash.flip_bit(rng.random_range(0..FUZZ_SEGMENTS * BLOCK), rng.random());
        }
        exercise(flash);
    }
}

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

fn ids_of(store: &mut Store<RamFlash>, dest: &str) -> Vec<u64> {
    store
        .read(dest, None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect()
}

/// D4: the image records its segment size; reopening with another one is
/// refused with an error naming `segment_size`, and nothing is lost.
#[test]
fn d4_another_segment_size_is_refused_naming_the_key() {
    let (mut store, _) =
        Store::open(RamFlash::new(32 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let mut ids = Vec::new();
    for i in 0..40u32 {
        ids.push(
            store
                .append(msg(&i.to_le_bytes().repeat(50)), &["d".into()])
                .unwrap(),
        );
        store.commit().unwrap();
    }
    let mut flash = store.into_flash();
    for other in [4 * BLOCK, BLOCK] {
        let (e, back) = Store::open_or_return(flash, other, Overflow::Reject)
            .err()
            .expect("opened an image with another segment size");
        assert!(e.to_string().contains("segment_size"), "{e}");
        flash = back;
    }
    let (mut store, _) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
    assert_eq!(ids_of(&mut store, "d"), ids);
}

/// D4: a segment written by a newer format is never free: the open is
/// refused and the image is left as it was.
#[test]
fn d4_a_newer_format_version_is_refused_and_not_erased() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    store.append(msg(b"x"), &["d".into()]).unwrap();
    store.commit().unwrap();
    let mut flash = store.into_flash();
    // A "version 3" header (valid CRC) in segment 4, which is free.
    let mut raw = segment::Header {
        seq: 99,
        erase_count: 0,
        segment_size: 2 * BLOCK as u32,
        capacity: 16 * BLOCK as u32,
    }
    .encode();
    raw[4] = 3;
    let crc = crc32fast::hash(&raw[..28]);
    raw[28..32].copy_from_slice(&crc.to_le_bytes());
    flash.poke(4 * 2 * BLOCK, &raw);
    let before = flash.clone();
    let (e, mut back) = Store::open_or_return(flash, 2 * BLOCK, Overflow::Reject)
        .err()
        .expect("opened an image with a newer format");
    assert!(e.to_string().contains("format version 3"), "{e}");
    assert_eq!(back.unsynced_ops(), 0, "the refused open wrote something");
    let mut a = vec![0u8; 16 * BLOCK];
    let mut b = vec![0u8; 16 * BLOCK];
    use embedded_storage::nor_flash::ReadNorFlash as _;
    back.read(0, &mut a).unwrap();
    before.clone().read(0, &mut b).unwrap();
    assert!(a == b, "the image changed");
}

/// Version 1 images (24-byte header, frame CRC without the seq) are still
/// read, and new records go into format 2 segments next to them.
#[test]
fn format_1_images_are_still_read() {
    let mut flash = RamFlash::new(16 * BLOCK);
    let mut image = segment::encode_v1(1, 0).to_vec();
    for i in 1..=3u64 {
        let rec = record::Record::Message(StoredMessage {
            id: i,
            destinations: vec!["d".into()],
            ..msg(b"old")
        });
        image.extend(record::encode_frame(&rec, 4).unwrap());
    }
    flash.poke(0, &image);
    let (mut store, report) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
    assert_eq!(report.messages, 3);
    let id = store.append(msg(b"new"), &["d".into()]).unwrap();
    store.commit().unwrap();
    let (mut store, _) = Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).unwrap();
    assert_eq!(ids_of(&mut store, "d"), vec![1, 2, 3, id]);
}

/// D8: one bad record in a sealed segment costs that record only: replay
/// resynchronises on the next valid frame, and the damage is counted.
#[test]
fn d8_a_bad_record_in_a_sealed_segment_loses_only_that_record() {
    let (mut store, _) =
        Store::open(RamFlash::new(32 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let mut ids = Vec::new();
    for i in 0..60u32 {
        ids.push(
            store
                .append(msg(&i.to_le_bytes().repeat(50)), &["d".into()])
                .unwrap(),
        );
    }
    store.commit().unwrap();
    let mut flash = store.into_flash();
    // A bit in the body of segment 0's first record (message ids[0]).
    flash.flip_bit(segment::HEADER_LEN + 20, 3);
    let (mut store, report) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
    assert_eq!(ids_of(&mut store, "d"), ids[1..].to_vec());
    assert_eq!(report.damaged, 1);
    assert_eq!(store.stats().damaged, 1);
}

/// D8: a header that is neither erased nor valid is reported and counted.
#[test]
fn d8_a_damaged_header_is_counted() {
    let (mut store, _) =
        Store::open(RamFlash::new(32 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    for i in 0..60u32 {
        store
            .append(msg(&i.to_le_bytes().repeat(50)), &["d".into()])
            .unwrap();
    }
    store.commit().unwrap();
    let mut flash = store.into_flash();
    flash.flip_bit(10, 1);
    let (store, report) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
    assert!(report.damaged >= 1, "{report:?}");
    assert!(store.stats().damaged >= 1);
}

/// D6: a power cut while a dead segment is being erased (blocks persisted
/// in any subset) never brings back a record cancelled inside it.
#[test]
fn d6_a_torn_erase_never_resurrects_cancelled_records() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut resurrected = 0;
    for k in 0..6u64 {
        for _ in 0..scale() * 3 {
            let (mut store, _) =
                Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
            // Segment 0: M (block 0), fillers, then the ack of M (block 1).
            let m = store.append(msg(b"cancelled"), &["d".into()]).unwrap();
            let mut fillers = Vec::new();
            for _ in 0..20 {
                fillers.push(store.append(msg(&[1; 300]), &["f".into()]).unwrap());
            }
            store.ack(m, "d").unwrap();
            for f in fillers {
                store.ack(f, "f").unwrap();
            }
            store.commit().unwrap();
            // A new head seals segment 0; the commit erases it (dead).
            store.flash_mut().power_fail_at_sync(Some(k));
            let _ = store.append(msg(&[2; 7000]), &["g".into()]);
            let _ = store.commit();
            let mut flash = store.into_flash();
            flash.power_cut(&mut rng);
            let (mut store, _) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
            resurrected += usize::from(!ids_of(&mut store, "d").is_empty());
        }
    }
    assert_eq!(
        resurrected, 0,
        "cancelled message came back after a torn erase"
    );
}

/// M2 (wear): after a restart, a free segment that already reads as erased
/// is not erased again before use (every one used to be).
#[test]
fn m2_free_segments_that_read_erased_are_not_erased_again() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    store.append(msg(b"x"), &["d".into()]).unwrap();
    store.commit().unwrap();
    let (mut store, _) = Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).unwrap();
    for _ in 0..5 {
        // Each of these needs a new head.
        store.append(msg(&[1; 7000]), &["d".into()]).unwrap();
        store.commit().unwrap();
    }
    assert_eq!(
        store.stats().erases,
        0,
        "free, erased segments were erased again"
    );
    assert_eq!(store.stats().erased_bytes, 0);
    // Erasing is counted in bytes when it happens.
    let ids: Vec<u64> = store
        .read("d", None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    for id in ids {
        store.ack(id, "d").unwrap();
    }
    store.append(msg(&[1; 7000]), &["d".into()]).unwrap();
    store.commit().unwrap();
    let s = store.stats();
    assert!(s.erases > 0);
    assert_eq!(s.erased_bytes, s.erases * 2 * BLOCK as u64);
}

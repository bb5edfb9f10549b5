//! Power failures inside operations around a compaction (C2, D7): fail at
//! the k-th program/erase for every k, cut power, recover (and cut again
//! inside the recovery), and check that the store always opens, keeps two
//! free segments and loses nothing that was committed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::flash::{RamFlash, BLOCK};
use super::*;

const SEG: usize = 2 * BLOCK;

fn msg(i: u32) -> StoredMessage {
    StoredMessage {
        topic: "t".into(),
        qos: 1,
        payload: Bytes::from(i.to_le_bytes().repeat(60)),
        ..Default::default()
    }
}

fn ids(store: &mut Store<RamFlash>) -> BTreeSet<u64> {
    store
        .read("d", None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect()
}

/// A store close to its budget during an "outage": most records live, so
/// every new append reclaims. Returns the store and its committed ids.
fn nearly_full() -> (Store<RamFlash>, BTreeSet<u64>) {
    let (mut store, _) = Store::open(RamFlash::new(16 * BLOCK), SEG, Overflow::Reject).unwrap();
    let mut live = BTreeSet::new();
    let mut i = 0u32;
    loop {
        match store.append(msg(i), &["d".into()]) {
            Ok(id) => {
                live.insert(id);
            }
            Err(StoreError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        // Ack one in three so reclaims have something to drop.
        if i % 3 == 0 {
            let first = *live.iter().next().unwrap();
            store.ack(first, "d").unwrap();
            live.remove(&first);
        }
        store.commit().unwrap();
        i += 1;
    }
    store.commit().unwrap();
    (store, live)
}

#[allow(clippy::result_large_err)]
fn reopen(flash: RamFlash) -> Result<Store<RamFlash>, (StoreError, RamFlash)> {
    Store::open_or_return(flash, SEG, Overflow::Reject).map(|(s, _)| s)
}

#[test]
fn c2_power_failures_around_a_reclaim_always_recover_with_two_free_segments() {
    let mut rng = StdRng::seed_from_u64(2);
    let (base, committed) = nearly_full();
    let base_flash = base.into_flash();
    for k in 0..40u64 {
        for k2 in [None, Some(0), Some(1), Some(3), Some(7)] {
            let (mut store, _) = Store::open(base_flash.clone(), SEG, Overflow::Reject).unwrap();
            // Free some room so the appends below reclaim, then fail inside.
            for id in committed.iter().take(6) {
                store.ack(*id, "d").unwrap();
            }
            store.commit().unwrap();
            let mut expect: BTreeSet<u64> = committed.iter().skip(6).copied().collect();
            store.flash_mut().power_fail_after(Some(k));
            for i in 0..30 {
                match store.append(msg(1000 + i), &["d".into()]) {
                    Ok(id) if store.commit().is_ok() => {
                        expect.insert(id);
                    }
                    _ => break,
                }
            }
            let mut flash = store.into_flash();
            flash.power_cut(&mut rng);
            // A second cut inside the recovery itself.
            flash.power_fail_after(k2);
            let mut store = match reopen(flash) {
                Ok(mut s) => {
                    s.flash_mut().power_fail_after(None);
                    s
                }
                Err((e, mut flash)) => {
                    assert!(!matches!(e, StoreError::Full), "k={k} k2={k2:?}: {e}");
                    flash.power_cut(&mut rng);
                    match reopen(flash) {
                        Ok(s) => s,
                        Err((e, _)) => panic!("k={k} k2={k2:?}: second open failed: {e}"),
                    }
                }
            };
            assert!(
                store.stats().free_segments >= 2,
                "k={k} k2={k2:?}: {} free segments after recovery",
                store.stats().free_segments
            );
            let got = ids(&mut store);
            let lost: Vec<_> = expect.difference(&got).collect();
            assert!(lost.is_empty(), "k={k} k2={k2:?}: committed lost {lost:?}");
            // And it works: an append after freeing space.
            let first = *got.iter().next().unwrap();
            store.ack(first, "d").unwrap();
            store.append(msg(9), &["d".into()]).unwrap();
            store.commit().unwrap();
        }
    }
}

/// Random workloads with the power failing inside a random operation
/// (program, erase, or just before a sync), then a power cut: every
/// committed message that was not acked is there, and no message whose ack
/// was committed comes back.
#[test]
fn random_power_failures_inside_operations_lose_nothing_committed() {
    use rand::Rng;
    let rounds = 3 * std::env::var("EDGEMQ_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(10);
    for seed in 0..rounds {
        let mut rng = StdRng::seed_from_u64(100 + seed);
        let (mut store, _) = Store::open(RamFlash::new(16 * BLOCK), SEG, Overflow::Reject).unwrap();
        // Committed and not acked / acked with the ack committed.
        let mut owed: BTreeSet<u64> = BTreeSet::new();
        let mut gone: BTreeSet<u64> = BTreeSet::new();
        let (mut new_ids, mut new_acks) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            if rng.random_bool(0.5) {
                store
                    .flash_mut()
                    .power_fail_after(Some(rng.random_range(0..150)));
            } else {
                store
                    .flash_mut()
                    .power_fail_at_sync(Some(rng.random_range(0..40)));
            }
            for i in 0..400u32 {
                let r = match rng.random_range(0..10) {
                    0..=5 => store
                        .append(msg(i), &["d".into()])
                        .map(|id| new_ids.push(id)),
                    6..=8 => match owed.iter().nth(rng.random_range(0..owed.len().max(1))) {
                        Some(&id) => store.ack(id, "d").map(|_| new_acks.push(id)),
                        None => Ok(()),
                    },
                    _ => store.commit().map(|()| {
                        owed.extend(new_ids.drain(..));
                        for id in new_acks.drain(..) {
                            owed.remove(&id);
                            gone.insert(id);
                        }
                    }),
                };
                match r {
                    Ok(()) | Err(StoreError::Full) => {}
                    Err(_) => break,
                }
            }
            let mut flash = store.into_flash();
            flash.power_cut(&mut rng);
            store = match reopen(flash) {
                Ok(s) => s,
                Err((e, _)) => panic!("seed {seed}: reopen failed: {e}"),
            };
            let got = ids(&mut store);
            // An ack issued but not committed may or may not have survived.
            let must: BTreeSet<u64> = owed
                .iter()
                .filter(|id| !new_acks.contains(id))
                .copied()
                .collect();
            let lost: Vec<_> = must.difference(&got).collect();
            assert!(
                lost.is_empty(),
                "seed {seed}: committed messages lost: {lost:?}"
            );
            let back: Vec<_> = gone.intersection(&got).collect();
            assert!(
                back.is_empty(),
                "seed {seed}: acked messages came back: {back:?}"
            );
            assert!(store.stats().free_segments >= 2, "seed {seed}");
            // What survived is the new truth (uncommitted work may or may not).
            owed = got;
            new_ids.clear();
            new_acks.clear();
        }
    }
}

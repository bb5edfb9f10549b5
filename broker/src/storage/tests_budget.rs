//! The budget and the quotas (W1, W8): every live record counts, deletions
//! always succeed, `Full` is never sticky, one destination cannot take the
//! space of the others.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use super::flash::{RamFlash, BLOCK};
use super::*;

fn msg(len: usize) -> StoredMessage {
    StoredMessage {
        topic: "t".into(),
        qos: 1,
        payload: Bytes::from(vec![3u8; len]),
        ..Default::default()
    }
}

fn open(overflow: Overflow) -> Store<RamFlash> {
    Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, overflow)
        .unwrap()
        .0
}

fn budget(store: &Store<RamFlash>) -> u64 {
    let s = store.stats();
    (s.segments - 3) * (2 * BLOCK as u64 - segment::HEADER_LEN as u64)
}

/// W1: once messages fill the budget, retained messages, sessions and
/// QoS 2 ids are refused too (they used to bypass it), and every deletion
/// still succeeds, after which appends are accepted again.
#[test]
fn w1_every_live_record_counts_and_deletions_always_succeed() {
    let mut store = open(Overflow::Reject);
    let dest = vec!["session/a".to_string()];
    let mut ids = Vec::new();
    while let Ok(id) = store.append(msg(300), &dest) {
        ids.push(id);
        store.commit().unwrap();
    }
    for i in 0..200 {
        let r = StoredMessage {
            topic: format!("r/{i}"),
            ..msg(300)
        };
        let _ = store.set_retained(r);
        let _ = store.save_session(StoredSession {
            client_id: format!("c{i}"),
            ..Default::default()
        });
        let _ = store.set_qos2(&format!("c{i}"), 1, true);
        let _ = store.commit();
        assert!(
            store.stats().live_bytes <= budget(&store),
            "live bytes {} over the budget {}",
            store.stats().live_bytes,
            budget(&store)
        );
    }
    for id in &ids {
        assert!(store.ack(*id, &dest[0]).unwrap());
        store.commit().unwrap();
    }
    for i in 0..200 {
        store.clear_retained(&format!("r/{i}")).unwrap();
        store.remove_session(&format!("c{i}")).unwrap();
    }
    store.commit().unwrap();
    store.append(msg(300), &dest).unwrap();
    store.commit().unwrap();
}

/// W1 through the store thread: `Full` refuses, the state says "full",
/// acks free space, and the store accepts again ("ok"): never sticky.
#[test]
fn w1_full_is_not_sticky_in_the_task() {
    let handle = StoreHandle::spawn(open(Overflow::Reject), &StorageConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ids = Vec::new();
        loop {
            match handle.append(msg(300), vec!["d".into()]).await {
                Ok(id) => ids.push(id),
                Err(StoreError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        handle.flush().await.unwrap();
        assert_eq!(handle.state(), StoreState::Full);
        for id in &ids {
            handle.ack(*id, "d".into()).await.unwrap();
        }
        handle.flush().await.unwrap();
        assert_eq!(handle.state(), StoreState::Ok, "{:?}", handle.stats());
        handle.append(msg(300), vec!["d".into()]).await.unwrap();
        assert!(handle.failure().is_none());
    });
}

/// W8: with drop-oldest, the victim is the oldest message of the
/// destination hoarding the space, not of the new message's destination.
#[test]
fn w8_drop_oldest_takes_from_the_hoarding_destination() {
    let mut store = open(Overflow::DropOldest);
    let lane = vec!["bridge/cloud/0".to_string()];
    let lane_ids: Vec<u64> = (0..5)
        .map(|_| store.append(msg(300), &lane).unwrap())
        .collect();
    store.commit().unwrap();
    // An abandoned session fills the rest of the store.
    let hoard = vec!["session/abandoned".to_string()];
    for _ in 0..400 {
        store.append(msg(300), &hoard).unwrap();
        store.commit().unwrap();
    }
    assert!(store.stats().dropped_oldest > 0, "the store never filled");
    // The lane gets more messages: the session pays for them.
    for _ in 0..5 {
        store.append(msg(300), &lane).unwrap();
        store.commit().unwrap();
    }
    let kept: Vec<u64> = store
        .read(&lane[0], None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept.len(), 10, "the lane lost its own messages");
    assert_eq!(kept[..5], lane_ids[..]);
}

/// W8: per-destination quotas (messages and bytes). Under reject, a
/// destination over its quota does not get the message (counted) while
/// the others do; a message no destination can take is refused. Under
/// drop-oldest, the destination over its quota drops its own oldest.
#[test]
fn w8_destination_quotas() {
    let mut store = open(Overflow::Reject);
    store.set_default_quota(Quota {
        messages: 10,
        bytes: u64::MAX,
        overflow: None,
    });
    let a = vec!["session/a".to_string()];
    for _ in 0..10 {
        store.append(msg(10), &a).unwrap();
    }
    assert_eq!(store.append(msg(10), &a), Err(StoreError::Full));
    let both = vec!["session/a".to_string(), "session/b".to_string()];
    store.append(msg(10), &both).unwrap();
    assert_eq!(
        (store.queue_len("session/a"), store.queue_len("session/b")),
        (10, 1)
    );
    assert_eq!(store.stats().quota_rejected, 2);
    // A lane with its own, larger quota.
    store.set_destination_quota(
        "lane",
        Some(Quota {
            messages: 30,
            bytes: u64::MAX,
            overflow: None,
        }),
    );
    for _ in 0..30 {
        store.append(msg(10), &["lane".to_string()]).unwrap();
    }
    assert!(store.append(msg(10), &["lane".to_string()]).is_err());
    // Bytes.
    store.set_destination_quota(
        "small",
        Some(Quota {
            messages: 1000,
            bytes: 1000,
            overflow: None,
        }),
    );
    let mut n = 0;
    while store.append(msg(100), &["small".to_string()]).is_ok() {
        n += 1;
    }
    assert!(store.destination_bytes("small") <= 1000 && n >= 5, "{n}");

    let mut store = open(Overflow::DropOldest);
    store.set_default_quota(Quota {
        messages: 10,
        bytes: u64::MAX,
        overflow: None,
    });
    let ids: Vec<u64> = (0..25)
        .map(|_| store.append(msg(10), &a).unwrap())
        .collect();
    let kept: Vec<u64> = store
        .read("session/a", None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept, ids[15..].to_vec());
}

/// A destination's own overflow policy (a bridge lane's `overflow`) wins
/// over the store's: a drop-oldest lane in a reject store keeps its newest
/// messages, and a reject lane in a drop-oldest store refuses new ones.
#[test]
fn a_destinations_own_overflow_policy_overrides_the_stores() {
    let lane = vec!["lane".to_string()];
    let mut store = open(Overflow::Reject);
    store.set_destination_quota(
        "lane",
        Some(Quota {
            messages: 5,
            bytes: u64::MAX,
            overflow: Some(Overflow::DropOldest),
        }),
    );
    let ids: Vec<u64> = (0..12)
        .map(|_| store.append(msg(10), &lane).unwrap())
        .collect();
    let kept: Vec<u64> = store
        .read("lane", None, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept, ids[7..].to_vec());
    assert_eq!(store.stats().dropped_oldest, 7);

    let mut store = open(Overflow::DropOldest);
    store.set_destination_quota(
        "lane",
        Some(Quota {
            messages: 5,
            bytes: u64::MAX,
            overflow: Some(Overflow::Reject),
        }),
    );
    for _ in 0..5 {
        store.append(msg(10), &lane).unwrap();
    }
    assert_eq!(store.append(msg(10), &lane), Err(StoreError::Full));
    assert_eq!(store.queue_len("lane"), 5);
    assert_eq!(store.stats().dropped_oldest, 0);
}

//! The group-commit thread on the bad days: failed syncs (Linux
//! semantics), full stores, the store state the broker reports.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use super::flash::{RamFlash, BLOCK};
use super::*;

fn msg(len: usize) -> StoredMessage {
    StoredMessage {
        topic: "t".into(),
        qos: 1,
        payload: Bytes::from(vec![7u8; len]),
        ..Default::default()
    }
}

/// A current-thread runtime for driving the store thread's handle (shared
/// with the write-behind tests).
pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// D1 (fsyncgate): batch = [append A, append B]. B needs a fresh head whose
/// erase syncs first; that sync fails and drops A's unsynced page (Linux),
/// and a retried fdatasync would succeed. Neither may be acknowledged, and
/// the store never syncs or erases again.
#[test]
fn d1_a_failed_sync_inside_a_batch_fails_every_pending_request() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    store.append(msg(10), &["d".into()]).unwrap();
    store.commit().unwrap();
    // After a restart the free segments are not known to be erased, so
    // opening a new head erases one between two syncs.
    let (mut store, _) = Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).unwrap();
    store.flash_mut().fail_next_sync_dropping();
    let (go, gate) = std::sync::mpsc::channel();
    let handle = StoreHandle::spawn_gated(store, &StorageConfig::default(), Some(gate));
    let a = handle.submit_append(msg(10), vec!["d".into()]);
    let b = handle.submit_append(msg(8100), vec!["d".into()]);
    go.send(()).unwrap();
    runtime().block_on(async {
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(a.is_err(), "A was acknowledged after a failed sync: {a:?}");
        assert!(b.is_err(), "B: {b:?}");
        assert!(handle.failure().is_some());
        let before = handle.stats();
        // Later requests are refused and nothing is synced or erased.
        let c = handle.append(msg(10), vec!["d".into()]).await;
        assert!(matches!(c, Err(StoreError::Failed(_))), "{c:?}");
        handle.ack(1, "d".into()).await.unwrap();
        assert!(handle.flush().await.is_err());
        let after = handle.stats();
        assert_eq!((after.syncs, after.erases), (before.syncs, before.erases));
        // Reads still work.
        assert!(handle.read("d", None, 10).await.is_ok());
    });
}

/// W9: a failed store says so: `state()`, `$SYS/broker/store/state`, the
/// reason, and the gauge.
#[test]
fn w9_a_failed_store_reports_its_state() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    // Nothing unsynced at the start: the first sync is the append's.
    store.commit().unwrap();
    store.flash_mut().fail_next_sync_dropping();
    let handle = StoreHandle::spawn(store, &StorageConfig::default());
    assert_eq!(handle.state(), StoreState::Ok);
    runtime().block_on(async {
        assert!(handle.append(msg(10), vec!["d".into()]).await.is_err());
    });
    let StoreState::Failed(reason) = handle.state() else {
        panic!("{:?}", handle.state());
    };
    assert!(reason.contains("sync"), "{reason}");
    let topics = handle.stats().sys_topics();
    let get = |k: &str| topics.iter().find(|(t, _)| t == k).map(|(_, v)| v.clone());
    assert_eq!(get(STATE_TOPIC).as_deref(), Some("failed"));
    assert_eq!(get("$SYS/broker/store/state_code").as_deref(), Some("2"));
    assert!(get(FAILURE_TOPIC).is_some_and(|f| f.contains("sync")));
}

/// M2: acks alone do not cost an fdatasync in sync mode; they are synced by
/// the next durable batch or within `ack_sync_interval_ms`.
#[test]
fn m2_ack_only_batches_wait_for_the_next_sync() {
    let (store, _) = Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let config = StorageConfig {
        ack_sync_interval_ms: 60_000,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store, &config);
    runtime().block_on(async {
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(handle.append(msg(10), vec!["d".into()]).await.unwrap());
        }
        let before = handle.stats().syncs;
        for id in &ids {
            handle.ack(*id, "d".into()).await.unwrap();
        }
        // A read is answered after every request queued before it.
        assert!(handle.read("d", None, 10).await.unwrap().is_empty());
        assert_eq!(handle.stats().syncs, before, "an ack-only batch was synced");
        handle.flush().await.unwrap();
        assert_eq!(handle.stats().syncs, before + 1);
    });
    // With a short interval the timer syncs them without any other request.
    let (store, _) = Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let config = StorageConfig {
        ack_sync_interval_ms: 20,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store, &config);
    runtime().block_on(async {
        let id = handle.append(msg(10), vec!["d".into()]).await.unwrap();
        let before = handle.stats().syncs;
        handle.ack(id, "d".into()).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while handle.stats().syncs == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(handle.stats().syncs, before + 1, "the ack was never synced");
    });
}

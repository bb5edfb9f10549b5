//! Write-behind through the store thread (`spill_after_ms`, issue 13): a
//! message acknowledged by every destination before its deadline costs zero
//! bytes; one acknowledged after it is written and synced before its
//! answer; a destination that owes anything on flash gets its later
//! messages written at once, in order.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flash::{RamFlash, BLOCK};
use super::tests_task::runtime;
use super::*;

fn msg(id: u64) -> StoredMessage {
    StoredMessage {
        id,
        topic: "t".into(),
        qos: 1,
        payload: Bytes::from(vec![7u8; 64]),
        ..Default::default()
    }
}

const SPILL: Duration = Duration::from_millis(200);

fn handle() -> StoreHandle {
    let store = Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject)
        .unwrap()
        .0;
    let config = StorageConfig {
        spill_after_ms: SPILL.as_millis() as u64,
        ..StorageConfig::default()
    };
    StoreHandle::spawn(store, &config)
}

fn d(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn ids(h: &StoreHandle, dest: &str) -> Vec<u64> {
    h.read(dest, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect()
}

#[test]
fn all_acked_before_the_deadline_writes_zero_bytes() {
    let h = handle();
    runtime().block_on(async {
        h.flush().await.unwrap();
        let before = h.stats();
        let t0 = Instant::now();
        let reply = h.submit_append(msg(1), d(&["lane", "s"]));
        h.submit_inflight("s".into(), 1, 9, 1);
        // Held: a page read sees it.
        assert_eq!(ids(&h, "s").await, vec![1]);
        h.submit_ack(1, "lane".into());
        h.submit_ack(1, "s".into());
        assert_eq!(reply.await.unwrap().unwrap(), 1);
        assert!(t0.elapsed() < SPILL, "answered only at the deadline");
        tokio::time::sleep(SPILL * 2).await;
        h.flush().await.unwrap();
        let after = h.stats();
        assert_eq!(
            after.wear_bytes(),
            before.wear_bytes(),
            "bytes were written"
        );
        assert_eq!((after.appended, after.spared, after.spilled), (0, 1, 0));
        assert!(h.inflight_of("s").await.unwrap().is_empty());
        assert!(ids(&h, "s").await.is_empty());
    });
}

#[test]
fn an_ack_after_the_deadline_finds_the_message_written_and_synced() {
    let h = handle();
    runtime().block_on(async {
        let syncs = h.stats().syncs;
        let t0 = Instant::now();
        let reply = h.submit_append(msg(1), d(&["lane", "s"]));
        h.submit_ack(1, "s".into());
        h.submit_inflight("lane".into(), 1, 4, 1);
        assert_eq!(reply.await.unwrap().unwrap(), 1);
        assert!(t0.elapsed() >= SPILL, "answered before the deadline");
        let st = h.stats();
        assert_eq!((st.appended, st.spilled, st.spared), (1, 1, 0));
        assert!(st.syncs > syncs);
        // Written only for the destination that still owed it, with the
        // in-flight record it reported while held.
        assert_eq!(ids(&h, "lane").await, vec![1]);
        assert!(ids(&h, "s").await.is_empty());
        assert_eq!(h.inflight_of("lane").await.unwrap(), vec![(1, 4, 1)]);
        h.ack(1, "lane".into()).await.unwrap();
        assert!(ids(&h, "lane").await.is_empty());
    });
}

#[test]
fn a_spilling_lane_writes_its_later_messages_at_once_in_order() {
    let h = handle();
    runtime().block_on(async {
        let first = h.submit_append(msg(1), d(&["lane"]));
        let second = h.submit_append(msg(2), d(&["lane"]));
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        // The lane owes 1 and 2 on flash: 3 is not held.
        let t0 = Instant::now();
        h.append(msg(3), d(&["lane"])).await.unwrap();
        assert!(t0.elapsed() < SPILL, "a spilling lane's message waited");
        assert_eq!(ids(&h, "lane").await, vec![1, 2, 3]);
        assert_eq!(h.stats().appended, 3);
        // Once the lane has caught up, its messages are held again.
        for id in 1..=3 {
            h.ack(id, "lane".into()).await.unwrap();
        }
        let reply = h.submit_append(msg(4), d(&["lane"]));
        h.submit_ack(4, "lane".into());
        assert_eq!(reply.await.unwrap().unwrap(), 4);
        let st = h.stats();
        assert_eq!((st.appended, st.spared), (3, 1));
    });
}

#[test]
fn an_ack_overtaking_its_append_and_a_cleared_destination_answer_at_once() {
    let h = handle();
    runtime().block_on(async {
        h.submit_ack(7, "s".into());
        let t0 = Instant::now();
        assert_eq!(h.append(msg(7), d(&["s"])).await.unwrap(), 7);
        let reply = h.submit_append(msg(8), d(&["gone"]));
        h.submit_session_end("gone-client".into(), "gone".into());
        assert_eq!(reply.await.unwrap().unwrap(), 8);
        assert!(t0.elapsed() < SPILL);
        h.flush().await.unwrap();
        assert_eq!(h.stats().appended, 0);
    });
}

#[test]
fn zero_spill_after_writes_every_message() {
    let store = Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject)
        .unwrap()
        .0;
    let config = StorageConfig {
        spill_after_ms: 0,
        ..StorageConfig::default()
    };
    let h = StoreHandle::spawn(store, &config);
    runtime().block_on(async {
        let reply = h.submit_append(msg(1), d(&["s"]));
        h.submit_ack(1, "s".into());
        reply.await.unwrap().unwrap();
        h.flush().await.unwrap();
        assert_eq!(h.stats().appended, 1);
    });
}

//! Wear (issue 13, review Q8/M2): syncs only where a promise waits. Acks,
//! session saves and clears ride on the next durable commit or on the
//! `ack_sync_interval_ms` timer; a lost ack is only a duplicate.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

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

fn session(id: &str) -> StoredSession {
    StoredSession {
        client_id: id.into(),
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store() -> Store<RamFlash> {
    Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject)
        .unwrap()
        .0
}

/// Waits until the store thread has taken everything queued before (a read
/// is answered in order) and has published its figures.
async fn settle(handle: &StoreHandle) {
    handle.read("d", None, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// M2/Q8: a batch of acks and session saves does not fdatasync on its own;
/// the next append's commit covers them.
#[test]
fn acks_and_session_saves_do_not_sync_on_their_own() {
    let config = StorageConfig {
        ack_sync_interval_ms: 60_000,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store(), &config);
    runtime().block_on(async {
        let a = handle.append(msg(10), vec!["d".into()]).await.unwrap();
        let before = handle.stats().syncs;
        handle.ack(a, "d".into()).await.unwrap();
        drop(handle.submit_session(session("c")));
        handle.submit_qos2("c".into(), 7, true);
        handle.submit_inflight("d".into(), a, 1, 1);
        settle(&handle).await;
        assert_eq!(
            handle.stats().syncs,
            before,
            "an ack/session save/QoS 2/inflight batch synced on its own"
        );
        // The next promise's commit covers them.
        let b = handle.append(msg(10), vec!["d".into()]).await.unwrap();
        assert_eq!(handle.stats().syncs, before + 1);
        let left: Vec<u64> = handle
            .read("d", None, 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(left, vec![b]);
    });
}

/// Without further durable work, the `ack_sync_interval_ms` timer syncs the
/// acks, and a session save's answer waits for that sync.
#[test]
fn the_ack_timer_covers_acks_left_alone() {
    let config = StorageConfig {
        ack_sync_interval_ms: 100,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store(), &config);
    runtime().block_on(async {
        let a = handle.append(msg(10), vec!["d".into()]).await.unwrap();
        let before = handle.stats().syncs;
        handle.ack(a, "d".into()).await.unwrap();
        let saved = handle.submit_session(session("c"));
        let started = std::time::Instant::now();
        saved.await.unwrap().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "the session save was answered before the timer's sync"
        );
        assert_eq!(handle.stats().syncs, before + 1);
        // Nothing left to sync: the timer does not fire again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(handle.stats().syncs, before + 1);
    });
}

/// A retained message and a flush are promises: they sync at once.
#[test]
fn retained_and_flush_still_sync_at_once() {
    let config = StorageConfig {
        ack_sync_interval_ms: 60_000,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store(), &config);
    runtime().block_on(async {
        let before = handle.stats().syncs;
        handle.set_retained(msg(5)).await.unwrap();
        assert_eq!(handle.stats().syncs, before + 1);
        drop(handle.submit_session(session("c")));
        handle.flush().await.unwrap();
        assert_eq!(handle.stats().syncs, before + 2);
    });
}

/// `commit_delay_us`: a second append arriving inside the window shares the
/// first one's sync.
#[test]
fn the_commit_window_lets_one_sync_cover_two_appends() {
    let config = StorageConfig {
        commit_delay_us: 200_000,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store(), &config);
    let a = handle.submit_append(msg(10), vec!["d".into()]);
    std::thread::sleep(Duration::from_millis(20));
    let b = handle.submit_append(msg(10), vec!["d".into()]);
    runtime().block_on(async {
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    });
    assert_eq!(handle.stats().syncs, 1);
}

/// The model side: an ack that never reached a sync is lost by a power cut,
/// and that costs a duplicate (the message is still there), never a loss;
/// once a later commit covers it, the message is gone for good.
#[test]
fn a_lost_ack_is_only_a_duplicate() {
    for seed in 0..64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = store();
        let a = s.append(msg(10), &["d".into()]).unwrap();
        s.commit().unwrap();
        s.ack(a, "d").unwrap();
        let mut flash = s.into_flash();
        flash.power_cut(&mut rng);
        let (mut s, _) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
        let ids: Vec<u64> = s
            .read("d", None, 10)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![a], "seed {seed}: the unacked message was lost");
        // The ack again (the redelivered duplicate), then a durable append.
        s.ack(a, "d").unwrap();
        let b = s.append(msg(10), &["d".into()]).unwrap();
        s.commit().unwrap();
        let mut flash = s.into_flash();
        flash.power_cut(&mut rng);
        let (mut s, _) = Store::open(flash, 2 * BLOCK, Overflow::Reject).unwrap();
        let ids: Vec<u64> = s
            .read("d", None, 10)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![b], "seed {seed}");
    }
}

fn topic(stats: &StoreStats, key: &str) -> Option<String> {
    stats
        .sys_topics()
        .into_iter()
        .find(|(t, _)| t == &format!("$SYS/broker/store/{key}"))
        .map(|(_, v)| v)
}

/// Wear you can see: every byte written, erases included, per message,
/// the erase count spread and an estimate per day.
#[test]
fn wear_figures_count_erases_and_messages() {
    let mut s = store();
    for _ in 0..200 {
        let id = s.append(msg(200), &["d".into()]).unwrap();
        s.ack(id, "d").unwrap();
        s.commit().unwrap();
    }
    let mut stats = s.stats();
    stats.uptime_ms = 1000;
    assert!(stats.erases > 0, "the churn erased nothing");
    let total = stats.bytes_written + stats.erased_bytes;
    assert_eq!(topic(&stats, "wear_bytes"), Some(total.to_string()));
    assert_eq!(
        topic(&stats, "bytes_per_message"),
        Some((total / 200).to_string())
    );
    assert_eq!(
        topic(&stats, "bytes_per_day_estimate"),
        Some((total * 86_400).to_string())
    );
    let counts = &stats.erase_counts;
    let mean = counts.iter().map(|&c| u64::from(c)).sum::<u64>() as f64 / counts.len() as f64;
    assert_eq!(
        topic(&stats, "erase_count/mean"),
        Some(format!("{mean:.2}"))
    );
}

/// Erase counts of free segments survive a restart (they used to reset to
/// 0): the store thread writes them to `wear.counts` beside the image and
/// `open` takes them back.
#[test]
fn erase_counts_of_free_segments_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        dir: dir.path().to_path_buf(),
        capacity: 256 * 1024,
        segment_size: 16 * 1024,
        ..StorageConfig::default()
    };
    let before = runtime().block_on(async {
        let (handle, _) = StoreHandle::open(&config).unwrap();
        for _ in 0..400 {
            let id = handle.append(msg(300), vec!["d".into()]).await.unwrap();
            handle.ack(id, "d".into()).await.unwrap();
        }
        handle.flush().await.unwrap();
        let counts = handle.stats().erase_counts;
        drop(handle);
        counts
    });
    assert!(before.iter().any(|&c| c > 0), "{before:?}");
    // The old store thread lets go of the directory lock when it is done.
    let mut reopened = None;
    for _ in 0..100 {
        match StoreHandle::open(&config) {
            Ok((h, _)) => {
                reopened = Some(h);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let after = reopened.unwrap().stats().erase_counts;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a >= b,
            "segment {i}: erase count {b} became {a} after the restart"
        );
    }
}

/// The commit window spaces syncs `commit_delay_us` apart at steady rates
/// with concurrent publishers: after a commit that covered two appends, the
/// next one waits for the window; after one that covered a single append
/// (a lone publisher waiting for each PUBACK), and after a quiet spell, an
/// append is synced at once.
#[test]
fn the_commit_window_counts_from_the_last_sync_and_spares_a_lone_publisher() {
    let config = StorageConfig {
        commit_delay_us: 400_000,
        spill_after_ms: 0,
        ..StorageConfig::default()
    };
    let (go, gate) = std::sync::mpsc::channel();
    let handle = StoreHandle::spawn_gated(store(), &config, Some(gate));
    let a1 = handle.submit_append(msg(10), vec!["d".into()]);
    let a2 = handle.submit_append(msg(10), vec!["d".into()]);
    go.send(()).unwrap();
    runtime().block_on(async {
        a1.await.unwrap().unwrap();
        a2.await.unwrap().unwrap();
        let t1 = std::time::Instant::now();
        handle.append(msg(10), vec!["d".into()]).await.unwrap();
        assert!(
            t1.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t1.elapsed()
        );
        let t2 = std::time::Instant::now();
        handle.append(msg(10), vec!["d".into()]).await.unwrap();
        assert!(
            t2.elapsed() < Duration::from_millis(300),
            "{:?}",
            t2.elapsed()
        );
    });
}

/// A page of waiting writes ends the commit window early.
#[test]
fn the_commit_window_ends_at_a_full_page() {
    let config = StorageConfig {
        commit_delay_us: 2_000_000,
        spill_after_ms: 0,
        ..StorageConfig::default()
    };
    let (go, gate) = std::sync::mpsc::channel();
    let handle = StoreHandle::spawn_gated(store(), &config, Some(gate));
    let replies: Vec<_> = (0..4)
        .map(|_| handle.submit_append(msg(1100), vec!["d".into()]))
        .collect();
    let t0 = std::time::Instant::now();
    go.send(()).unwrap();
    runtime().block_on(async {
        for r in replies {
            r.await.unwrap().unwrap();
        }
    });
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}

//! Model-based tests of the store: random operation sequences checked
//! against a plain in-memory reference, with random power cuts on the RAM
//! flash (sequential-storage style). Plus fault injection, overflow
//! policies, the group-commit task, and the image file backend.
//!
//! The property: after any power cut and recovery, every message whose
//! append was committed and whose ack was never issued is present, intact,
//! in order; nothing whose ack was committed comes back; nothing returned is
//! corrupt; retained messages and sessions are in a state that was valid at
//! some point after the last commit.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::flash::{RamFlash, BLOCK};
use super::*;

const DESTS: [&str; 3] = ["session/a", "session/b", "bridge/cloud/0"];
const TOPICS: [&str; 3] = ["r/1", "r/2", "r/3"];

fn scale() -> u64 {
    std::env::var("EDGEMQ_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    append_committed: bool,
    ack_issued: bool,
}

#[derive(Default)]
struct Model {
    payloads: HashMap<u64, Bytes>,
    queues: HashMap<&'static str, BTreeMap<u64, Entry>>,
    /// Acceptable states per retained topic since the last commit (None = absent).
    retained: HashMap<&'static str, Vec<Option<Bytes>>>,
    sessions: HashMap<&'static str, Vec<Option<u32>>>,
}

impl Model {
    fn commit(&mut self) {
        for q in self.queues.values_mut() {
            q.retain(|_, e| !e.ack_issued);
            for e in q.values_mut() {
                e.append_committed = true;
            }
        }
        for c in self.retained.values_mut() {
            let last = c.last().cloned().flatten();
            *c = vec![last];
        }
        for c in self.sessions.values_mut() {
            let last = c.last().copied().flatten();
            *c = vec![last];
        }
    }
}

fn message(rng: &mut StdRng, topic: &str) -> StoredMessage {
    let len = rng.random_range(0..400);
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    StoredMessage {
        topic: topic.to_string(),
        qos: 1,
        payload: Bytes::from(payload),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    }
}

fn session(client: &str, value: u32) -> StoredSession {
    StoredSession {
        client_id: client.to_string(),
        v5: true,
        expiry_interval_secs: value,
        subscriptions: vec![StoredSubscription {
            filter: "a/#".into(),
            qos: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Checks the recovered store against the model and reconciles the model
/// with what survived (lost uncommitted work is allowed).
fn verify_and_reconcile(store: &mut Store<RamFlash>, model: &mut Model) {
    for dest in DESTS {
        let got = store.read(dest, None, usize::MAX).unwrap();
        let ids: Vec<u64> = got.iter().map(|m| m.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{dest} out of order: {ids:?}"
        );
        let q = model.queues.entry(dest).or_default();
        for m in &got {
            assert!(q.contains_key(&m.id), "{dest}: unexpected message {}", m.id);
            assert_eq!(
                Some(&m.payload),
                model.payloads.get(&m.id),
                "{dest}: corrupt message {}",
                m.id
            );
        }
        for (id, e) in q.iter() {
            if e.append_committed && !e.ack_issued {
                assert!(ids.contains(id), "{dest}: committed message {id} lost");
            }
        }
        q.retain(|id, _| ids.contains(id));
        for e in q.values_mut() {
            *e = Entry {
                append_committed: true,
                ack_issued: false,
            };
        }
    }
    let retained: HashMap<String, Bytes> = store
        .retained()
        .unwrap()
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect();
    for topic in TOPICS {
        let actual = retained.get(topic).cloned();
        let candidates = model.retained.entry(topic).or_insert_with(|| vec![None]);
        assert!(
            candidates.contains(&actual),
            "retained {topic}: {actual:?} not in {candidates:?}"
        );
        *candidates = vec![actual];
    }
    let sessions: HashMap<String, u32> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| (s.client_id, s.expiry_interval_secs))
        .collect();
    for client in ["c1", "c2"] {
        let actual = sessions.get(client).copied();
        let candidates = model.sessions.entry(client).or_insert_with(|| vec![None]);
        assert!(
            candidates.contains(&actual),
            "session {client}: {actual:?} not in {candidates:?}"
        );
        *candidates = vec![actual];
    }
}

fn run_sequence(seed: u64, ops: usize, overflow: Overflow) {
    let mut rng = StdRng::seed_from_u64(seed);
    let flash = RamFlash::new(16 * BLOCK);
    let (mut store, _) = Store::open(flash, 2 * BLOCK, overflow).unwrap();
    let mut model = Model::default();
    for _ in 0..ops {
        match rng.random_range(0..100) {
            0..=39 => {
                let n = rng.random_range(1..=DESTS.len());
                let dests: Vec<&'static str> = DESTS
                    .iter()
                    .copied()
                    .filter(|_| rng.random_bool(0.6))
                    .take(n)
                    .collect();
                if dests.is_empty() {
                    continue;
                }
                let msg = message(&mut rng, "t");
                let payload = msg.payload.clone();
                let owned: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
                let before: HashMap<&str, Vec<u64>> = DESTS
                    .iter()
                    .map(|d| {
                        (
                            *d,
                            store
                                .read(d, None, usize::MAX)
                                .unwrap()
                                .iter()
                                .map(|m| m.id)
                                .collect(),
                        )
                    })
                    .collect();
                match store.append(msg, &owned) {
                    Ok(id) => {
                        model.payloads.insert(id, payload);
                        for d in &dests {
                            model.queues.entry(d).or_default().insert(
                                id,
                                Entry {
                                    append_committed: false,
                                    ack_issued: false,
                                },
                            );
                        }
                    }
                    Err(StoreError::Full) => {}
                    Err(e) => panic!("append failed: {e}"),
                }
                if overflow == Overflow::DropOldest {
                    // Dropped messages are acks the store issued itself.
                    for d in DESTS {
                        let now: Vec<u64> = store
                            .read(d, None, usize::MAX)
                            .unwrap()
                            .iter()
                            .map(|m| m.id)
                            .collect();
                        for id in &before[d] {
                            if !now.contains(id) {
                                if let Some(e) = model.queues.entry(d).or_default().get_mut(id) {
                                    e.ack_issued = true;
                                }
                            }
                        }
                    }
                }
            }
            40..=64 => {
                let d = DESTS[rng.random_range(0..DESTS.len())];
                let q = model.queues.entry(d).or_default();
                let live: Vec<u64> = q
                    .iter()
                    .filter(|(_, e)| !e.ack_issued)
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&id) = live.get(rng.random_range(0..live.len().max(1))) {
                    match store.ack(id, d) {
                        Ok(found) => {
                            assert!(found, "ack of live message {id} for {d} found nothing")
                        }
                        Err(StoreError::Full) => continue,
                        Err(e) => panic!("ack failed: {e}"),
                    }
                    if let Some(e) = q.get_mut(&id) {
                        e.ack_issued = true;
                    }
                }
            }
            65..=72 => {
                let topic = TOPICS[rng.random_range(0..TOPICS.len())];
                let msg = message(&mut rng, topic);
                let payload = msg.payload.clone();
                if store.set_retained(msg).is_ok() {
                    model
                        .retained
                        .entry(topic)
                        .or_insert_with(|| vec![None])
                        .push(Some(payload));
                }
            }
            73..=75 => {
                let topic = TOPICS[rng.random_range(0..TOPICS.len())];
                if store.clear_retained(topic).is_ok() {
                    model
                        .retained
                        .entry(topic)
                        .or_insert_with(|| vec![None])
                        .push(None);
                }
            }
            76..=80 => {
                let client = if rng.random_bool(0.5) { "c1" } else { "c2" };
                let v = rng.random_range(0..1000);
                if store.save_session(session(client, v)).is_ok() {
                    model
                        .sessions
                        .entry(client)
                        .or_insert_with(|| vec![None])
                        .push(Some(v));
                }
            }
            81..=82 => {
                let client = if rng.random_bool(0.5) { "c1" } else { "c2" };
                if store.remove_session(client).is_ok() {
                    model
                        .sessions
                        .entry(client)
                        .or_insert_with(|| vec![None])
                        .push(None);
                }
            }
            83..=94 => {
                store.commit().unwrap();
                model.commit();
            }
            95..=97 => {
                let mut flash = store.into_flash();
                flash.power_cut(&mut rng);
                let (s, _) = Store::open(flash, 2 * BLOCK, overflow).unwrap();
                store = s;
                verify_and_reconcile(&mut store, &mut model);
            }
            _ => {
                store.commit().unwrap();
                model.commit();
                let (s, _) = Store::open(store.into_flash(), 2 * BLOCK, overflow).unwrap();
                store = s;
                verify_and_reconcile(&mut store, &mut model);
            }
        }
    }
    let mut flash = store.into_flash();
    flash.power_cut(&mut rng);
    let (mut s, _) = Store::open(flash, 2 * BLOCK, overflow).unwrap();
    verify_and_reconcile(&mut s, &mut model);
}

#[test]
fn model_with_power_cuts_reject() {
    for seed in 0..scale() * 30 {
        run_sequence(seed, 300, Overflow::Reject);
    }
}

#[test]
fn model_with_power_cuts_drop_oldest() {
    for seed in 1000..1000 + scale() * 10 {
        run_sequence(seed, 300, Overflow::DropOldest);
    }
}

#[test]
fn full_store_rejects_then_accepts_after_acks() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let dest = vec!["session/x".to_string()];
    let mut ids = Vec::new();
    let err = loop {
        let msg = StoredMessage {
            topic: "t".into(),
            payload: Bytes::from(vec![7u8; 500]),
            ..Default::default()
        };
        match store.append(msg, &dest) {
            Ok(id) => ids.push(id),
            Err(e) => break e,
        }
        store.commit().unwrap();
    };
    assert_eq!(err, StoreError::Full);
    assert!(ids.len() > 10, "only {} messages fit", ids.len());
    assert_eq!(store.stats().rejected, 1);
    for id in &ids[..ids.len() / 2] {
        assert!(store.ack(*id, &dest[0]).unwrap());
    }
    store.commit().unwrap();
    let msg = StoredMessage {
        topic: "t".into(),
        payload: Bytes::from(vec![1u8; 500]),
        ..Default::default()
    };
    store.append(msg, &dest).unwrap();
    store.commit().unwrap();
    assert_eq!(store.queue_len(&dest[0]), ids.len() - ids.len() / 2 + 1);
}

#[test]
fn drop_oldest_keeps_newest_and_counts() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::DropOldest).unwrap();
    let dest = vec!["lane".to_string()];
    for i in 0..200u32 {
        let msg = StoredMessage {
            topic: "t".into(),
            payload: Bytes::from(i.to_be_bytes().repeat(100)),
            ..Default::default()
        };
        store.append(msg, &dest).unwrap();
        store.commit().unwrap();
    }
    let stats = store.stats();
    assert!(stats.dropped_oldest > 0);
    let kept = store.read("lane", None, usize::MAX).unwrap();
    assert_eq!(kept.len() as u64 + stats.dropped_oldest, 200);
    let last = kept.last().unwrap();
    assert_eq!(&last.payload[..4], &199u32.to_be_bytes());
}

#[test]
fn reads_resume_after_a_position() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    let dests = vec!["a".to_string(), "b".to_string()];
    let ids: Vec<u64> = (0..10)
        .map(|i| {
            store
                .append(
                    StoredMessage {
                        topic: format!("t/{i}"),
                        ..Default::default()
                    },
                    &dests,
                )
                .unwrap()
        })
        .collect();
    let page = store.read("a", Some(ids[3]), 4).unwrap();
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[4..8].to_vec()
    );
    assert!(store.ack(ids[5], "a").unwrap());
    assert!(!store.ack(ids[5], "a").unwrap(), "a second ack is a no-op");
    assert_eq!(store.queue_len("a"), 9);
    assert_eq!(store.queue_len("b"), 10);
}

#[test]
fn sync_failure_is_sticky_in_the_task() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    // Nothing unsynced at the start: the first failing sync is the append's.
    store.commit().unwrap();
    store.flash_mut().set_fail_sync(true);
    let config = StorageConfig::default();
    let handle = StoreHandle::spawn(store, &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let msg = StoredMessage {
            topic: "t".into(),
            ..Default::default()
        };
        let first = handle.append(msg.clone(), vec!["d".into()]).await;
        assert!(matches!(first, Err(StoreError::Flash(_))), "{first:?}");
        let second = handle.append(msg, vec!["d".into()]).await;
        assert!(matches!(second, Err(StoreError::Failed(_))), "{second:?}");
        assert!(handle.failure().is_some());
        // Reads still work on a failed store.
        assert!(handle.read("d", None, 10).await.is_ok());
    });
}

#[test]
fn group_commit_batches_many_appends_per_sync() {
    let (store, _) = Store::open(RamFlash::new(64 * BLOCK), 4 * BLOCK, Overflow::Reject).unwrap();
    let handle = StoreHandle::spawn(store, &StorageConfig::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                let msg = StoredMessage {
                    topic: format!("t/{i}"),
                    payload: Bytes::from_static(b"x"),
                    ..Default::default()
                };
                h.append(msg, vec!["d".into()]).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        handle.flush().await.unwrap();
        let stats = handle.stats();
        assert_eq!(stats.appended, 200);
        assert!(stats.syncs < 200, "{} syncs for 200 appends", stats.syncs);
        assert_eq!(handle.read("d", None, 1000).await.unwrap().len(), 200);
    });
}

#[test]
fn file_flash_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        dir: dir.path().to_path_buf(),
        capacity: 256 * 1024,
        segment_size: 16 * 1024,
        ..StorageConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let first_id = rt.block_on(async {
        let (handle, report) = StoreHandle::open(&config).unwrap();
        assert_eq!(report.messages, 0);
        let msg = StoredMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        };
        let id = handle
            .append(msg.clone(), vec!["session/c".into()])
            .await
            .unwrap();
        handle.set_retained(msg).await.unwrap();
        handle.save_session(session("c", 60)).await.unwrap();
        id
    });
    // The handle is gone: reopen the same file, as after a restart. The
    // store thread holds the directory's lock until its last write, so the
    // reopen waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (handle, report) = loop {
            match StoreHandle::open(&config) {
                Ok(opened) => break opened,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("in use"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            (report.messages, report.retained, report.sessions),
            (1, 1, 1)
        );
        let got = handle.read("session/c", None, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].id, &got[0].payload[..]), (first_id, &b"hello"[..]));
        assert_eq!(handle.sessions().await.unwrap()[0].expiry_interval_secs, 60);
    });
}

#[test]
fn incoming_qos2_state_survives_reopen_and_is_cleared_with_the_session() {
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    store.save_session(session("c1", 60)).unwrap();
    store.set_qos2("c1", 7, true).unwrap();
    store.set_qos2("c1", 8, true).unwrap();
    store.set_qos2("c1", 7, false).unwrap();
    store.commit().unwrap();
    let (mut store, _) = Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).unwrap();
    assert_eq!(store.qos2_pending().get("c1"), Some(&vec![8]));
    store.remove_session("c1").unwrap();
    store.commit().unwrap();
    let (store, _) = Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).unwrap();
    assert!(store.qos2_pending().is_empty());
}

#[test]
fn interval_mode_answers_before_syncing_and_syncs_within_the_interval() {
    // A flash whose sync always fails tells the two modes apart without any
    // timing assumption: in interval mode appends are answered before the
    // sync (so they succeed), and the periodic sync then fails and makes
    // the failure sticky.
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).unwrap();
    // Nothing unsynced at the start: a slow runner (qemu) must not see the
    // periodic sync fail before the append arrives.
    store.commit().unwrap();
    store.flash_mut().set_fail_sync(true);
    let config = StorageConfig {
        durability: Durability::Interval,
        sync_interval_ms: 20,
        ..StorageConfig::default()
    };
    let handle = StoreHandle::spawn(store, &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let msg = StoredMessage {
            topic: "t".into(),
            ..Default::default()
        };
        handle
            .append(msg, vec!["d".into()])
            .await
            .expect("answered before the sync");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while handle.failure().is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(handle.failure().is_some(), "the periodic sync never ran");
        let msg = StoredMessage {
            topic: "t".into(),
            ..Default::default()
        };
        assert!(matches!(
            handle.append(msg, vec!["d".into()]).await,
            Err(StoreError::Failed(_))
        ));
    });
}

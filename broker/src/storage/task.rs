//! Group commit: one thread owns the store; async callers talk to it through
//! a bounded channel.
//!
//! The thread takes every request that is queued, applies them in order,
//! syncs the flash once, and only then answers the requests that needed
//! durability. Under load one fdatasync covers hundreds of messages; with a
//! single publisher it costs one sync per message, as it must. Reads are
//! answered at once.
//!
//! Wear (issue 13): in `sync` mode only a promise causes a sync: an
//! append, a retained set or clear, a flush. Acks, QoS 2 state, in-flight
//! records, session saves and clears are written at once but synced by the
//! next such commit, or by the `ack_sync_interval_ms` timer when none comes;
//! session saves are answered after that sync. Losing them in a crash costs
//! a duplicate or an older session state, never an acknowledged message.
//! `commit_delay_us` lets a promised commit gather more requests first
//! (`task/wear.rs`). Write-behind (`spill_after_ms`, `task/behind.rs` and
//! `task/write_behind.rs`) holds an append in RAM until its destinations
//! acknowledge it (never written) or its deadline (written, then synced).
//!
//! Invariants:
//! - A reply that promises durability is sent only after a sync that
//!   covered it returned Ok, and no program, erase or sync failed in
//!   between (D1).
//! - After any failed program, erase or sync the store is failed for the
//!   rest of the process (`StoreState::Failed`): every request still
//!   waiting in the batch gets an error, later durable requests are
//!   refused, nothing is written, erased or synced again (not even at
//!   exit), reads still work. The broker keeps running and reports it
//!   (`/healthz` 503, `$SYS/broker/store/state`); a restart recovers from
//!   what is really on flash.
//! - `Full` answers one request and never fails the store; the published
//!   state is `full` until enough space is freed.
//! - Figures (`stats`, `state`) are published before the answers of a
//!   batch, so whoever is answered sees the state that answer came from.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::flash::{Durable, FileFlash};
use super::{
    Durability, RecoveryReport, StorageConfig, Store, StoreError, StoreStats, StoredMessage,
    StoredSession,
};

mod behind;
mod requests;
mod wear;
mod write_behind;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Append(StoredMessage, Vec<String>, Reply<u64>),
    Ack(u64, String),
    Read(String, Option<u64>, usize, Reply<Vec<StoredMessage>>),
    SetRetained(StoredMessage, Reply<()>),
    ClearRetained(String, Reply<()>),
    SaveSession(StoredSession, Reply<()>),
    RemoveSession(String, Reply<()>),
    Retained(Reply<Vec<StoredMessage>>),
    Sessions(Reply<Vec<StoredSession>>),
    Destinations(Reply<Vec<String>>),
    Flush(Reply<()>),
    /// A sync of what is written, leaving held messages held.
    Sync(Reply<()>),
    ClearDestination(String),
    Qos2(String, u16, bool),
    Qos2Pending(Reply<std::collections::HashMap<String, Vec<u16>>>),
    SetQuota(String, Option<super::Quota>),
    Inflight(String, u64, u16, u8),
    InflightOf(String, Reply<Vec<(u64, u16, u8)>>),
}

/// A cloneable handle to the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: flume::Sender<Request>,
    stats: Arc<Mutex<StoreStats>>,
    failed: Arc<Mutex<Option<String>>>,
    durability: Durability,
}

/// What `/healthz` and `$SYS/broker/store/state` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreState {
    /// Accepting durable work.
    Ok,
    /// Refusing new messages for lack of space (not sticky: acks free it).
    Full,
    /// A write or sync failed: durable work is refused until a restart.
    Failed(String),
}

impl StoreState {
    /// `ok`, `full` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Full => "full",
            StoreState::Failed(_) => "failed",
        }
    }

    /// 0 ok, 1 full, 2 failed (the /metrics gauge).
    pub fn code(&self) -> u8 {
        match self {
            StoreState::Ok => 0,
            StoreState::Full => 1,
            StoreState::Failed(_) => 2,
        }
    }
}

/// Answers that wait for the next sync.
enum Pending {
    Id(Reply<u64>, u64),
    Unit(Reply<()>),
    /// A flush: waits for a sync in every mode.
    Flush(Reply<()>),
    /// No promise waits (a session save or removal): answered after the
    /// next sync, which it never causes on its own.
    Lazy(Reply<()>),
    /// Answered Ok at the end of the batch, sync or not (write-behind: a
    /// held message every destination acknowledged, never written).
    Now(Reply<u64>, u64),
    /// Already answered.
    Done,
}

fn answer(p: Pending, result: Result<(), StoreError>) {
    match p {
        Pending::Id(tx, id) => drop(tx.send(result.map(|()| id))),
        Pending::Now(tx, id) => drop(tx.send(Ok(id))),
        Pending::Unit(tx) | Pending::Flush(tx) | Pending::Lazy(tx) => drop(tx.send(result)),
        Pending::Done => {}
    }
}

impl StoreHandle {
    /// Opens (or creates) `dir/store.img`, recovers it and starts the store
    /// thread. Not for `Durability::Memory`, which needs no store. The data
    /// directory is locked for the life of the process (a second edgemq on
    /// it refuses to start) and fsynced on every open (M4).
    pub fn open(config: &StorageConfig) -> Result<(StoreHandle, RecoveryReport), StoreError> {
        config
            .validate()
            .map_err(|(key, m)| StoreError::Config(format!("storage.{key} {m}")))?;
        let lock = super::dir::prepare(&config.dir)?;
        let image = image_path(&config.dir);
        super::dir::check_capacity(&image, config.capacity)?;
        let flash = FileFlash::open(&image, config.capacity as usize)
            .map_err(|e| StoreError::Flash(e.to_string()))?;
        super::dir::sync_dir(&config.dir)?;
        let (mut store, report) =
            Store::open(flash, config.segment_size as usize, config.overflow)?;
        store.set_default_quota(config.default_quota());
        let wear = super::wear_file::path(&config.dir);
        if let Some(saved) = super::wear_file::load(&wear, store.erase_counts().len()) {
            store.seed_erase_counts(&saved);
        }
        let worker = Self::spawn_inner(store, config, None, Some((lock, wear)));
        Ok((worker, report))
    }

    /// Starts the store thread over an opened store (tests pass a RAM flash).
    pub fn spawn<F: Durable + Send + 'static>(
        store: Store<F>,
        config: &StorageConfig,
    ) -> StoreHandle {
        Self::spawn_gated(store, config, None)
    }

    /// [`StoreHandle::spawn`], but the thread takes no request before
    /// `gate` fires (tests queue a whole batch first).
    pub(crate) fn spawn_gated<F: Durable + Send + 'static>(
        store: Store<F>,
        config: &StorageConfig,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    ) -> StoreHandle {
        Self::spawn_inner(store, config, gate, None)
    }

    /// The store thread holds `lock` (the data directory's) until it has
    /// made its last write, after every handle is gone, and keeps the erase
    /// counts in the file beside it (`wear_file`).
    fn spawn_inner<F: Durable + Send + 'static>(
        store: Store<F>,
        config: &StorageConfig,
        gate: Option<std::sync::mpsc::Receiver<()>>,
        dir: Option<(std::fs::File, std::path::PathBuf)>,
    ) -> StoreHandle {
        let (lock, wear_path) = dir.unzip();
        let (tx, rx) = flume::bounded(config.queue_capacity);
        let handle = StoreHandle {
            tx,
            stats: Arc::new(Mutex::new(store.stats())),
            failed: Arc::new(Mutex::new(None)),
            durability: config.durability,
        };
        let worker = Worker {
            store,
            rx,
            stats: handle.stats.clone(),
            failed: handle.failed.clone(),
            durability: config.durability,
            interval: Duration::from_millis(config.sync_interval_ms.max(1)),
            ack_sync: Duration::from_millis(config.ack_sync_interval_ms.max(1)),
            commit_delay: Duration::from_micros(config.commit_delay_us),
            started: Instant::now(),
            wear_path,
            saved_erases: 0,
            last_promises: 2,
            behind: behind::Behind::new(
                Duration::from_millis(config.spill_after_ms),
                config.queue_capacity,
            ),
            spared: 0,
            spilled: 0,
        };
        let spawned = thread::Builder::new()
            .name("edgemq-store".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                worker.run();
                drop(lock);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the store thread");
            if let Ok(mut f) = handle.failed.lock() {
                *f = Some(format!("store thread did not start: {e}"));
            }
        }
        handle
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Latest figures (updated after every batch).
    pub fn stats(&self) -> StoreStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The sticky failure, if the store has failed.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Ok, full or failed (with the reason), as of the last batch.
    pub fn state(&self) -> StoreState {
        match self.failure() {
            Some(reason) => StoreState::Failed(reason),
            None if self.stats().full => StoreState::Full,
            None => StoreState::Ok,
        }
    }
}

struct Worker<F: Durable> {
    store: Store<F>,
    rx: flume::Receiver<Request>,
    stats: Arc<Mutex<StoreStats>>,
    failed: Arc<Mutex<Option<String>>>,
    durability: Durability,
    interval: Duration,
    /// Longest wait of an unsynced write no promise waits for.
    ack_sync: Duration,
    /// Commit window of a promised commit.
    commit_delay: Duration,
    started: Instant,
    /// Where erase counts are kept (`wear_file`), for a store on a file.
    wear_path: Option<std::path::PathBuf>,
    /// `store.erases()` when the counts were last written.
    saved_erases: u64,
    /// Promises the previous commit answered: the commit window gathers
    /// only after one that covered two or more (concurrent publishers), so
    /// a lone publisher waiting for each PUBACK is never held back.
    last_promises: usize,
    /// Write-behind: messages held until acked or their deadline.
    behind: behind::Behind<Reply<u64>>,
    /// Held messages never written / written at their deadline.
    spared: u64,
    spilled: u64,
}

/// Most requests handled per sync: bounds PUBACK latency under a flood.
const MAX_BATCH: usize = 4096;

impl<F: Durable> Worker<F> {
    fn run(mut self) {
        let mut last_sync = Instant::now();
        // Since when writes no promise waits for are unsynced (sync mode).
        let mut lazy_since: Option<Instant> = None;
        let mut deferred: Vec<Pending> = Vec::new();
        loop {
            let wait = match self.durability {
                Durability::Interval => Some(self.interval),
                _ => lazy_since.map(|t| self.ack_sync.saturating_sub(t.elapsed())),
            };
            let held = self
                .behind
                .next_deadline()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let wait = match (wait, held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wait {
                Some(wait) => match self.rx.recv_timeout(wait) {
                    Ok(r) => Some(r),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                },
            };
            let mut pending = Vec::new();
            if let Some(first) = first {
                self.handle(first, &mut pending);
                while pending.len() < MAX_BATCH {
                    match self.rx.try_recv() {
                        Ok(r) => self.handle(r, &mut pending),
                        Err(_) => break,
                    }
                }
            }
            self.spill_due(&mut pending);
            // Held messages acknowledged by everyone need no sync.
            let (now, mut pending): (Vec<Pending>, Vec<Pending>) = pending
                .into_iter()
                .partition(|p| matches!(p, Pending::Now(..)));
            let interval = self.durability == Durability::Interval;
            if interval {
                // Interval mode answers before the sync (the documented
                // risk); only a flush waits for one.
                pending.retain_mut(|p| match p {
                    Pending::Flush(_) => true,
                    _ => {
                        answer(std::mem::replace(p, Pending::Done), Ok(()));
                        false
                    }
                });
            }
            let due = if interval {
                !pending.is_empty() || last_sync.elapsed() >= self.interval
            } else {
                let promise = pending.iter().any(|p| !matches!(p, Pending::Lazy(_)));
                if promise && !self.commit_delay.is_zero() && self.last_promises >= 2 {
                    self.gather(&mut pending, last_sync);
                }
                promise || lazy_since.is_some_and(|t| t.elapsed() >= self.ack_sync)
            };
            // A batch that only holds writes nobody waits for does not cost
            // a sync of its own (M2: at sensor rates an ack-only fdatasync
            // doubled the writes): the next durable batch or the
            // ack_sync_interval_ms timer covers it. A lost ack is a duplicate
            // after a crash, never a loss.
            if !due {
                // Only lazy answers: they wait for the sync that covers them.
                deferred.append(&mut pending);
                if self.store.has_unsynced_writes() || !deferred.is_empty() {
                    lazy_since.get_or_insert_with(Instant::now);
                }
            }
            if due {
                pending.append(&mut deferred);
                lazy_since = None;
                // A failed store never commits again (D1): everything still
                // waiting for this batch's sync is refused, whatever a later
                // fdatasync would claim.
                let result = match self.store.failure() {
                    Some(f) => Err(StoreError::Failed(f.to_string())),
                    None => self.store.commit(),
                };
                last_sync = Instant::now();
                let promises = pending
                    .iter()
                    .filter(|p| matches!(p, Pending::Id(..) | Pending::Unit(_)))
                    .count();
                if promises > 0 {
                    self.last_promises = promises;
                }
                if let Err(e) = &result {
                    self.fail(e);
                }
                self.save_erase_counts();
                // Figures first: whoever is answered sees this batch's state.
                self.publish_stats();
                for p in pending {
                    answer(p, result.clone());
                }
            } else {
                self.publish_stats();
            }
            for p in now {
                answer(p, Ok(()));
            }
        }
        self.spill_all(&mut deferred);
        let result = match self.store.failure() {
            Some(f) => Err(StoreError::Failed(f.to_string())),
            None => self.store.commit(),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "final store sync failed");
        }
        self.save_erase_counts();
        self.publish_stats();
        for p in deferred {
            answer(p, result.clone());
        }
    }

    fn publish_stats(&self) {
        let mut stats = self.store.stats();
        stats.uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        stats.spared = self.spared;
        stats.spilled = self.spilled;
        stats.failure = self.failed.lock().ok().and_then(|f| f.clone());
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
    }

    /// Records the sticky failure for the handle (and $SYS, /healthz). The
    /// store itself refuses every write, erase and sync from then on.
    fn fail(&mut self, e: &StoreError) {
        let reason = match self.store.failure() {
            Some(f) => f.to_string(),
            None => e.to_string(),
        };
        if let Ok(mut f) = self.failed.lock() {
            if f.is_none() {
                tracing::error!(error = %reason, "store failed; refusing durable writes until restart");
                *f = Some(reason);
            }
        }
        self.publish_stats();
    }

    /// An error of a request nobody waits for (ack, QoS 2 state, clear):
    /// sticky only when the store failed; `Full` is logged and counted.
    fn background_error(&mut self, what: &'static str, e: &StoreError) {
        if self.store.failure().is_some() {
            self.fail(e);
        } else {
            tracing::warn!(error = %e, request = what, "store request refused");
        }
    }

    fn failure(&self) -> Option<StoreError> {
        self.failed
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .map(StoreError::Failed)
    }

    /// Applies one request; durable replies are parked in `pending`.
    fn handle(&mut self, req: Request, pending: &mut Vec<Pending>) {
        let failure = self.failure();
        match req {
            Request::Append(msg, dests, tx) => match failure {
                Some(f) => drop(tx.send(Err(f))),
                None => self.append_or_hold(msg, dests, tx, pending),
            },
            Request::Ack(id, dest) => {
                if failure.is_none() {
                    self.ack(id, &dest, pending);
                }
            }
            Request::SetRetained(msg, tx) => {
                self.unit(failure, tx, pending, |s| s.set_retained(msg))
            }
            Request::ClearRetained(topic, tx) => {
                self.unit(failure, tx, pending, |s| s.clear_retained(&topic))
            }
            Request::SaveSession(sess, tx) => {
                self.lazy(failure, tx, pending, |s| s.save_session(sess))
            }
            Request::RemoveSession(id, tx) => {
                self.lazy(failure, tx, pending, |s| s.remove_session(&id))
            }
            Request::Flush(tx) => match failure {
                Some(f) => drop(tx.send(Err(f))),
                None => {
                    // Everything sent before: held messages too.
                    self.spill_all(pending);
                    pending.push(Pending::Flush(tx));
                }
            },
            Request::Sync(tx) => match failure {
                Some(f) => drop(tx.send(Err(f))),
                None => pending.push(Pending::Flush(tx)),
            },
            Request::Qos2(client, pkid, pending) => {
                if failure.is_none() {
                    if let Err(e) = self.store.set_qos2(&client, pkid, pending) {
                        self.background_error("qos2", &e);
                    }
                }
            }
            Request::Qos2Pending(tx) => drop(tx.send(Ok(self.store.qos2_pending()))),
            Request::SetQuota(dest, quota) => self.store.set_destination_quota(&dest, quota),
            Request::Inflight(dest, id, pkid, stage) => {
                if failure.is_none() {
                    self.inflight(&dest, id, pkid, stage);
                }
            }
            Request::InflightOf(dest, tx) => drop(tx.send(Ok(self.store.inflight_of(&dest)))),
            Request::ClearDestination(dest) => {
                self.clear_held(&dest, pending);
                if failure.is_none() {
                    if let Err(e) = self.store.clear_destination(&dest) {
                        self.background_error("clear destination", &e);
                    }
                }
            }
            Request::Read(dest, after, max, tx) => drop(tx.send(self.read(&dest, after, max))),
            Request::Retained(tx) => drop(tx.send(self.store.retained())),
            Request::Sessions(tx) => drop(tx.send(self.store.sessions())),
            Request::Destinations(tx) => drop(tx.send(Ok(self.store.destinations()))),
        }
    }

    /// Runs a write whose reply waits for the batch's sync.
    fn unit(
        &mut self,
        failure: Option<StoreError>,
        tx: Reply<()>,
        pending: &mut Vec<Pending>,
        op: impl FnOnce(&mut Store<F>) -> Result<(), StoreError>,
    ) {
        self.queue_reply(failure, tx, pending, Pending::Unit, op);
    }

    /// Like `unit`, for a write no promise waits for (answered after the
    /// next sync, which it does not cause).
    fn lazy(
        &mut self,
        failure: Option<StoreError>,
        tx: Reply<()>,
        pending: &mut Vec<Pending>,
        op: impl FnOnce(&mut Store<F>) -> Result<(), StoreError>,
    ) {
        self.queue_reply(failure, tx, pending, Pending::Lazy, op);
    }

    fn queue_reply(
        &mut self,
        failure: Option<StoreError>,
        tx: Reply<()>,
        pending: &mut Vec<Pending>,
        wait: fn(Reply<()>) -> Pending,
        op: impl FnOnce(&mut Store<F>) -> Result<(), StoreError>,
    ) {
        if let Some(f) = failure {
            drop(tx.send(Err(f)));
            return;
        }
        match op(&mut self.store) {
            Ok(()) => pending.push(wait(tx)),
            Err(e) => self.write_error(e, tx),
        }
    }

    /// `Full`, `TooLarge` and the like are answers; a flash error has made
    /// the store failed (sticky).
    fn write_error<T>(&mut self, e: StoreError, tx: Reply<T>) {
        if self.store.failure().is_some() {
            self.fail(&e);
        } else if e == StoreError::Full {
            // Whoever sees the refusal sees the "full" state too.
            self.publish_stats();
        }
        drop(tx.send(Err(e)));
    }
}

/// Path of the image file inside a storage directory.
pub fn image_path(dir: &Path) -> std::path::PathBuf {
    dir.join("store.img")
}

//! The bounded per-session queue between the router and a connection.
//!
//! Publishers push [`Delivery`]s; the connection task that owns the session
//! drains them when its inflight window has room. One queue serves both the
//! "outbound queue" of an online client and the "offline queue" of a
//! persistent session, which keeps per-session order without handing
//! messages between two queues. The policy (docs/ARCHITECTURE.md):
//!
//! * below `outbound_capacity` entries, an online session takes everything;
//! * beyond it, QoS 0 is dropped, QoS 1/2 of a persistent session are kept
//!   up to `max_queued_messages` more (and `max_queued_bytes`), and a clean
//!   session drops;
//! * an offline persistent session keeps QoS 1/2 up to the same bounds and
//!   does not queue QoS 0 (as Mosquitto's default).
//!
//! Every drop is returned to the caller as a [`DropReason`] to be counted.
//!
//! With a durable store (`MailboxLimits::spill`), a persistent session's
//! QoS 1/2 overflow is not dropped but *spilled*: the message is only in the
//! store (its publisher's PUBACK waits for that), and from then on every
//! QoS 1/2 delivery for the session goes to the store only, so order is
//! kept. The connection pages spilled messages back in with [`Mailbox::refill`]
//! when the queue runs empty; RAM stays bounded by the limits above.
//!
//! Flow control (docs/ARCHITECTURE.md, "a full queue slows the producer"):
//! a publisher's connection pushes with [`Mailbox::offer`], which does not
//! drop a delivery an online session has no room for but hands it back
//! ([`Refusal::Full`]); the publisher keeps it, withholds its PUBACK and
//! retries when the queue reports room ([`Mailbox::wait_room`], woken by
//! `drain` only when an offer was refused since the last wake-up). The
//! queue remembers since when it has been full without progress; once that
//! exceeds `slow_consumer_timeout`, an offer no longer waits: QoS 0 is
//! dropped, and QoS 1/2 to a clean session is dropped and the session is
//! *evicted* ([`Mailbox::evicted`] completes, its connection closes with
//! v5 reason 0x97). Persistent sessions with a store spill instead and so
//! never make a publisher wait. Invariants: the queue never exceeds its
//! bounds; a refused offer is never lost (it is returned); a closed
//! mailbox (session ended) refuses nothing and keeps nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::message::Delivery;
use crate::protocol::QoS;

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// QoS 0 and the outbound queue is full.
    QueueFullQos0,
    /// QoS 1/2 for a clean session and the outbound queue is full.
    QueueFull,
    /// QoS 1/2 for a persistent session beyond max_queued_messages/bytes.
    SessionQueueFull,
    /// QoS 0 for an offline session.
    Offline,
    /// QoS 1/2 for a clean session that stayed full beyond the slow
    /// consumer timeout (the session is evicted).
    SlowConsumer,
}

/// Why [`Mailbox::offer`] did not queue a delivery.
#[derive(Debug)]
pub enum Refusal {
    /// Not queued; count it.
    Drop(DropReason),
    /// No room now: the delivery is handed back to be offered again after
    /// [`Mailbox::wait_room`]`(seq, retry_at)` returns.
    Full(Box<Full>),
    /// The session has ended: the delivery has nobody to go to.
    Closed,
}

/// A delivery handed back by a full queue.
#[derive(Debug)]
pub struct Full {
    pub delivery: Delivery,
    /// When the queue will have been stuck for the slow consumer timeout.
    pub retry_at: Instant,
    /// The room counter at the refusal (see [`Mailbox::wait_room`]).
    pub seq: u64,
}

/// What `push_reporting` did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The session outlives its connection (its QoS 1/2 copies are stored).
    pub persistent: bool,
    /// The delivery went to the store only (spill mode).
    pub spilled: bool,
}

/// Queue bounds, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct MailboxLimits {
    pub outbound_capacity: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Spill QoS 1/2 overflow of persistent sessions to the durable store
    /// instead of dropping it.
    pub spill: bool,
    /// How long a full queue may make offers wait (zero: never).
    pub slow_consumer_timeout: Duration,
    /// QoS 0 offers wait too (`qos0_overflow = "wait"`).
    pub qos0_wait: bool,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
    persistent: bool,
    /// Lowest message id that is only in the store (spill mode), if any.
    spilled_from: Option<u64>,
    /// Spilled deliveries whose append the caller has not yet submitted to
    /// the store (see `spill_submitted`).
    unsubmitted: u32,
    /// Counts spilled deliveries, so a refill knows whether more spilled
    /// while it was reading the store.
    spill_seq: u64,
    /// Since when offers have found the queue full with no drain since.
    full_since: Option<Instant>,
    /// An offer was refused since the last room wake-up.
    refused: bool,
    /// Counts room wake-ups (see `wait_room`).
    room_seq: u64,
    /// Stayed full too long: a clean session's connection must close.
    evicted: bool,
    /// The session ended.
    closed: bool,
}

/// A session's bounded delivery queue.
#[derive(Debug)]
pub struct Mailbox {
    client_id: Arc<str>,
    online: AtomicBool,
    /// Deliver QoS 0 messages as QoS 1 (bridge lanes with `store_qos0`).
    store_qos0: AtomicBool,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Wakes publishers waiting for room.
    room: Notify,
    /// Wakes the owning connection when the session is evicted.
    evict: Notify,
    /// Set once with `Queue::evicted` (read without the lock by the
    /// owning connection's event loop).
    evicted: AtomicBool,
    limits: MailboxLimits,
}

impl Mailbox {
    pub fn new(client_id: Arc<str>, persistent: bool, limits: MailboxLimits) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            client_id,
            online: AtomicBool::new(false),
            store_qos0: AtomicBool::new(false),
            queue: Mutex::new(Queue {
                persistent,
                ..Queue::default()
            }),
            notify: Notify::new(),
            room: Notify::new(),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
            limits,
        })
    }

    /// The owning session's client id.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// True when QoS 0 deliveries are upgraded to QoS 1 (and so stored).
    pub fn stores_qos0(&self) -> bool {
        self.store_qos0.load(Ordering::Relaxed)
    }

    /// Upgrades this session's QoS 0 deliveries to QoS 1 (bridge lanes).
    pub fn set_store_qos0(&self, on: bool) {
        self.store_qos0.store(on, Ordering::Relaxed);
    }

    /// True while a connection serves this session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Marks the session served (or not) by a connection.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Changes whether QoS 1/2 overflow is kept (session expiry > 0).
    pub fn set_persistent(&self, persistent: bool) {
        self.lock().persistent = persistent;
    }

    /// Queues a delivery according to the policy in the module doc.
    /// `Ok(persistent)` tells whether the session outlives its connection.
    /// For callers whose message is already in the store (restore,
    /// redistribution): a spill is settled at once.
    pub fn push(&self, delivery: Delivery) -> Result<bool, DropReason> {
        let pushed = self.push_reporting(delivery)?;
        if pushed.spilled {
            self.spill_submitted();
        }
        Ok(pushed.persistent)
    }

    /// Like `push`, reporting a spill: the caller must submit the message's
    /// append to the store and then call [`Mailbox::spill_submitted`].
    /// Never waits: a full queue drops (for callers that cannot wait).
    pub fn push_reporting(&self, delivery: Delivery) -> Result<Pushed, DropReason> {
        match self.queue_or_refuse(delivery, None::<fn() -> Instant>) {
            Ok(pushed) => Ok(pushed),
            Err(Refusal::Drop(reason)) => Err(reason),
            // Unreachable without a clock; a session that ended drops
            // silently, as if it had unsubscribed first.
            Err(Refusal::Full(_) | Refusal::Closed) => Ok(Pushed {
                persistent: false,
                spilled: false,
            }),
        }
    }

    /// Like `push_reporting`, but an online session's full queue hands the
    /// delivery back to wait for room, up to the slow consumer timeout
    /// (module doc). `now` is read only when the queue is full.
    pub fn offer(
        &self,
        delivery: Delivery,
        now: impl FnOnce() -> Instant,
    ) -> Result<Pushed, Refusal> {
        self.queue_or_refuse(delivery, Some(now))
    }

    fn queue_or_refuse<F: FnOnce() -> Instant>(
        &self,
        delivery: Delivery,
        clock: Option<F>,
    ) -> Result<Pushed, Refusal> {
        let online = self.is_online();
        let weight = delivery.message.weight();
        let mut q = self.lock();
        if q.closed && clock.is_some() {
            return Err(Refusal::Closed);
        }
        let l = &self.limits;
        let qos0 = delivery.qos == QoS::AtMostOnce;
        let limit = match (online, qos0, q.persistent) {
            (false, true, _) => return Err(Refusal::Drop(DropReason::Offline)),
            (true, true, _) | (true, false, false) => l.outbound_capacity,
            (true, false, true) => l.outbound_capacity + l.max_queued_messages,
            (false, false, _) => l.max_queued_messages,
        };
        // Every queued delivery counts against the byte bound, QoS 0 too.
        let over_bytes = q.bytes.saturating_add(weight) > l.max_queued_bytes;
        let full = q.items.len() >= limit || over_bytes;
        if !qos0 && q.persistent && l.spill && (full || q.spilled_from.is_some()) {
            let id = delivery.message.id;
            q.spilled_from = Some(q.spilled_from.map_or(id, |from| from.min(id)));
            q.unsubmitted += 1;
            return Ok(Pushed {
                persistent: true,
                spilled: true,
            });
        }
        if q.evicted && !qos0 {
            return Err(Refusal::Drop(DropReason::SlowConsumer));
        }
        if full {
            let may_wait = online && (!qos0 || l.qos0_wait) && !l.slow_consumer_timeout.is_zero();
            let clock = clock.filter(|_| may_wait);
            return Err(self.refuse(&mut q, delivery, clock));
        }
        q.bytes += weight;
        q.items.push_back(delivery);
        let persistent = q.persistent;
        drop(q);
        self.notify.notify_one();
        Ok(Pushed {
            persistent,
            spilled: false,
        })
    }

    /// A full queue's answer: wait while it has been stuck for less than
    /// the slow consumer timeout, else drop (and evict a clean session
    /// owed QoS 1/2). Without a clock (the caller cannot wait): drop.
    fn refuse<F: FnOnce() -> Instant>(
        &self,
        q: &mut Queue,
        delivery: Delivery,
        clock: Option<F>,
    ) -> Refusal {
        let qos0 = delivery.qos == QoS::AtMostOnce;
        let reason = match (qos0, q.persistent) {
            (true, _) => DropReason::QueueFullQos0,
            (false, true) => DropReason::SessionQueueFull,
            (false, false) => DropReason::QueueFull,
        };
        let Some(clock) = clock else {
            return Refusal::Drop(reason);
        };
        let now = clock();
        let since = *q.full_since.get_or_insert(now);
        let retry_at = since
            .checked_add(self.limits.slow_consumer_timeout)
            .unwrap_or(now);
        if now < retry_at {
            q.refused = true;
            return Refusal::Full(Box::new(Full {
                delivery,
                retry_at,
                seq: q.room_seq,
            }));
        }
        if qos0 || q.persistent {
            return Refusal::Drop(reason);
        }
        if !q.evicted {
            q.evicted = true;
            self.evicted.store(true, Ordering::Release);
            self.evict.notify_one();
        }
        Refusal::Drop(DropReason::SlowConsumer)
    }

    /// Returns once the queue may have room for a delivery refused at room
    /// counter `seq` (a drain since, or the session ended), or at
    /// `retry_at`, when the next offer decides about a slow consumer.
    pub async fn wait_room(&self, seq: u64, retry_at: Instant) {
        let room = self.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        if self.lock().room_seq != seq {
            return;
        }
        tokio::select! {
            _ = room => {}
            _ = tokio::time::sleep_until(retry_at.into()) => {}
        }
    }

    /// Completes once the session was evicted as a slow consumer.
    pub async fn evicted(&self) {
        if self.is_evicted() {
            return;
        }
        self.evict.notified().await
    }

    /// True once the session was evicted as a slow consumer.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// The session ended: offers from now on are refused as `Closed`, and
    /// waiting publishers wake up to find that out.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.room_seq += 1;
        drop(q);
        self.room.notify_waiters();
    }

    /// A spilled delivery's append has been submitted to the store: a page
    /// fetched from now on contains it (the store serves requests in order).
    pub fn spill_submitted(&self) {
        let mut q = self.lock();
        q.unsubmitted = q.unsubmitted.saturating_sub(1);
        q.spill_seq += 1;
        drop(q);
        self.notify.notify_one();
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn drain(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut q = self.lock();
        let n = max.min(q.items.len());
        let mut freed = 0;
        for d in q.items.drain(..n) {
            freed += d.message.weight();
            out.push(d);
        }
        q.bytes -= freed;
        if n == 0 {
            return;
        }
        // Progress: the queue is no longer stuck.
        q.full_since = None;
        if std::mem::take(&mut q.refused) {
            q.room_seq += 1;
            drop(q);
            self.room.notify_waiters();
        }
    }

    /// Puts deliveries taken by a connection that closed before sending
    /// them back at the front, in order. They were within bounds when
    /// queued, so no bound is checked again.
    pub fn requeue_front(&self, deliveries: Vec<Delivery>) {
        let mut q = self.lock();
        for d in deliveries.into_iter().rev() {
            q.bytes += d.message.weight();
            q.items.push_front(d);
        }
    }

    /// `(lowest spilled id, spill counter)` while messages wait in the store.
    pub fn spill_state(&self) -> Option<(u64, u64)> {
        let q = self.lock();
        q.spilled_from.map(|from| (from, q.spill_seq))
    }

    /// Marks messages from `from` on as waiting in the store (a restored
    /// session whose backlog is larger than the queue).
    pub fn start_spill(&self, from: u64) {
        let mut q = self.lock();
        q.spilled_from = Some(q.spilled_from.map_or(from, |f| f.min(from)));
        q.spill_seq += 1;
    }

    /// Appends a page read from the store (ids from the spill point on, in
    /// order). `complete` says the store had nothing more; spill mode ends
    /// only if nothing spilled since `seq` (the counter the read started at).
    pub fn refill(&self, page: Vec<Delivery>, seq: u64, complete: bool) {
        let mut q = self.lock();
        let Some(from) = q.spilled_from else {
            return;
        };
        let mut next = from;
        for d in page.into_iter().filter(|d| d.message.id >= from) {
            next = next.max(d.message.id + 1);
            q.bytes += d.message.weight();
            q.items.push_back(d);
        }
        // Spill mode ends only if the page was read after every spilled
        // append was submitted (nothing unsubmitted, nothing new since).
        q.spilled_from = if complete && q.spill_seq == seq && q.unsubmitted == 0 {
            None
        } else {
            Some(next)
        };
        drop(q);
        self.notify.notify_one();
    }

    /// The lowest message id waiting here, queued or spilled to the store.
    pub fn oldest_id(&self) -> Option<u64> {
        let q = self.lock();
        let front = q.items.iter().map(|d| d.message.id).next();
        match (front, q.spilled_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued (session ended), returning the count.
    pub fn clear(&self) -> usize {
        let mut q = self.lock();
        q.bytes = 0;
        let n = q.items.len();
        q.items.clear();
        n
    }

    /// Completes when a delivery may be waiting (a permit is stored if
    /// nobody waits, so a push is never missed).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    pub fn push_reporting(&self, delivery: Delivery) -> Result<Pushed, DropReason> {
        let online = self.is_online();
        let weight = delivery.message.weight();
        let mut q = self.lock();
        let l = &self.limits;
        let qos0 = delivery.qos == QoS::AtMostOnce;
        let limit = match (online, qos0, q.persistent) {
            (false, true, _) => return Err(DropReason::Offline),
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
        if full {
            return Err(match (qos0, q.persistent) {
                (true, _) => DropReason::QueueFullQos0,
                (false, true) => DropReason::SessionQueueFull,
                (false, false) => DropReason::QueueFull,
            });
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

//! The shared broker state: router, session registry, wills and hooks.
//!
//! Connection tasks hold an `Arc<Broker>`. The session registry maps a
//! client id to a [`Slot`]: which connection owns the session now, or the
//! parked session of an offline persistent client. Takeover is a handshake
//! through the slot: the new connection claims the slot, signals the old
//! one and awaits the session the old one hands back when it has closed.
//! Every lock here is a `std::sync::Mutex` held for a few map operations,
//! never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

mod blocked;
mod bridge_lanes;
pub mod durable;
pub mod peers;
mod restore;
mod shared;
pub mod spill;
mod subscriptions;

use crate::config::Config;
use crate::counters::{self, Metrics};
use crate::hooks::{Authenticator, Durability, Persistence};
use crate::router::{Message, RetainOutcome, Router};
use crate::session::{Mailbox, MailboxLimits, Refusal, Session};

pub use blocked::Blocked;

/// How long a new connection waits for the session of the connection it
/// takes over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// A client id's entry in the registry.
#[derive(Debug, Default)]
struct Slot {
    /// The connection serving the session, if any.
    owner: Option<u64>,
    /// Tells the owner to close because another connection took over.
    kick: Option<oneshot::Sender<()>>,
    /// Where the old owner hands its session to the new one.
    handoff: Option<oneshot::Sender<Box<Session>>>,
    /// An offline persistent session.
    parked: Option<Session>,
    /// The session's queue, online or parked (for the queue-depth gauge).
    mailbox: Option<Arc<Mailbox>>,
    /// Bumped each time a session is parked, so stale expiry timers no-op.
    generation: u64,
    /// The user who owns the session, online or parked (recorded only with
    /// `[auth] client_id_binding`; see [`Broker::session_owner`]).
    user: Option<Arc<str>>,
    /// The session's count of unacknowledged outgoing messages.
    inflight: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// A delayed will: (generation, message).
type PendingWill = (u64, Arc<Message>);

/// The result of [`Broker::open_session`].
pub struct Opened {
    pub session: Session,
    pub session_present: bool,
    /// Fires when another connection takes the session over.
    pub kicked: oneshot::Receiver<()>,
}

/// State shared by every connection.
pub struct Broker {
    pub config: Arc<Config>,
    pub router: Router,
    pub metrics: Metrics,
    pub persistence: Arc<dyn Persistence>,
    pub auth: Arc<dyn Authenticator>,
    /// Connected clients, for the HTTP API.
    pub peers: Arc<peers::Peers>,
    sessions: Mutex<HashMap<Arc<str>, Slot>>,
    /// Delayed wills by client id, with a generation against stale timers.
    wills: Mutex<HashMap<Arc<str>, PendingWill>>,
    next_id: AtomicU64,
    started: Instant,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    pub fn new(
        config: Arc<Config>,
        persistence: Arc<dyn Persistence>,
        auth: Arc<dyn Authenticator>,
    ) -> Arc<Broker> {
        let router = Router::new(
            config.limits.max_retained_messages,
            config.retained_bytes_bound(),
        );
        Arc::new(Broker {
            config,
            router,
            metrics: Metrics::default(),
            persistence,
            auth,
            peers: Arc::default(),
            sessions: Mutex::new(HashMap::new()),
            wills: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            shutdown: watch::channel(false).0,
        })
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A fresh id for a connection or a generation.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sessions known (online and parked).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Messages queued for every session, online or offline (not counting
    /// a spilled backlog that waits in the store).
    pub fn queued_messages(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter_map(|slot| slot.mailbox.as_ref())
            .map(|m| m.len())
            .sum()
    }

    /// Asks every task to shut down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Mailbox bounds from config.
    pub fn mailbox_limits(&self) -> MailboxLimits {
        let l = &self.config.limits;
        MailboxLimits {
            outbound_capacity: l.outbound_capacity,
            max_queued_messages: l.max_queued_messages,
            max_queued_bytes: l.max_queued_bytes,
            spill: self.persistence.spills(),
            slow_consumer_timeout: Duration::from_millis(l.slow_consumer_timeout_ms),
            qos0_wait: l.qos0_overflow == crate::config::Qos0Overflow::Wait,
        }
    }

    /// Routes a message to its subscribers and the retained store. The
    /// returned [`Durability`] completes when every durable copy is stored:
    /// the publisher's PUBACK/PUBREC waits for it. A full queue drops (for
    /// publishers that cannot wait: wills, bridges, `$SYS`).
    pub fn publish(&self, message: Arc<Message>) -> Durability {
        self.publish_with(message, None)
    }

    /// Like [`Broker::publish`], but a full queue of an online subscriber
    /// hands its delivery back in `blocked` (see `session::mailbox`): the
    /// caller (a publisher's connection) withholds its acknowledgement and
    /// offers it again with [`Broker::offer_again`] once there is room.
    pub fn publish_offer(&self, message: Arc<Message>, blocked: &mut Blocked) -> Durability {
        self.publish_with(message, Some(blocked))
    }

    fn publish_with(&self, message: Arc<Message>, mut blocked: Option<&mut Blocked>) -> Durability {
        let mut durable = Durability::Done;
        if message.retain {
            match self.router.retain(message.clone()) {
                RetainOutcome::Rejected => counters::inc(&self.metrics.dropped_retained_full),
                outcome if !message.topic.starts_with("$SYS") => {
                    let stored = (outcome == RetainOutcome::Stored).then_some(&message);
                    durable = self.persistence.retain(&message.topic, stored);
                }
                _ => {}
            }
        }
        let mut persistent: Vec<Arc<str>> = Vec::new();
        let mut spilled = Vec::new();
        for (mailbox, mut delivery) in self.router.route(&message) {
            if delivery.qos == crate::protocol::QoS::AtMostOnce && mailbox.stores_qos0() {
                // A bridge lane with `store_qos0`: keep QoS 0 durably too.
                delivery.qos = crate::protocol::QoS::AtLeastOnce;
            }
            let qos = delivery.qos;
            let result = match blocked {
                None => mailbox.push_reporting(delivery).map_err(Refusal::Drop),
                Some(_) => mailbox.offer(delivery, Instant::now),
            };
            match result {
                Ok(pushed) => {
                    if pushed.persistent && qos != crate::protocol::QoS::AtMostOnce {
                        persistent.push(mailbox.client_id().clone());
                    }
                    if pushed.spilled {
                        spilled.push(mailbox);
                    }
                }
                Err(Refusal::Drop(reason)) => self.metrics.count_drop(reason),
                Err(Refusal::Closed) => {}
                Err(Refusal::Full(full)) => {
                    if let Some(b) = blocked.as_deref_mut() {
                        b.refused(mailbox, *full, &message);
                    }
                }
            }
        }
        if persistent.is_empty() {
            return durable;
        }
        let stored = join(durable, self.persistence.enqueue(&message, &persistent));
        // The append is now queued to the store ahead of any later page
        // fetch: a spilled session may end its spill mode again.
        for mailbox in spilled {
            mailbox.spill_submitted();
        }
        stored
    }

    /// Attaches a connection to the session of `client_id`: resumes a parked
    /// session, takes over an online one, or creates a new one (always new
    /// with `clean_start`). Cancels a pending delayed will.
    pub async fn open_session(
        self: &Arc<Self>,
        client_id: Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
        conn_id: u64,
    ) -> Opened {
        self.open_session_for(client_id, None, clean_start, expiry_interval, conn_id)
            .await
    }

    /// [`Broker::open_session`] for a client that logged in as `user`: with
    /// `[auth] client_id_binding` the session records `user` as its owner
    /// (stored with it, so it survives restarts).
    pub async fn open_session_for(
        self: &Arc<Self>,
        client_id: Arc<str>,
        user: Option<&str>,
        clean_start: bool,
        expiry_interval: u32,
        conn_id: u64,
    ) -> Opened {
        let binding = self.config.auth.client_id_binding;
        let owner: Option<Arc<str>> = user
            .filter(|_| binding != crate::config::auth::ClientIdBinding::None)
            .map(Arc::from);
        lock(&self.wills).remove(&client_id);
        let (kick_tx, kicked) = oneshot::channel();
        let (previous, handoff) = {
            let mut sessions = lock(&self.sessions);
            let slot = sessions.entry(client_id.clone()).or_default();
            let handoff = match slot.owner.replace(conn_id) {
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    slot.handoff = Some(tx);
                    if let Some(kick) = slot.kick.take() {
                        let _ = kick.send(());
                    }
                    Some(rx)
                }
                None => None,
            };
            slot.kick = Some(kick_tx);
            (slot.parked.take(), handoff)
        };
        let previous = match handoff {
            Some(rx) => match tokio::time::timeout(TAKEOVER_TIMEOUT, rx).await {
                Ok(Ok(session)) => Some(*session),
                _ => {
                    tracing::warn!(%client_id, "takeover: previous connection did not hand over its session");
                    None
                }
            },
            None => previous,
        };
        // The old connection may have scheduled its delayed will while
        // closing: a reconnect in time cancels it.
        lock(&self.wills).remove(&client_id);
        let limits = self.mailbox_limits();
        let (mut session, session_present) = match previous {
            Some(old) if !clean_start => (old, true),
            Some(old) => {
                self.end_session(old, true);
                (
                    Session::new(client_id.clone(), expiry_interval, limits),
                    false,
                )
            }
            None => (
                Session::new(client_id.clone(), expiry_interval, limits),
                false,
            ),
        };
        session.set_expiry(expiry_interval);
        session.mailbox.set_online(true);
        session.owner = owner;
        if let Some(slot) = lock(&self.sessions).get_mut(&client_id) {
            slot.mailbox = Some(session.mailbox.clone());
            slot.user = session.owner.clone();
            slot.inflight = Some(session.outgoing.gauge());
        }
        if session.is_persistent() {
            self.persistence.save_session(&session.record());
        }
        Opened {
            session,
            session_present,
            kicked,
        }
    }

    /// The user who owns the session of `client_id` (online or parked,
    /// restored ones included), if it has one: with `[auth]
    /// client_id_binding` nobody else may open it.
    /// Whether a CONNECT for `client_id` may get a session: it has one
    /// already, or the broker holds fewer than `[limits] max_sessions`
    /// (connected or parked). Checked before the session opens, so
    /// concurrent handshakes can overshoot by the pending ones.
    pub fn has_room_for_session(&self, client_id: &str) -> bool {
        let sessions = lock(&self.sessions);
        sessions.contains_key(client_id) || sessions.len() < self.config.limits.max_sessions
    }

    pub fn session_owner(&self, client_id: &str) -> Option<Arc<str>> {
        lock(&self.sessions).get(client_id)?.user.clone()
    }

    /// Detaches connection `conn_id` from its session: parks a persistent
    /// session, ends a clean one, or hands it to the connection that took
    /// it over.
    pub fn close_session(self: &Arc<Self>, conn_id: u64, session: Session) {
        session.mailbox.set_online(false);
        let client_id = session.client_id.clone();
        let mut sessions = lock(&self.sessions);
        let Some(slot) = sessions.get_mut(&client_id) else {
            drop(sessions);
            return self.end_session(session, true);
        };
        if slot.owner != Some(conn_id) {
            // Taken over: the new owner waits for this session.
            let handoff = slot.handoff.take();
            drop(sessions);
            let unclaimed = match handoff {
                Some(tx) => tx.send(Box::new(session)).err().map(|s| *s),
                None => Some(session),
            };
            if let Some(stale) = unclaimed {
                // The new owner gave up waiting (or a third connection
                // intervened) and started afresh: end this session without
                // touching the client id's newer state.
                self.end_session(stale, false);
            }
            return;
        }
        slot.owner = None;
        slot.kick = None;
        if !session.is_persistent() {
            sessions.remove(&client_id);
            drop(sessions);
            return self.end_session(session, true);
        }
        slot.generation = self.next_id();
        let generation = slot.generation;
        let expiry = session.expiry_interval;
        let mut record = session.record();
        record.disconnected_at_ms = Some(durable::epoch_ms());
        slot.parked = Some(session);
        drop(sessions);
        self.persistence.save_session(&record);
        if expiry != crate::session::NEVER_EXPIRES {
            self.expire_later(client_id, generation, expiry);
        }
    }

    /// Ends a parked session whose expiry ran out (if still the same one).
    fn expire_session(self: &Arc<Self>, client_id: &Arc<str>, generation: u64) {
        let session = {
            let mut sessions = lock(&self.sessions);
            match sessions.get(client_id) {
                Some(s) if s.owner.is_none() && s.generation == generation => {
                    sessions.remove(client_id).and_then(|s| s.parked)
                }
                _ => None,
            }
        };
        if let Some(session) = session {
            tracing::debug!(%client_id, "session expired");
            self.end_session(session, true);
        }
    }

    /// Removes a session's subscriptions (those still pointing at its
    /// mailbox) and queue for good. With `owns_id` (no newer session uses
    /// the client id) it also forgets the stored session and publishes a
    /// pending delayed will: the session ended before the will delay.
    /// What a shared-group member still owed goes to another member (see
    /// `shared`), from the store when the session had durable copies.
    fn end_session(self: &Arc<Self>, mut session: Session, owns_id: bool) {
        // Publishers waiting for room in this queue stop waiting.
        session.mailbox.close();
        for filter in session.subscriptions.keys() {
            self.router.unsubscribe_mailbox(&session.mailbox, filter);
        }
        let mut orphans = session.outgoing.clear();
        session.mailbox.drain(usize::MAX, &mut orphans);
        let groups = Self::shared_groups(&session.subscriptions);
        let from_store =
            owns_id && !groups.is_empty() && session.is_persistent() && self.persistence.spills();
        if from_store {
            // The RAM deliveries are copies of what the store holds.
            self.move_stored_backlog(session.client_id.clone(), groups);
        } else {
            self.redistribute_shared(orphans);
        }
        if !owns_id {
            return;
        }
        match from_store {
            // Its queue is acknowledged message by message as it moves.
            true => self.persistence.forget_session(&session.client_id),
            false => self.persistence.remove_session(&session.client_id),
        }
        let will = lock(&self.wills).remove(&session.client_id);
        if let Some((_, will)) = will {
            drop(self.publish(will));
        }
    }

    /// Publishes a will now, or after `delay` seconds unless the client
    /// reconnects first (or its session ends first: see `end_session`).
    pub fn schedule_will(self: &Arc<Self>, client_id: Arc<str>, will: Arc<Message>, delay: u32) {
        if delay == 0 {
            drop(self.publish(will));
            return;
        }
        let generation = self.next_id();
        lock(&self.wills).insert(client_id.clone(), (generation, will));
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let will = {
                let mut wills = lock(&broker.wills);
                match wills.get(&client_id) {
                    Some((g, _)) if *g == generation => wills.remove(&client_id),
                    _ => None,
                }
            };
            if let Some((_, will)) = will {
                drop(broker.publish(will));
            }
        });
    }

    /// Publishes every pending delayed will (server shutdown ends sessions
    /// as far as clients can tell).
    pub fn flush_wills(&self) {
        let wills: Vec<_> = lock(&self.wills).drain().map(|(_, (_, w))| w).collect();
        for will in wills {
            drop(self.publish(will));
        }
    }
}

/// Both writes durable.
pub fn join(a: Durability, b: Durability) -> Durability {
    match (a, b) {
        (Durability::Done, x) | (x, Durability::Done) => x,
        (a, b) => Durability::Pending(Box::pin(async move {
            a.wait().await?;
            b.wait().await
        })),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! The client: an application handle plus one connection task.
//!
//! The application publishes and subscribes through [`Client`] and reads
//! [`Event`]s from [`Events`]. The connection task owns rumqttc's event loop,
//! reconnects with exponential backoff, restores subscriptions when the
//! broker lost the session, and keeps the [`Outbox`] in step with what the
//! broker acknowledged. The outbox lock is a plain mutex, held only for short
//! bookkeeping and never across `.await`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::ConnectFailure;
use crate::link::{self, EventLoop, Link, LinkEvent, Received};
use crate::outbox::{OutMessage, Outbox};
use crate::{ClientError, ConnectOptions};

/// What the connection reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted; `session_present` as reported by the broker.
    Connected {
        /// Whether the broker resumed a stored session.
        session_present: bool,
    },
    /// A connect attempt failed or the connection broke; the client retries.
    Disconnected(ConnectFailure),
    /// A message on one of the subscriptions.
    Message(Received),
    /// SUBACK; `failures` filters were refused.
    Subscribed {
        /// Number of refused filters in this SUBACK.
        failures: usize,
    },
    /// The broker rejected a QoS 1/2 message with a v5 reason code; it left the outbox.
    Rejected {
        /// Topic of the rejected message.
        topic: String,
        /// The reason code name.
        reason: String,
    },
}

/// Receiver of connection events and messages. Messages wait for the
/// application (back-pressure); status events are dropped if it lags.
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// Next event; None once the client is closed.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

struct Subscription {
    filter: String,
    qos: u8,
    /// Sent on a connection of the current broker session.
    in_session: bool,
}

struct State {
    outbox: Outbox,
    subscriptions: Vec<Subscription>,
}

struct Shared {
    state: Mutex<State>,
    /// One permit per free outbox slot.
    room: Semaphore,
    /// Number of unacknowledged messages, for `flush`.
    pending: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the outbox half-updated
        // in a way that loses messages, so keep going with its data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Driver {
    task: JoinHandle<()>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Handle to an MQTT connection with a durable-until-acked outbox. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    link: Link,
    capacity: usize,
    _driver: Arc<Driver>,
}

impl Client {
    /// Starts connecting in the background; must be called inside a tokio runtime.
    /// Connection progress arrives as [`Event`]s.
    pub fn connect(options: ConnectOptions) -> Result<(Client, Events), ClientError> {
        let (link, event_loop) = link::new(&options)?;
        let capacity = options.outbox_capacity.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                outbox: Outbox::new(capacity),
                subscriptions: Vec::new(),
            }),
            room: Semaphore::new(capacity),
            pending: watch::channel(0).0,
        });
        let (tx, rx) = mpsc::channel(options.event_capacity.max(1));
        let task = tokio::spawn(run(
            event_loop,
            link.clone(),
            Arc::clone(&shared),
            tx,
            (options.reconnect_min, options.reconnect_max),
        ));
        let client = Client {
            shared,
            link,
            capacity,
            _driver: Arc::new(Driver { task }),
        };
        Ok((client, Events { rx }))
    }

    /// Publishes; for QoS 1/2 waits while the outbox is full. Returns once the
    /// message is in the outbox (QoS 1/2) or in rumqttc's queue (QoS 0).
    pub async fn publish(&self, message: OutMessage) -> Result<(), ClientError> {
        validate(&message)?;
        if message.qos == 0 {
            return self.link.publish_qos0(message).await;
        }
        let permit = self
            .shared
            .room
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        permit.forget();
        self.enqueue(message);
        Ok(())
    }

    /// Publishes without waiting: `Err(OutboxFull)` when the outbox is full.
    pub fn try_publish(&self, message: OutMessage) -> Result<(), ClientError> {
        validate(&message)?;
        if message.qos == 0 {
            // QoS 0 is never kept: if rumqttc's channel is full the caller
            // is told so, like a full outbox.
            return if self.link.try_publish(&message) {
                Ok(())
            } else {
                Err(ClientError::OutboxFull {
                    capacity: self.capacity,
                })
            };
        }
        let permit = self
            .shared
            .room
            .try_acquire()
            .map_err(|_| ClientError::OutboxFull {
                capacity: self.capacity,
            })?;
        permit.forget();
        self.enqueue(message);
        Ok(())
    }

    fn enqueue(&self, message: OutMessage) {
        let mut state = self.shared.lock();
        // A permit guarantees room: permits == capacity - len.
        let pushed = state.outbox.push(message);
        debug_assert!(pushed, "permit held but outbox full");
        let link = &self.link;
        state.outbox.hand(|m| link.try_publish(m));
        self.shared.pending.send_replace(state.outbox.len());
    }

    /// Subscribes now if connected, and again after every reconnect that lost the session.
    pub fn subscribe(&self, filter: &str, qos: u8) -> Result<(), ClientError> {
        if !edgemq::protocol::topic::valid_topic_filter(filter) {
            return Err(ClientError::InvalidFilter(filter.to_string()));
        }
        if qos > 2 {
            return Err(ClientError::InvalidQos(qos));
        }
        let mut state = self.shared.lock();
        let connected = state.outbox.is_connected();
        if connected && !self.link.try_subscribe(filter, qos) {
            return Err(ClientError::Closed);
        }
        state.subscriptions.push(Subscription {
            filter: filter.to_string(),
            qos,
            in_session: connected,
        });
        Ok(())
    }

    /// Unacknowledged QoS 1/2 messages.
    pub fn outbox_len(&self) -> usize {
        self.shared.lock().outbox.len()
    }

    /// Waits until every QoS 1/2 message handed over so far was acknowledged.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let mut rx = self.shared.pending.subscribe();
        rx.wait_for(|n| *n == 0)
            .await
            .map(|_| ())
            .map_err(|_| ClientError::Closed)
    }

    /// Sends DISCONNECT (the will is not published). Unacknowledged messages are
    /// dropped with the client; call `flush` first to keep them.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.link.disconnect().await
    }
}

fn validate(m: &OutMessage) -> Result<(), ClientError> {
    if !edgemq::protocol::topic::valid_topic_name(&m.topic) {
        return Err(ClientError::InvalidTopic(m.topic.clone()));
    }
    if m.qos > 2 {
        return Err(ClientError::InvalidQos(m.qos));
    }
    Ok(())
}

/// The connection task.
async fn run(
    mut event_loop: EventLoop,
    link: Link,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    (min_delay, max_delay): (Duration, Duration),
) {
    let mut delay = min_delay;
    let mut connected = false;
    loop {
        match event_loop.poll(connected).await {
            Ok(LinkEvent::DisconnectSent) => return,
            Ok(event) => {
                if matches!(event, LinkEvent::ConnAck { .. }) {
                    connected = true;
                    delay = min_delay;
                }
                handle(event, &link, &shared, &events).await;
            }
            Err(failure) => {
                {
                    // Under the lock, so no publish is handed between moving
                    // rumqttc's channel into its pending list and marking the
                    // outbox offline: every handed message is then in that
                    // list, which rumqttc resends or (no session) drops and
                    // the outbox hands again, each exactly once.
                    let mut state = shared.lock();
                    event_loop.settle();
                    state.outbox.on_disconnect();
                }
                tracing::debug!(%failure, "mqtt connection");
                connected = false;
                let _ = events.try_send(Event::Disconnected(failure));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
        }
    }
}

/// Applies one event. A dropped `Events` receiver only means nobody listens:
/// the task keeps running for the publishes.
async fn handle(event: LinkEvent, link: &Link, shared: &Shared, events: &mpsc::Sender<Event>) {
    match event {
        LinkEvent::ConnAck { session_present } => {
            {
                let mut state = shared.lock();
                state.outbox.on_connack(session_present);
                // A resumed session already holds what was sent in it; a new
                // one needs every subscription again.
                for s in &mut state.subscriptions {
                    if session_present && s.in_session {
                        continue;
                    }
                    s.in_session = link.try_subscribe(&s.filter, s.qos);
                    if !s.in_session {
                        tracing::warn!(filter = %s.filter, "could not restore subscription");
                    }
                }
                state.outbox.hand(|m| link.try_publish(m));
            }
            let _ = events.try_send(Event::Connected { session_present });
        }
        LinkEvent::OutgoingPublish(pkid) => {
            with_outbox(shared, link, |o| o.on_outgoing_publish(pkid))
        }
        LinkEvent::AwaitAck(pkid) => with_outbox(shared, link, |o| o.on_await_ack(pkid)),
        LinkEvent::Ack { pkid, rejected } => {
            let acked = {
                let mut state = shared.lock();
                let acked = state.outbox.on_ack(pkid);
                if acked.is_some() {
                    // Room first, then the count `flush` watches: a caller
                    // woken by `flush` must find the slot free.
                    shared.room.add_permits(1);
                }
                state.outbox.hand(|m| link.try_publish(m));
                shared.pending.send_replace(state.outbox.len());
                acked
            };
            if let Some(message) = acked {
                if let Some(reason) = rejected {
                    tracing::warn!(topic = %message.topic, %reason, "broker rejected message");
                    let _ = events.try_send(Event::Rejected {
                        topic: message.topic,
                        reason,
                    });
                }
            }
        }
        LinkEvent::Message(m) => {
            // Wait for the application: back-pressure instead of an unbounded queue.
            // A dropped receiver just means nobody reads messages.
            let _ = events.send(Event::Message(m)).await;
        }
        LinkEvent::SubAck { failures } => {
            let _ = events.try_send(Event::Subscribed { failures });
        }
        LinkEvent::DisconnectSent | LinkEvent::Other => {
            with_outbox(shared, link, |_| ());
        }
    }
}

/// Runs `f` on the outbox, then hands whatever became sendable.
fn with_outbox(shared: &Shared, link: &Link, f: impl FnOnce(&mut Outbox)) {
    let mut state = shared.lock();
    f(&mut state.outbox);
    state.outbox.hand(|m| link.try_publish(m));
}

//! The broker's `Persistence` hook backed by the store, and the restore of
//! durable state at startup.
//!
//! Destinations in the store are named `session/<client id>` for persistent
//! sessions (bridge lanes use `bridge/<name>/<rule>`). Every call queues its
//! request to the store thread at once and in program order, so an ack can
//! never overtake the append it refers to when both come from one task; the
//! PUBACK/PUBREC to a publisher awaits the append's group commit.
//!
//! Restore runs before any listener accepts a connection: retained messages
//! go back into the router, persistent sessions are parked again with their
//! subscriptions and the messages still owed to them, and the broker's
//! message ids continue above every id in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::broker::Broker;
use crate::hooks::{BoxFuture, Durability, PersistError, Persistence};
use crate::protocol::topic::matches;
use crate::protocol::{PublishProperties, QoS, RetainHandling};
use crate::router::{split_shared, Delivery, Message, SubscriptionOptions};
use crate::session::{Session, SessionRecord, Stage, NEVER_EXPIRES};

use crate::storage::{StoreError, StoreHandle, StoredMessage, StoredSession, StoredSubscription};

/// The store destination of a persistent session.
pub fn session_destination(client_id: &str) -> String {
    format!("session/{client_id}")
}

/// `Persistence` over a [`StoreHandle`].
pub struct DurableStore {
    handle: StoreHandle,
}

impl DurableStore {
    pub fn new(handle: StoreHandle) -> DurableStore {
        DurableStore { handle }
    }
}

fn persist_error(e: StoreError) -> PersistError {
    match e {
        StoreError::Full | StoreError::TooLarge(_) => PersistError::QuotaExceeded(e.to_string()),
        e => PersistError::Failed(e.to_string()),
    }
}

fn wait<T: Send + 'static>(
    rx: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
) -> Durability {
    Durability::Pending(Box::pin(async move {
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(persist_error(e)),
            Err(_) => Err(persist_error(StoreError::Stopped)),
        }
    }))
}

impl Persistence for DurableStore {
    fn enqueue(&self, message: &Arc<Message>, client_ids: &[Arc<str>]) -> Durability {
        let destinations = client_ids.iter().map(|c| session_destination(c)).collect();
        wait(self.handle.submit_append(to_stored(message), destinations))
    }

    fn ack(&self, client_id: &str, message_id: u64) {
        self.handle
            .submit_ack(message_id, session_destination(client_id));
    }

    fn retain(&self, topic: &str, message: Option<&Arc<Message>>) -> Durability {
        wait(
            self.handle
                .submit_retained(topic.to_string(), message.map(|m| to_stored(m))),
        )
    }

    fn save_session(&self, record: &SessionRecord) {
        // Not awaited: a session saved late is restored with the state of
        // its previous save; its queued messages are durable on their own.
        drop(self.handle.submit_session(to_stored_session(record)));
    }

    fn remove_session(&self, client_id: &str) {
        self.handle
            .submit_session_end(client_id.to_string(), session_destination(client_id));
    }

    fn forget_session(&self, client_id: &str) {
        self.handle.submit_session_remove(client_id.to_string());
    }

    fn set_store_quota(&self, client_id: &str, quota: Option<crate::storage::Quota>) {
        self.handle
            .set_destination_quota(session_destination(client_id), quota);
    }

    fn inflight(&self, client_id: &str, message_id: u64, pkid: u16, stage: Stage) {
        self.handle.submit_inflight(
            session_destination(client_id),
            message_id,
            pkid,
            stage_code(stage),
        );
    }

    fn spills(&self) -> bool {
        true
    }

    fn fetch(
        &self,
        client_id: &str,
        from: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Message>, PersistError>> {
        let handle = self.handle.clone();
        let destination = session_destination(client_id);
        Box::pin(async move {
            let page = handle
                .read(&destination, from.checked_sub(1), max)
                .await
                .map_err(persist_error)?;
            Ok(page.into_iter().map(from_stored).collect())
        })
    }

    fn incoming_qos2(&self, client_id: &str, pkid: u16, pending: bool) -> Durability {
        self.handle
            .submit_qos2(client_id.to_string(), pkid, pending);
        if self.handle.durability() == crate::storage::SyncMode::Interval {
            return Durability::Done;
        }
        // The PUBREC of a pending id (queued once its message is durable)
        // and the PUBCOMP of a release wait for a sync covering the record:
        // a sync queued after it is answered only after the next sync (the
        // message itself has its own `Durability` from `enqueue`, so held
        // messages stay held).
        let handle = self.handle.clone();
        Durability::Pending(Box::pin(async move {
            handle.sync().await.map_err(persist_error)
        }))
    }
}

/// The stored form of an outgoing stage (`Record::Inflight`).
fn stage_code(stage: Stage) -> u8 {
    match stage {
        Stage::AwaitAck => 1,
        Stage::AwaitRec => 2,
        Stage::AwaitComp => 3,
    }
}

/// The stage and QoS of a stored outgoing stage; `None` for an unknown code.
fn stage_from(code: u8) -> Option<(Stage, QoS)> {
    match code {
        1 => Some((Stage::AwaitAck, QoS::AtLeastOnce)),
        2 => Some((Stage::AwaitRec, QoS::ExactlyOnce)),
        3 => Some((Stage::AwaitComp, QoS::ExactlyOnce)),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The stored form of a message (its id is the broker's message id).
pub fn to_stored(m: &Message) -> StoredMessage {
    let now_ms = epoch_ms();
    let p = &m.properties;
    StoredMessage {
        id: m.id,
        topic: m.topic.clone(),
        qos: m.qos as u8,
        retain: m.retain,
        received_at_ms: now_ms,
        expires_at_ms: m
            .expires_at
            .map(|at| now_ms + at.saturating_duration_since(Instant::now()).as_millis() as u64),
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        payload: m.payload.clone(),
        destinations: Vec::new(),
    }
}

/// The broker form of a stored message, keeping its id.
pub fn from_stored(s: StoredMessage) -> Message {
    let now_ms = epoch_ms();
    Message {
        id: s.id,
        topic: s.topic,
        payload: s.payload,
        qos: QoS::from_u8(s.qos).unwrap_or(QoS::AtLeastOnce),
        retain: s.retain,
        properties: PublishProperties {
            payload_format_indicator: s.payload_format_indicator,
            content_type: s.content_type,
            response_topic: s.response_topic,
            correlation_data: s.correlation_data,
            user_properties: s.user_properties,
            ..PublishProperties::default()
        },
        publisher: None,
        expires_at: s
            .expires_at_ms
            .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms))),
    }
}

fn to_stored_session(r: &SessionRecord) -> StoredSession {
    StoredSession {
        client_id: r.client_id.clone(),
        v5: true,
        expiry_interval_secs: r.expiry_interval,
        disconnected_at_ms: r.disconnected_at_ms,
        subscriptions: r
            .subscriptions
            .iter()
            .map(|(filter, o)| StoredSubscription {
                filter: filter.clone(),
                qos: o.qos as u8,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling as u8,
                subscription_identifier: o.id,
            })
            .collect(),
        inbound_qos2: Vec::new(),
        owner: r.owner.clone(),
    }
}

fn options(s: &StoredSubscription) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(s.qos).unwrap_or(QoS::AtMostOnce),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: match s.retain_handling {
            1 => RetainHandling::SendAtSubscribeIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
        id: s.subscription_identifier,
    }
}

/// What startup restored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub retained: usize,
    pub sessions: usize,
    pub messages: usize,
    /// Stored sessions whose expiry ran out while the broker was down.
    pub expired: usize,
}

/// Puts the store's retained messages and persistent sessions back into a
/// fresh broker. Call before accepting connections.
pub async fn restore(broker: &Arc<Broker>, handle: &StoreHandle) -> Result<Restored, StoreError> {
    let mut restored = Restored::default();
    crate::router::ensure_next_message_id(handle.stats().recovered_next_id);
    for m in handle.retained().await? {
        let message = from_stored(m);
        crate::router::ensure_next_message_id(message.id + 1);
        broker.router.retain(Arc::new(message));
        restored.retained += 1;
    }
    let limits = broker.mailbox_limits();
    let mut qos2 = handle.qos2_pending().await?;
    let now_ms = epoch_ms();
    let mut expired = Vec::new();
    for stored in handle.sessions().await? {
        // The expiry counts from the disconnect, across restarts (M3).
        let offline_secs = stored
            .disconnected_at_ms
            .map_or(0, |at| now_ms.saturating_sub(at) / 1000);
        let offline_secs = u32::try_from(offline_secs).unwrap_or(u32::MAX);
        let client_id: Arc<str> = Arc::from(stored.client_id.as_str());
        let mut session = Session::new(client_id.clone(), stored.expiry_interval_secs, limits);
        session.owner = stored.owner.as_deref().map(Arc::from);
        for sub in &stored.subscriptions {
            broker.subscribe(&mut session, &sub.filter, options(sub));
        }
        restored.messages +=
            restore_queue(handle, &mut session, limits.max_queued_messages).await?;
        for pkid in qos2.remove(stored.client_id.as_str()).unwrap_or_default() {
            session.incoming.restore(pkid);
        }
        match session.expiry_interval {
            NEVER_EXPIRES => broker.restore_session(session),
            e if offline_secs >= e => expired.push(session),
            _ => broker.restore_session_offline_for(session, offline_secs),
        }
        restored.sessions += 1;
    }
    // Ended only now that every other session (a shared group's other
    // members) is back.
    restored.expired = expired.len();
    restored.sessions -= expired.len();
    for session in expired {
        broker.end_expired_session(session);
    }
    Ok(restored)
}

/// Puts a restored session's owed messages back: those that were in flight
/// into the in-flight window with their packet ids (W7; the connection
/// resends them first), the rest into its queue. Returns how many.
async fn restore_queue(
    handle: &StoreHandle,
    session: &mut Session,
    max_queued_messages: usize,
) -> Result<usize, StoreError> {
    let mut restored = 0;
    let destination = session_destination(&session.client_id);
    let inflight: HashMap<u64, (u16, u8)> = handle
        .inflight_of(&destination)
        .await?
        .into_iter()
        .map(|(id, pkid, stage)| (id, (pkid, stage)))
        .collect();
    // One queue's worth plus one (plus those in flight): if the backlog is
    // larger, the last push spills and the connection pages the rest in
    // from the store.
    let want = max_queued_messages
        .saturating_add(1)
        .saturating_add(inflight.len());
    for m in handle.read(&destination, None, want).await? {
        crate::message_age::seed(m.id, m.received_at_ms);
        let message = Arc::new(from_stored(m));
        let mut delivery = delivery_for(session, message);
        let sent = inflight
            .get(&delivery.message.id)
            .and_then(|&(pkid, code)| Some((pkid, stage_from(code)?)));
        if let Some((pkid, (stage, qos))) = sent {
            delivery.qos = qos;
            if session.outgoing.restore(pkid, delivery.clone(), stage) {
                restored += 1;
                continue;
            }
        }
        if session.mailbox.push(delivery).is_ok() {
            restored += 1;
        }
    }
    Ok(restored)
}

/// The delivery a stored message makes to a session: the highest QoS
/// granted by its matching subscriptions, with their identifiers.
pub fn delivery_for(session: &Session, message: Arc<Message>) -> Delivery {
    let mut qos = None;
    let mut subscription_ids = Vec::new();
    for (filter, opts) in &session.subscriptions {
        let (_, inner) = split_shared(filter);
        if matches(inner, &message.topic) {
            qos = qos.max(Some(opts.qos));
            subscription_ids.extend(opts.id);
        }
    }
    // A message owed to a session whose matching subscription is gone is
    // still delivered: it was queued (and PUBACKed) while it matched.
    let mut qos = qos.unwrap_or(message.qos).min(message.qos);
    if qos == QoS::AtMostOnce && session.mailbox.stores_qos0() {
        // A bridge lane with `store_qos0`: as when it was first routed.
        qos = QoS::AtLeastOnce;
    }
    Delivery {
        qos,
        retain: false,
        subscription_ids,
        shared: None,
        message,
    }
}

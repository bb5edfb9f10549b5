//! The unit of fan-out: one shared [`Message`] and many small [`Delivery`]s.
//!
//! A PUBLISH is turned into exactly one `Arc<Message>` (topic, payload
//! `Bytes`, properties). Every subscriber receives a `Delivery`, which is a
//! reference-counted pointer plus the per-subscriber bits (granted QoS,
//! retain flag, subscription identifiers), so fan-out never copies a payload.
//!
//! This is a bottom-layer module (see docs/ARCHITECTURE.md): it holds the
//! values every layer passes around ([`Message`], [`Delivery`],
//! [`SubscriptionOptions`], [`PersistError`]) and imports only `protocol`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{PublishProperties, QoS, RetainHandling};

static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

/// Makes every later message id at least `next`: called at startup with the
/// durable store's next free id, so ids stay unique across restarts.
pub fn ensure_next_message_id(next: u64) {
    NEXT_MESSAGE_ID.fetch_max(next, Ordering::Relaxed);
}

/// The id the next message will get (for [`crate::message_age`]).
pub fn next_message_id() -> u64 {
    NEXT_MESSAGE_ID.load(Ordering::Relaxed)
}

/// An application message as the broker routes it.
#[derive(Debug)]
pub struct Message {
    /// Broker-wide unique id, used by the persistence layer to ack copies.
    pub id: u64,
    pub topic: String,
    pub payload: Bytes,
    /// The QoS it was published with (deliveries are capped by it).
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// v5 properties to forward; never carries a topic alias or
    /// subscription identifiers (those are per connection / per delivery).
    pub properties: PublishProperties,
    /// Client id of the publisher, for v5 No Local; `None` for the broker.
    pub publisher: Option<Arc<str>>,
    /// When the v5 Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Builds a message, stripping per-connection properties and turning the
    /// expiry interval into a deadline.
    pub fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: PublishProperties,
        publisher: Option<Arc<str>>,
    ) -> Message {
        properties.topic_alias = None;
        // Replaced, not cleared: an emptied Vec would keep its capacity.
        properties.subscription_identifiers = Vec::new();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
        Message {
            id: NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed),
            topic,
            payload,
            qos,
            retain,
            properties,
            publisher,
            expires_at,
        }
    }

    /// True once the message expiry interval has elapsed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The expiry interval left, to forward to a subscriber (rounded up so a
    /// live message never reaches 0).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }

    /// Bytes this message accounts for in queue and retained-store bounds:
    /// what it holds of topic, payload and every property (user properties
    /// at their length plus the in-memory cost of every entry the list has
    /// room for, so many empty ones count). The payload holds its length:
    /// the codec copies small payloads out of the read buffer, and keeps a
    /// slice only of a large one that is at least half of its buffer
    /// (`protocol::wire::ZERO_COPY_MIN`).
    pub fn weight(&self) -> usize {
        let p = &self.properties;
        let entry = std::mem::size_of::<crate::protocol::UserProperty>();
        let user: usize = p
            .user_properties
            .iter()
            .map(|(k, v)| k.len().saturating_add(v.len()))
            .fold(0, usize::saturating_add)
            .saturating_add(p.user_properties.capacity().saturating_mul(entry));
        let optional = |s: Option<usize>| s.unwrap_or(0);
        [
            self.topic.len(),
            self.payload.len(),
            user,
            optional(p.correlation_data.as_ref().map(|b| b.len())),
            optional(p.content_type.as_ref().map(String::len)),
            optional(p.response_topic.as_ref().map(String::len)),
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }

    /// A copy whose payload and correlation data own right-sized buffers,
    /// for messages kept long (retained): a slice of a connection's read
    /// buffer would otherwise keep the whole buffer (up to max_packet_size)
    /// alive for a few bytes.
    pub fn compacted(&self) -> Message {
        let mut properties = self.properties.clone();
        properties.correlation_data = properties
            .correlation_data
            .map(|b| Bytes::copy_from_slice(&b));
        properties.user_properties.shrink_to_fit();
        Message {
            id: self.id,
            topic: self.topic.clone(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties,
            publisher: self.publisher.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// One subscriber's copy of a message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// v5 subscription identifiers of every matching subscription.
    pub subscription_ids: Vec<u32>,
    /// The `(group, filter)` of the shared subscription this copy was
    /// picked for, so it can go to another member if this one leaves.
    pub shared: Option<Arc<(String, String)>>,
}

/// The options of one subscription, as granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

impl SubscriptionOptions {
    /// 3.1.1 semantics: only a QoS.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
            id: None,
        }
    }
}

/// A durable write did not happen: the publisher must not be acknowledged
/// as if it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The store refused the write for lack of room (a full store under
    /// `overflow = "reject"`, or a record too large): v5 publishers get
    /// PUBACK/PUBREC 0x97 and keep their connection.
    #[error("no room to store the message: {0}")]
    QuotaExceeded(String),
    /// The write failed (store failure, store stopped).
    #[error("persistence failed: {0}")]
    Failed(String),
}

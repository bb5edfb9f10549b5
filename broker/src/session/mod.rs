//! IO-free session state.
//!
//! A [`Session`] is what MQTT keeps for a client id between connections:
//! its subscriptions, its queued deliveries ([`Mailbox`]), its unacknowledged
//! outgoing messages ([`Outgoing`]) and the QoS 2 packet ids it sent us that
//! await PUBREL ([`Incoming`]). While a client is connected, its connection
//! task owns the `Session`; when it disconnects, a persistent session is
//! parked in the broker's registry until the client returns or the session
//! expires. Nothing here touches a socket, so every flow is unit-tested.
//!
//! Per-connection state that MQTT does not keep across connections (topic
//! aliases, the client's limits) lives in [`aliases`] and the connection.

pub mod aliases;
mod incoming;
mod mailbox;
mod outgoing;

use std::collections::HashMap;
use std::sync::Arc;

pub use incoming::{first_copy, Incoming, Qos2Arrival, WriteOutcome};
pub use mailbox::{DropReason, Full, Mailbox, MailboxLimits, Pushed, Refusal};
pub use outgoing::{Inflight, Outgoing, PubRecOutcome, Stage, UnknownPacketId};

use crate::message::SubscriptionOptions;

/// v5 session expiry meaning "never expires".
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// The state MQTT keeps for a client id.
#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    pub mailbox: Arc<Mailbox>,
    /// Filter (as subscribed, `$share/...` included) to options.
    pub subscriptions: HashMap<String, SubscriptionOptions>,
    /// Seconds the session outlives its connection (0: ends with it).
    pub expiry_interval: u32,
    pub outgoing: Outgoing,
    pub incoming: Incoming,
    /// The user who opened the session (`None`: anonymous, or a bridge
    /// lane); kept across restarts for `[auth] client_id_binding`.
    pub owner: Option<Arc<str>>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: Arc<str>, expiry_interval: u32, limits: MailboxLimits) -> Session {
        let mailbox = Mailbox::new(client_id.clone(), expiry_interval > 0, limits);
        Session {
            client_id,
            mailbox,
            subscriptions: HashMap::new(),
            expiry_interval,
            outgoing: Outgoing::default(),
            incoming: Incoming::default(),
            owner: None,
        }
    }

    /// True when the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// Changes the expiry (CONNECT or v5 DISCONNECT may set it).
    pub fn set_expiry(&mut self, expiry_interval: u32) {
        self.expiry_interval = expiry_interval;
        self.mailbox.set_persistent(expiry_interval > 0);
    }

    /// What the durable store keeps for this session.
    pub fn record(&self) -> SessionRecord {
        let mut subscriptions: Vec<_> = self
            .subscriptions
            .iter()
            .map(|(f, o)| (f.clone(), o.clone()))
            .collect();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        SessionRecord {
            client_id: self.client_id.to_string(),
            expiry_interval: self.expiry_interval,
            subscriptions,
            disconnected_at_ms: None,
            owner: self.owner.as_deref().map(str::to_string),
        }
    }
}

/// The durable part of a session (its queue is stored per message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: String,
    pub expiry_interval: u32,
    pub subscriptions: Vec<(String, SubscriptionOptions)>,
    /// When the client disconnected (ms since the Unix epoch), for a parked
    /// session: its expiry counts from then, across restarts.
    pub disconnected_at_ms: Option<u64>,
    /// The user who owns the session (see [`Session::owner`]).
    pub owner: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_flow;

//! The outbox: every QoS 1/2 message the application handed over, kept until
//! the broker acknowledged it.
//!
//! rumqttc keeps unacknowledged publishes only while the broker keeps the
//! session: when a CONNACK says "no session" it clears its pending queue, and
//! `publish()` never tells the caller which packet id a message got. This
//! module closes that gap without touching rumqttc's internals. It is IO-free:
//! the connection task feeds it the event loop's events and it answers which
//! messages to (re)hand to rumqttc.
//!
//! # How packet ids are learnt
//! The connection task is the only writer of QoS > 0 publishes into rumqttc's
//! request channel, and it writes them in outbox order (`hand`). rumqttc
//! assigns packet ids in the order it reads requests and reports each as
//! `Outgoing::Publish(pkid)` (or `Outgoing::AwaitAck(pkid)` on a packet id
//! collision, resent after that id's ack). So the n-th new packet id reported
//! belongs to the n-th handed message. A report for a packet id we already map
//! is a retransmission (session resumed) or the resend of a collided message.
//!
//! # Invariants
//! - A message leaves the outbox only on PUBACK/PUBREC for its packet id.
//! - `len() <= capacity` (the client checks `has_room` before `push`).
//! - Every entry is in exactly one of: `queued` (not handed to rumqttc since
//!   the last session start), `handed` (handed, packet id not yet known), or
//!   `by_pkid` (packet id known).
//! - On a CONNACK without session, every entry goes back to `queued`, in the
//!   original order: rumqttc has dropped them all, we hand them again.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Topic name.
    pub topic: String,
    /// 1 or 2 (QoS 0 never enters the outbox).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Payload.
    pub payload: Bytes,
    /// v5 content type (ignored on 3.1.1).
    pub content_type: Option<String>,
    /// v5 user properties (ignored on 3.1.1).
    pub user_properties: Vec<(String, String)>,
}

impl OutMessage {
    /// A message without v5 properties.
    pub fn new(topic: impl Into<String>, qos: u8, payload: impl Into<Bytes>) -> Self {
        OutMessage {
            topic: topic.into(),
            qos,
            retain: false,
            payload: payload.into(),
            content_type: None,
            user_properties: Vec::new(),
        }
    }

    /// Sets the retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// IO-free outbox state; see the module documentation.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    next_seq: u64,
    entries: BTreeMap<u64, OutMessage>,
    queued: VecDeque<u64>,
    handed: VecDeque<u64>,
    by_pkid: HashMap<u16, VecDeque<u64>>,
    connected: bool,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        Outbox {
            capacity: capacity.max(1),
            next_seq: 0,
            entries: BTreeMap::new(),
            queued: VecDeque::new(),
            handed: VecDeque::new(),
            by_pkid: HashMap::new(),
            connected: false,
        }
    }

    /// Maximum number of unacknowledged messages.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages not yet acknowledged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when every message was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `push` would not exceed the capacity.
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.capacity
    }

    /// True between a CONNACK and the next connection error.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Adds a message; it is handed to rumqttc by the next `hand`.
    /// Returns false (and keeps nothing) when the outbox is full.
    pub fn push(&mut self, message: OutMessage) -> bool {
        if !self.has_room() {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(seq, message);
        self.queued.push_back(seq);
        true
    }

    /// While connected, offers queued messages in order to `send`, which
    /// returns false when it cannot take one now (rumqttc's channel is full);
    /// the rest stay queued for the next call.
    pub fn hand(&mut self, mut send: impl FnMut(&OutMessage) -> bool) {
        if !self.connected {
            return;
        }
        while let Some(&seq) = self.queued.front() {
            let Some(message) = self.entries.get(&seq) else {
                self.queued.pop_front();
                continue;
            };
            if !send(message) {
                return;
            }
            self.queued.pop_front();
            self.handed.push_back(seq);
        }
    }

    /// rumqttc wrote a PUBLISH with `pkid` (new, retransmitted or collision resend).
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.get(&pkid).is_some_and(|q| !q.is_empty()) {
            return;
        }
        self.assign(pkid);
    }

    /// rumqttc assigned `pkid` but holds the PUBLISH until that id is acked.
    pub fn on_await_ack(&mut self, pkid: u16) {
        if pkid != 0 {
            self.assign(pkid);
        }
    }

    fn assign(&mut self, pkid: u16) {
        if let Some(seq) = self.handed.pop_front() {
            self.by_pkid.entry(pkid).or_default().push_back(seq);
        }
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) for `pkid`: the broker owns the
    /// message now. Returns it, or None for an id we do not track.
    pub fn on_ack(&mut self, pkid: u16) -> Option<OutMessage> {
        let queue = self.by_pkid.get_mut(&pkid)?;
        let seq = queue.pop_front()?;
        if queue.is_empty() {
            self.by_pkid.remove(&pkid);
        }
        self.entries.remove(&seq)
    }

    /// The connection broke. rumqttc keeps what it was sending in case the
    /// session resumes; nothing is handed until the next CONNACK.
    pub fn on_disconnect(&mut self) {
        self.connected = false;
    }

    /// CONNACK. With a session, rumqttc resends its own pending publishes;
    /// without one, rumqttc dropped them and everything goes back to `queued`.
    pub fn on_connack(&mut self, session_present: bool) {
        self.connected = true;
        if !session_present {
            self.by_pkid.clear();
            self.handed.clear();
            self.queued = self.entries.keys().copied().collect();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

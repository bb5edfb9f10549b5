//! The retained message store: the last retained message of each topic.
//!
//! Bounded in count and payload bytes by config: a retained message for a
//! new topic that would exceed a bound is not stored (the caller counts it);
//! replacing an existing topic is always allowed when the result fits.
//! The broker's own `$SYS` messages (published by the broker itself, no
//! publisher; clients, wills and bridges cannot write `$SYS`, see `policy`)
//! are kept outside the bounds: they are a fixed set, and counting them would
//! leave clients fewer retained topics than configured, and would drop and
//! count the broker's own figures when the bound is small.
//! An empty payload clears the topic. Expired messages are removed lazily
//! when a subscription looks at them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::Message;
use crate::protocol::topic;

/// What [`RetainedStore::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Cleared,
    /// Over the configured count or byte bound: not stored.
    Rejected,
}

/// Retained messages by topic, with bounds.
#[derive(Debug)]
pub struct RetainedStore {
    messages: HashMap<String, Arc<Message>>,
    /// Weight of every retained message.
    bytes: usize,
    /// Count and weight of the bounded (non-`$SYS`) messages.
    client_count: usize,
    client_bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl RetainedStore {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        RetainedStore {
            messages: HashMap::new(),
            bytes: 0,
            client_count: 0,
            client_bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Sets, replaces or (empty payload) clears the retained message of the
    /// message's topic.
    pub fn set(&mut self, message: Arc<Message>) -> RetainOutcome {
        if message.payload.is_empty() {
            if let Some(old) = self.messages.remove(&message.topic) {
                self.untrack(&old);
            }
            return RetainOutcome::Cleared;
        }
        if !is_broker_message(&message) {
            let old_weight = self.messages.get(&message.topic).map(|m| m.weight());
            let new_count = self.client_count + usize::from(old_weight.is_none());
            let new_bytes = self.client_bytes - old_weight.unwrap_or(0) + message.weight();
            if new_count > self.max_messages || new_bytes > self.max_bytes {
                return RetainOutcome::Rejected;
            }
        }
        // Owned buffers: a retained message may live for months.
        let message = Arc::new(message.compacted());
        self.track(&message);
        if let Some(old) = self.messages.insert(message.topic.clone(), message) {
            self.untrack(&old);
        }
        RetainOutcome::Stored
    }

    fn track(&mut self, m: &Message) {
        self.bytes += m.weight();
        if !is_broker_message(m) {
            self.client_count += 1;
            self.client_bytes += m.weight();
        }
    }

    fn untrack(&mut self, m: &Message) {
        self.bytes -= m.weight();
        if !is_broker_message(m) {
            self.client_count -= 1;
            self.client_bytes -= m.weight();
        }
    }

    /// Live retained messages matching `filter`; expired ones are dropped.
    pub fn matching(&mut self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let expired: Vec<String> = self
            .messages
            .values()
            .filter(|m| m.is_expired(now))
            .map(|m| m.topic.clone())
            .collect();
        for t in expired {
            if let Some(old) = self.messages.remove(&t) {
                self.untrack(&old);
            }
        }
        self.messages
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Number of retained messages (`$SYS` included).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes of retained topics and payloads.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The broker's own messages, outside the bounds: a `$SYS` topic *and* no
/// publisher (a client's message never escapes the bounds by its topic).
fn is_broker_message(m: &Message) -> bool {
    m.publisher.is_none() && topic::reserved_topic(&m.topic)
}

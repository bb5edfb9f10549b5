//! The retained message store: the last retained message of each topic.
//!
//! Bounded in count and payload bytes by config: a retained message for a
//! new topic that would exceed a bound is not stored (the caller counts it);
//! replacing an existing topic is always allowed when the result fits.
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
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl RetainedStore {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        RetainedStore {
            messages: HashMap::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Sets, replaces or (empty payload) clears the retained message of the
    /// message's topic.
    pub fn set(&mut self, message: Arc<Message>) -> RetainOutcome {
        if message.payload.is_empty() {
            if let Some(old) = self.messages.remove(&message.topic) {
                self.bytes -= old.weight();
            }
            return RetainOutcome::Cleared;
        }
        let old_weight = self.messages.get(&message.topic).map_or(0, |m| m.weight());
        let new_count = self.messages.len() + usize::from(old_weight == 0);
        let new_bytes = self.bytes - old_weight + message.weight();
        if new_count > self.max_messages || new_bytes > self.max_bytes {
            return RetainOutcome::Rejected;
        }
        self.bytes = new_bytes;
        self.messages.insert(message.topic.clone(), message);
        RetainOutcome::Stored
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
                self.bytes -= old.weight();
            }
        }
        self.messages
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Number of retained messages.
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

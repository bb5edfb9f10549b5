//! v5 topic aliases, per network connection, in both directions.
//!
//! Inbound: the client may use aliases 1..=our Topic Alias Maximum; an
//! alias outside that range is a 0x94 error, an empty topic with an unknown
//! alias a protocol error (0x82). Outbound: when the client announced a
//! Topic Alias Maximum, we assign aliases to topics as we send them; once
//! all are taken the oldest assignment is replaced (round robin), which is
//! cheap and keeps hot topics aliased most of the time.

use std::collections::HashMap;

use crate::protocol::reason;

/// Aliases the client set towards us.
#[derive(Debug, Default)]
pub struct InboundAliases {
    max: u16,
    topics: HashMap<u16, String>,
}

impl InboundAliases {
    /// Aliases 1..=max are allowed (0 disables aliases).
    pub fn new(max: u16) -> Self {
        InboundAliases {
            max,
            topics: HashMap::new(),
        }
    }

    /// The topic of an incoming PUBLISH, recording or resolving its alias.
    /// `Err` carries the v5 reason code to disconnect with.
    pub fn resolve(&mut self, topic: &str, alias: Option<u16>) -> Result<String, u8> {
        match alias {
            None if topic.is_empty() => Err(reason::PROTOCOL_ERROR),
            None => Ok(topic.to_string()),
            Some(a) if a == 0 || a > self.max => Err(reason::TOPIC_ALIAS_INVALID),
            Some(a) if topic.is_empty() => {
                self.topics.get(&a).cloned().ok_or(reason::PROTOCOL_ERROR)
            }
            Some(a) => {
                self.topics.insert(a, topic.to_string());
                Ok(topic.to_string())
            }
        }
    }
}

/// How to send a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// No alias: send the topic.
    None,
    /// Send the topic with this newly (re)assigned alias.
    Assign(u16),
    /// Send an empty topic with this alias.
    Reuse(u16),
}

/// Aliases we assign towards the client.
#[derive(Debug, Default)]
pub struct OutboundAliases {
    max: u16,
    by_topic: HashMap<String, u16>,
    /// slots[alias - 1] is the topic the alias stands for.
    slots: Vec<String>,
    cursor: usize,
}

impl OutboundAliases {
    /// The client accepts aliases 1..=max (0: none).
    pub fn new(max: u16) -> Self {
        OutboundAliases {
            max,
            ..OutboundAliases::default()
        }
    }

    /// Chooses how to send `topic`.
    pub fn assign(&mut self, topic: &str) -> AliasUse {
        if self.max == 0 {
            return AliasUse::None;
        }
        if let Some(&a) = self.by_topic.get(topic) {
            return AliasUse::Reuse(a);
        }
        let alias = if self.slots.len() < usize::from(self.max) {
            self.slots.push(topic.to_string());
            self.slots.len()
        } else {
            let i = self.cursor % self.slots.len();
            self.cursor = self.cursor.wrapping_add(1);
            let old = std::mem::replace(&mut self.slots[i], topic.to_string());
            self.by_topic.remove(&old);
            i + 1
        };
        // alias <= max <= u16::MAX by construction.
        let alias = u16::try_from(alias).unwrap_or(self.max);
        self.by_topic.insert(topic.to_string(), alias);
        AliasUse::Assign(alias)
    }
}

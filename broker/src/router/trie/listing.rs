//! Read-only listing of the subscriptions, for the HTTP API.
//!
//! Invariants: the listing holds the trie's read lock only while it walks,
//! and stops after `max` entries, so its cost is bounded by the caller.

use super::{Node, Trie};
use crate::router::{read, Router};

/// One subscription as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEntry {
    pub client_id: String,
    /// The filter without the `$share/group/` prefix.
    pub filter: String,
    /// The shared subscription group, if any.
    pub group: Option<String>,
    pub qos: u8,
}

impl Trie {
    /// Up to `max` subscriptions, depth first.
    pub fn list(&self, max: usize) -> Vec<SubscriptionEntry> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        list_node(&self.root, &mut path, max, &mut out);
        out
    }
}

fn list_node<'a>(
    node: &'a Node,
    path: &mut Vec<&'a str>,
    max: usize,
    out: &mut Vec<SubscriptionEntry>,
) {
    let filter = path.join("/");
    for (client_id, s) in &node.subscribers {
        if out.len() >= max {
            return;
        }
        out.push(SubscriptionEntry {
            client_id: client_id.to_string(),
            filter: filter.clone(),
            group: None,
            qos: s.options.qos as u8,
        });
    }
    for (name, group) in &node.groups {
        for member in &group.members {
            if out.len() >= max {
                return;
            }
            out.push(SubscriptionEntry {
                client_id: member.mailbox.client_id().to_string(),
                filter: filter.clone(),
                group: Some(name.clone()),
                qos: member.options.qos as u8,
            });
        }
    }
    for (level, child) in &node.children {
        if out.len() >= max {
            return;
        }
        path.push(level);
        list_node(child, path, max, out);
        path.pop();
    }
}

impl Router {
    /// Up to `max` subscriptions (see [`Trie::list`]).
    pub fn list_subscriptions(&self, max: usize) -> Vec<SubscriptionEntry> {
        read(&self.trie).list(max)
    }
}

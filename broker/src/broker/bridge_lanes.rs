//! What the bridge needs to find its stored lanes at startup.
//!
//! Invariant: read-only; lists parked sessions, never changes them.

use std::sync::Arc;

use super::{lock, Broker};

impl Broker {
    /// Client ids of the parked sessions whose id starts with `prefix`
    /// (the bridge's lanes restored from the store), sorted.
    pub fn parked_client_ids(&self, prefix: &str) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = lock(&self.sessions)
            .iter()
            .filter(|(id, slot)| id.starts_with(prefix) && slot.parked.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}

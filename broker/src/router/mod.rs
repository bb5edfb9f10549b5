//! Routing: subscriptions, retained messages and fan-out.
//!
//! The [`Router`] is the one structure every connection task shares. Its
//! locks (a `RwLock` around the trie, a `Mutex` around the retained store)
//! are held only for the in-memory walk and never across an `.await`: a
//! publish collects its targets under the read lock, releases it, and only
//! then pushes deliveries into the subscribers' bounded mailboxes.
//!
//! Overlapping subscriptions of one client yield one delivery: at the
//! highest granted QoS, with the retain flag kept when any matching
//! subscription asked for Retain As Published, carrying every matching v5
//! subscription identifier. Shared groups each yield one delivery to one
//! member.

mod retained;
mod trie;

pub use trie::listing::SubscriptionEntry;

use smallvec::SmallVec;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub use crate::message::{ensure_next_message_id, Delivery, Message, SubscriptionOptions};
pub use crate::protocol::topic::{split_shared, valid_filter};
pub use retained::{RetainOutcome, RetainedStore};
pub use trie::{Group, Match, Subscriber, Trie};

use crate::session::Mailbox;

/// The receivers of one message: inline for up to four.
pub type Routes = SmallVec<[(Arc<Mailbox>, Delivery); 4]>;

/// Subscriptions and retained messages shared by all connections.
#[derive(Debug)]
pub struct Router {
    trie: RwLock<Trie>,
    retained: Mutex<RetainedStore>,
}

impl Router {
    pub fn new(max_retained_messages: usize, max_retained_bytes: usize) -> Self {
        Router {
            trie: RwLock::new(Trie::default()),
            retained: Mutex::new(RetainedStore::new(
                max_retained_messages,
                max_retained_bytes,
            )),
        }
    }

    /// Adds or replaces a subscription; true when it replaced one.
    pub fn subscribe(
        &self,
        mailbox: &Arc<Mailbox>,
        filter: &str,
        options: SubscriptionOptions,
    ) -> bool {
        let (group, inner) = split_shared(filter);
        let subscriber = Subscriber {
            mailbox: mailbox.clone(),
            options,
        };
        write(&self.trie).insert(inner, group, subscriber)
    }

    /// Removes a subscription; true when it existed.
    pub fn unsubscribe(&self, client_id: &str, filter: &str) -> bool {
        let (group, inner) = split_shared(filter);
        write(&self.trie).remove(inner, group, client_id)
    }

    /// Removes `mailbox`'s subscription to `filter`, unless a newer session
    /// with the same client id owns it now. True when it was removed.
    pub fn unsubscribe_mailbox(&self, mailbox: &Arc<Mailbox>, filter: &str) -> bool {
        let (group, inner) = split_shared(filter);
        write(&self.trie).remove_owned(inner, group, mailbox.client_id(), Some(mailbox))
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        read(&self.trie).len()
    }

    /// The deliveries for `message`: one per subscribed client (overlaps
    /// merged) plus one per matching shared group.
    pub fn route(&self, message: &Arc<Message>) -> Routes {
        let trie = read(&self.trie);
        // Inline capacity covers the common fan-in case without allocating.
        let mut direct: SmallVec<[&Subscriber; 8]> = SmallVec::new();
        let mut out = Routes::new();
        trie.matches(&message.topic, |m| match m {
            Match::Direct(s) => {
                let own = message.publisher.as_ref() == Some(s.mailbox.client_id());
                if !(s.options.no_local && own) {
                    direct.push(s);
                }
            }
            Match::Shared(group) => {
                if let Some(s) = group.pick() {
                    let mut delivery = delivery_for(message, &[s]);
                    delivery.shared = Some(group.key().clone());
                    out.push((s.mailbox.clone(), delivery));
                }
            }
        });
        direct.sort_by_key(|s| Arc::as_ptr(&s.mailbox));
        for same_client in direct.chunk_by(|a, b| Arc::ptr_eq(&a.mailbox, &b.mailbox)) {
            out.push((
                same_client[0].mailbox.clone(),
                delivery_for(message, same_client),
            ));
        }
        out
    }

    /// Another member of the shared group a delivery was picked for, to
    /// take over a delivery its first member will not acknowledge.
    pub fn shared_member(&self, group: &str, filter: &str) -> Option<Arc<Mailbox>> {
        read(&self.trie)
            .group(filter, group)
            .and_then(|g| g.pick().map(|s| s.mailbox.clone()))
    }

    /// Stores, replaces or clears a retained message.
    pub fn retain(&self, message: Arc<Message>) -> RetainOutcome {
        lock(&self.retained).set(message)
    }

    /// Retained messages matching a (non-shared) filter.
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<Message>> {
        lock(&self.retained).matching(filter, Instant::now())
    }

    /// (count, bytes) of retained messages.
    pub fn retained_stats(&self) -> (usize, usize) {
        let r = lock(&self.retained);
        (r.len(), r.bytes())
    }
}

/// One client's delivery for all its matching subscriptions.
fn delivery_for(message: &Arc<Message>, subs: &[&Subscriber]) -> Delivery {
    let granted = subs.iter().map(|s| s.options.qos).max().unwrap_or_default();
    let retain = message.retain && subs.iter().any(|s| s.options.retain_as_published);
    let mut subscription_ids: Vec<u32> = subs.iter().filter_map(|s| s.options.id).collect();
    subscription_ids.sort_unstable();
    subscription_ids.dedup();
    Delivery {
        message: message.clone(),
        qos: granted.min(message.qos),
        retain,
        subscription_ids,
        shared: None,
    }
}

// Poisoning only happens if a thread panicked while holding the lock; the
// protected data stays consistent (every mutation is a single call), so we
// keep serving rather than cascade the panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

//! Shared-subscription redistribution when a group member's session ends
//! (issue 11, review finding D5).
//!
//! Invariants:
//! - a message handed to another member is a new copy (a new message id)
//!   queued in that member's mailbox and, when the member is persistent,
//!   appended to the store for it: the old member's copy is acknowledged
//!   only after that append is durable, so a crash in between leaves a
//!   duplicate, never a loss;
//! - for a persistent member with a durable store, the store is the source:
//!   every message still owed to it (its RAM queue, its in-flight window and
//!   its spilled backlog alike) with an id below the watermark taken when
//!   the session ended is moved or, when no shared subscription of the
//!   member matches it, acknowledged. Ids above the watermark belong to a
//!   newer session with the same client id and are left alone, which is
//!   also why the old destination is never cleared wholesale;
//! - without a durable copy (clean sessions, `durability = "memory"`) the
//!   deliveries in RAM are the only copies, and they are handed over as
//!   before.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Broker;
use crate::hooks::Durability;
use crate::protocol::topic::matches;
use crate::protocol::QoS;
use crate::router::{split_shared, Delivery, Message, SubscriptionOptions};

/// Messages read from the store per page while moving a backlog.
const PAGE: usize = 100;

/// `(group, filter)` of a shared subscription.
type GroupKey = Arc<(String, String)>;

impl Broker {
    /// The shared groups among a session's subscriptions, with the QoS
    /// granted there (what the moved copies are capped to, as the original
    /// deliveries were).
    pub(super) fn shared_groups(
        subscriptions: &HashMap<String, SubscriptionOptions>,
    ) -> Vec<(GroupKey, QoS)> {
        subscriptions
            .iter()
            .filter_map(|(f, o)| match split_shared(f) {
                (Some(group), inner) => {
                    Some((Arc::new((group.to_string(), inner.to_string())), o.qos))
                }
                (None, _) => None,
            })
            .collect()
    }

    /// Gives the QoS 1/2 deliveries a leaving shared-group member had not
    /// completed (in RAM only) to another member of the same group.
    pub(super) fn redistribute_shared(&self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let Some(key) = delivery.shared.clone() else {
                continue;
            };
            if delivery.qos == QoS::AtMostOnce {
                continue;
            }
            // Nobody waits for this durability: the leaving member's copy
            // was in RAM only.
            drop(self.hand_to_member(&delivery.message, &key, delivery.qos));
        }
    }

    /// Queues a copy of `message` for the next member of group `key`;
    /// `None` when there is no member or it dropped the copy.
    fn hand_to_member(&self, message: &Message, key: &GroupKey, qos: QoS) -> Option<Durability> {
        let mailbox = self.router.shared_member(&key.0, &key.1)?;
        let mut copy = Message::new(
            message.topic.clone(),
            message.payload.clone(),
            message.qos,
            false,
            message.properties.clone(),
            message.publisher.clone(),
        );
        copy.expires_at = message.expires_at;
        let copy = Arc::new(copy);
        let delivery = Delivery {
            message: copy.clone(),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            shared: Some(key.clone()),
        };
        match mailbox.push_reporting(delivery) {
            Ok(pushed) => {
                if !pushed.persistent || qos == QoS::AtMostOnce {
                    return Some(Durability::Done);
                }
                let stored = self
                    .persistence
                    .enqueue(&copy, std::slice::from_ref(mailbox.client_id()));
                if pushed.spilled {
                    mailbox.spill_submitted();
                }
                Some(stored)
            }
            Err(reason) => {
                self.metrics.count_drop(reason);
                None
            }
        }
    }

    /// Moves what the store owes the ended persistent session `client_id`
    /// to the other members of its shared `groups` (see the module doc).
    /// Runs as a task: the backlog is read back page by page.
    pub(super) fn move_stored_backlog(
        self: &Arc<Self>,
        client_id: Arc<str>,
        groups: Vec<(GroupKey, QoS)>,
    ) {
        let watermark = id_watermark();
        let broker = self.clone();
        tokio::spawn(async move {
            let (mut moved, mut dropped, mut from) = (0usize, 0usize, 0u64);
            loop {
                let page = match broker.persistence.fetch(&client_id, from, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(%client_id, error = %e, "cannot read an ended shared member's backlog");
                        return;
                    }
                };
                let last = page.len() < PAGE || page.iter().any(|m| m.id >= watermark);
                let mut handed = Vec::new();
                for m in page.into_iter().take_while(|m| m.id < watermark) {
                    from = m.id + 1;
                    let group = groups.iter().find(|(k, _)| matches(&k.1, &m.topic));
                    let durable = group
                        .and_then(|(k, granted)| broker.hand_to_member(&m, k, m.qos.min(*granted)));
                    match durable {
                        Some(d) => {
                            moved += 1;
                            handed.push((m.id, d));
                        }
                        None => {
                            dropped += 1;
                            handed.push((m.id, Durability::Done));
                        }
                    }
                }
                let done = last || handed.is_empty();
                for (id, durable) in handed {
                    if let Err(e) = durable.wait().await {
                        // Still owed to the old member: a duplicate later
                        // at worst, never a loss.
                        tracing::error!(%client_id, error = %e, "cannot store a redistributed message; keeping it");
                        continue;
                    }
                    broker.persistence.ack(&client_id, id);
                }
                if done {
                    break;
                }
            }
            tracing::info!(%client_id, moved, dropped, "ended shared member's backlog redistributed");
        });
    }
}

/// An id above every message created so far, below every later one (it
/// costs one unused id).
fn id_watermark() -> u64 {
    Message::new(
        String::new(),
        Bytes::new(),
        QoS::AtMostOnce,
        false,
        Default::default(),
        None,
    )
    .id
}

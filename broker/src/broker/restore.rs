//! Rebuilding broker state from the durable store at startup.
//!
//! The store recovers what it holds (persistent sessions, their queued
//! messages, retained messages) and hands it to these methods before the
//! listeners open. Restored state is in memory only here: nothing is written
//! back to the persistence layer, which already has it. Queued messages
//! bypass the mailbox bounds: they were acknowledged to their publishers,
//! so dropping them now would break the durability promise.

use std::sync::Arc;
use std::time::Duration;

use super::{lock, Broker};
use crate::protocol::{topic, QoS};
use crate::router::{split_shared, Delivery, Message, RetainOutcome};
use crate::session::{Session, SessionRecord, NEVER_EXPIRES};
use crate::sys;

impl Broker {
    /// Restores an offline persistent session: its subscriptions go back
    /// into the router, `queued` (oldest first) into its mailbox, the QoS 2
    /// packet ids awaiting PUBREL into its state; it expires after
    /// `remaining_expiry` seconds unless the client returns.
    pub fn restore_session(
        self: &Arc<Self>,
        record: SessionRecord,
        queued: Vec<Arc<Message>>,
        inbound_qos2: &[u16],
        remaining_expiry: u32,
    ) {
        let client_id: Arc<str> = Arc::from(record.client_id.as_str());
        let mut session = Session::new(
            client_id.clone(),
            record.expiry_interval,
            self.mailbox_limits(),
        );
        for (filter, options) in record.subscriptions {
            self.router
                .subscribe(&session.mailbox, &filter, options.clone());
            session.subscriptions.insert(filter, options);
        }
        for &pkid in inbound_qos2 {
            session.incoming.on_publish_qos2(pkid);
        }
        let deliveries = queued
            .into_iter()
            .map(|message| delivery_for(&session, message))
            .collect();
        session.mailbox.requeue_front(deliveries);
        let generation = self.next_id();
        {
            let mut sessions = lock(&self.sessions);
            let slot = sessions.entry(client_id.clone()).or_default();
            slot.generation = generation;
            slot.parked = Some(session);
        }
        if remaining_expiry != NEVER_EXPIRES {
            self.expire_later(client_id, generation, remaining_expiry);
        }
    }

    /// Restores a retained message (not written back to the store).
    pub fn restore_retained(&self, message: Arc<Message>) {
        if self.router.retain(message) == RetainOutcome::Rejected {
            sys::inc(&self.metrics.dropped_retained_full);
        }
    }

    /// Ends the parked session `client_id` after `secs` unless it was
    /// resumed or re-parked meanwhile (`generation` changed).
    pub(super) fn expire_later(self: &Arc<Self>, client_id: Arc<str>, generation: u64, secs: u32) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            if let Some(broker) = broker.upgrade() {
                broker.expire_session(&client_id, generation);
            }
        });
    }
}

/// The delivery of a recovered message to a session: capped by the highest
/// QoS of its matching subscriptions, with their identifiers.
fn delivery_for(session: &Session, message: Arc<Message>) -> Delivery {
    let matching: Vec<_> = session
        .subscriptions
        .iter()
        .filter(|(filter, _)| topic::matches(split_shared(filter).1, &message.topic))
        .map(|(_, options)| options)
        .collect();
    let granted = matching
        .iter()
        .map(|o| o.qos)
        .max()
        .unwrap_or(QoS::ExactlyOnce);
    let mut subscription_ids: Vec<u32> = matching.iter().filter_map(|o| o.id).collect();
    subscription_ids.sort_unstable();
    subscription_ids.dedup();
    Delivery {
        qos: granted.min(message.qos),
        retain: false,
        subscription_ids,
        shared: None,
        message,
    }
}

//! Rebuilding broker state from the durable store at startup.
//!
//! The store recovers what it holds (persistent sessions with their
//! subscriptions and queued messages, retained messages) and hands it to
//! these methods before the listeners open (see `broker::durable`).
//! Restored state is in memory only here: nothing is written back to the
//! persistence layer, which already has it.

use std::sync::Arc;
use std::time::Duration;

use super::{lock, Broker};
use crate::router::{Message, RetainOutcome};
use crate::session::{Session, NEVER_EXPIRES};

impl Broker {
    /// Parks a persistent session restored from the durable store (its
    /// subscriptions already in the router, its queue in its mailbox). Its
    /// expiry clock starts now.
    pub fn restore_session(self: &Arc<Self>, session: Session) {
        self.restore_session_offline_for(session, 0);
    }

    /// Like [`Broker::restore_session`] for a session whose client has been
    /// offline for `offline_secs` already (before the restart too): it
    /// expires that much sooner.
    pub fn restore_session_offline_for(self: &Arc<Self>, session: Session, offline_secs: u32) {
        session.mailbox.set_online(false);
        let client_id = session.client_id.clone();
        let expiry = session.expiry_interval;
        let generation = self.next_id();
        {
            let mut sessions = lock(&self.sessions);
            let slot = sessions.entry(client_id.clone()).or_default();
            slot.generation = generation;
            slot.mailbox = Some(session.mailbox.clone());
            slot.user = session.owner.clone();
            slot.inflight = Some(session.outgoing.gauge());
            slot.parked = Some(session);
        }
        if expiry != NEVER_EXPIRES {
            let left = expiry.saturating_sub(offline_secs);
            self.expire_later(client_id, generation, left);
        }
    }

    /// Ends a restored session whose expiry ran out while the broker was
    /// down, as it would have ended on time: its durable state is removed
    /// and, for a shared-group member, its backlog handed over. Call once
    /// every session is restored, so the other members are there.
    pub fn end_expired_session(self: &Arc<Self>, session: Session) {
        tracing::info!(client_id = %session.client_id, "stored session expired while the broker was down");
        session.mailbox.set_online(false);
        self.end_session(session, true);
    }

    /// Restores a retained message (not written back to the store).
    pub fn restore_retained(&self, message: Arc<Message>) {
        if self.router.retain(message) == RetainOutcome::Rejected {
            crate::counters::inc(&self.metrics.dropped_retained_full);
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

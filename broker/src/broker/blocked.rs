//! A publisher's deliveries that wait for room in full subscriber queues.
//!
//! [`Broker::publish_offer`] offers a message to every matching queue; an
//! online queue without room hands its delivery back (`session::mailbox`,
//! `Refusal::Full`) and it is kept here, with the publisher, until
//! [`Broker::offer_again`] finds room or the queue's slow consumer timeout
//! decides (dropped and counted, or spilled). Invariants: one message at a
//! time (the connection handles no further PUBLISH while anything waits,
//! so per-publisher order holds in every queue); each waiting delivery is
//! for a different queue; nothing here is ever dropped silently.

use std::sync::Arc;

use crate::hooks::Durability;
use crate::protocol::QoS;
use crate::router::{Delivery, Message};
use crate::session::{Full, Mailbox, Refusal};

use super::{join, Broker};

/// Deliveries of one message waiting for room (see the module doc).
#[derive(Debug, Default)]
pub struct Blocked {
    waiting: Vec<(Arc<Mailbox>, Full)>,
    message: Option<Arc<Message>>,
}

impl Blocked {
    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Keeps a delivery a full queue handed back.
    pub(super) fn refused(&mut self, mailbox: Arc<Mailbox>, full: Full, message: &Arc<Message>) {
        if self.message.is_none() {
            self.message = Some(message.clone());
        }
        self.waiting.push((mailbox, full));
    }

    /// Returns when the first waiting queue may have room, or its slow
    /// consumer timeout is due; never while nothing waits.
    pub async fn room(&self) {
        match self.waiting.first() {
            Some((mailbox, full)) => mailbox.wait_room(full.seq, full.retry_at).await,
            None => std::future::pending().await,
        }
    }
}

impl Broker {
    /// Offers every waiting delivery again. Those taken leave `blocked`;
    /// the result completes when the durable copies of those taken by
    /// persistent sessions are stored (nothing to wait for otherwise).
    pub fn offer_again(&self, blocked: &mut Blocked) -> Durability {
        let mut durable = Durability::Done;
        let Some(message) = blocked.message.clone() else {
            return durable;
        };
        for (mailbox, full) in std::mem::take(&mut blocked.waiting) {
            let delivery: Delivery = full.delivery;
            let qos = delivery.qos;
            match mailbox.offer(delivery, std::time::Instant::now) {
                Ok(pushed) => {
                    if pushed.persistent && qos != QoS::AtMostOnce {
                        let client = [mailbox.client_id().clone()];
                        durable = join(durable, self.persistence.enqueue(&message, &client));
                    }
                    if pushed.spilled {
                        mailbox.spill_submitted();
                    }
                }
                Err(Refusal::Full(full)) => blocked.waiting.push((mailbox, *full)),
                Err(Refusal::Drop(reason)) => self.metrics.count_drop(reason),
                Err(Refusal::Closed) => {}
            }
        }
        if blocked.waiting.is_empty() {
            blocked.message = None;
        }
        durable
    }
}

//! Flow control on the publisher's side: a message some full queue could
//! not take yet is held here, with its acknowledgement, until every queue
//! took it (docs/ARCHITECTURE.md, "a full queue slows the producer").
//!
//! The state is boxed and allocated at a connection's first held message
//! (then kept): connections that never wait pay one pointer.
//!
//! While a message is held ([`FlowState::blocked`] not empty):
//! * its PUBACK/PUBREC waits in `waiting_acks` behind a future that the
//!   release completes ([`Conn::hold`]), so acknowledgements keep the
//!   order of the PUBLISH packets;
//! * the read loop handles only the packets that answer our own sends
//!   (PUBACK, PUBREC, PUBCOMP) and PINGREQ; every other packet is kept,
//!   in order, in [`FlowState::deferred`] and handled once the message is
//!   released, so no later PUBLISH can overtake it in any queue. The
//!   outbound pump keeps running, so a client that subscribes to its own
//!   topics (or two clients feeding each other) cannot deadlock;
//! * at most `max_inflight` packets are deferred; then the socket is not
//!   read (TCP back-pressure), so memory stays bounded.
//!
//! A held message is released when every queue took it, or when a queue
//! stayed stuck beyond `slow_consumer_timeout_ms` and dropped it (counted).
//!
//! A publisher that closes its socket (end of stream) while a message is
//! held or packets are deferred is not cut short: the socket is no longer
//! read, and the connection ends once what it had sent is routed (at most
//! one slow-consumer timeout later). A QoS 0 burst followed by a
//! disconnect therefore loses nothing either.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::broker::{join, Blocked};
use crate::hooks::{Durability, PersistError};
use crate::protocol::Packet;

use super::{Conn, Exit};

/// The publisher-side flow-control state of one connection.
#[derive(Default)]
pub(super) struct FlowState {
    /// Deliveries of the held message still waiting for room.
    pub blocked: Blocked,
    /// Completes the held message's acknowledgement with the durability of
    /// its stored copies.
    release: Option<(oneshot::Sender<Durability>, Durability)>,
    /// Packets read while a message is held, in arrival order.
    pub deferred: VecDeque<Packet>,
    /// The client closed its side: nothing more is read; the connection
    /// ends once the held message and the deferred packets are routed.
    pub eof: bool,
}

impl Conn {
    /// After routing: a message some queue could not take is held, and the
    /// returned durability completes once it is released and stored.
    pub(super) fn hold(&mut self, durable: Durability, blocked: Blocked) -> Durability {
        if blocked.is_empty() {
            return durable;
        }
        let (tx, rx) = oneshot::channel();
        let flow = self.flow.get_or_insert_with(Box::default);
        flow.blocked = blocked;
        flow.release = Some((tx, durable));
        Durability::Pending(Box::pin(async move {
            let stored = rx
                .await
                .map_err(|_| PersistError::Failed("connection closed".to_string()))?;
            stored.wait().await
        }))
    }

    /// Offers the held message again (a queue reported room or its slow
    /// consumer timeout is due); releases it once every queue took it.
    pub(super) fn retry_blocked(&mut self) {
        let Some(flow) = self.flow.as_deref_mut() else {
            return;
        };
        let again = self.broker.offer_again(&mut flow.blocked);
        if let Some((tx, durable)) = flow.release.take() {
            let durable = join(durable, again);
            if flow.blocked.is_empty() {
                let _ = tx.send(durable);
            } else {
                flow.release = Some((tx, durable));
            }
        }
    }

    /// True while a message waits for room.
    pub(super) fn is_held(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| !f.blocked.is_empty())
    }

    fn deferred_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.deferred.len())
    }

    /// At the end of the client's stream: true if a held message or
    /// deferred packets still have to be routed (the connection goes on
    /// without reading until they are), false if it can end now.
    pub(super) fn finish_input_at_eof(&mut self) -> bool {
        let pending = self.is_held() || self.deferred_len() > 0;
        if let (true, Some(flow)) = (pending, self.flow.as_deref_mut()) {
            flow.eof = true;
        }
        pending
    }

    /// True once the client closed its side and everything it sent before
    /// is routed: the connection ends.
    pub(super) fn input_finished(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| f.eof) && !self.is_held() && self.deferred_len() == 0
    }

    /// True while packets can be taken from the socket: acknowledgements
    /// are not held back beyond `max_inflight`, and the deferred packets
    /// are within their bound.
    pub(super) fn can_read(&self) -> bool {
        let max = usize::from(self.broker.config.limits.max_inflight);
        self.waiting_acks.len() < max
            && self.closing.is_none()
            && self.deferred_len() < max
            && !self.flow.as_ref().is_some_and(|f| f.eof)
    }

    /// Decodes and handles every complete packet in the read buffer (and
    /// the deferred ones, once nothing is held). Returns whether anything
    /// came from the client. `allocation` is the size of the allocation the
    /// read buffer lives in (`readbuf::Backing`): small payloads are copied
    /// out of it so they do not pin it (H6).
    pub(super) async fn handle_input(
        &mut self,
        rbuf: &mut bytes::BytesMut,
        max_packet: u32,
        allocation: usize,
    ) -> Result<bool, Exit> {
        let mut heard = false;
        let max = usize::from(self.broker.config.limits.max_inflight);
        while self.waiting_acks.len() < max && self.closing.is_none() {
            let held = self.is_held();
            let next_deferred = match (held, self.flow.as_deref_mut()) {
                (false, Some(flow)) => flow.deferred.pop_front(),
                _ => None,
            };
            let packet = match next_deferred {
                Some(p) => p,
                None => {
                    if self.deferred_len() >= max {
                        break;
                    }
                    match crate::protocol::decode_in_buffer(
                        rbuf,
                        self.version,
                        max_packet,
                        allocation,
                    ) {
                        Ok(Some(packet)) => {
                            heard = true;
                            packet
                        }
                        Ok(None) => break,
                        Err(e) => return Err(Exit::Decode(e)),
                    }
                }
            };
            if held && !answers_our_send(&packet) {
                if let Some(flow) = self.flow.as_deref_mut() {
                    flow.deferred.push_back(packet);
                }
                continue;
            }
            self.handle(packet)?;
            // Each packet costs a unit of the task's cooperative budget: a
            // flooding publisher yields regularly, so the subscribers it
            // feeds get their turn to drain.
            tokio::task::consume_budget().await;
        }
        Ok(heard)
    }
}

/// Returns when the held message may be offered again; never while none
/// is held.
pub(super) async fn room(blocked: Option<&Blocked>) {
    match blocked {
        Some(b) => b.room().await,
        None => std::future::pending().await,
    }
}

/// Packets handled even while a message is held: they complete our own
/// sends or keep the connection alive, and no PUBLISH depends on them.
fn answers_our_send(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PingReq
    )
}

impl Conn {
    /// This session was evicted as a slow consumer: counts the disconnect
    /// and every message it was still owed (its clean session ends, so they
    /// are dropped).
    pub(super) fn count_slow_consumer(&self) {
        let metrics = &self.broker.metrics;
        crate::counters::inc(&metrics.disconnects_slow_consumer);
        let owed = self.pending.len()
            + self.session.mailbox.len()
            + self.session.outgoing.pending().count();
        crate::counters::add(&metrics.dropped_slow_consumer, owed);
        tracing::warn!(
            owed,
            timeout_ms = self.broker.config.limits.slow_consumer_timeout_ms,
            "closing connection: slow consumer (queue full beyond the timeout)"
        );
    }
}

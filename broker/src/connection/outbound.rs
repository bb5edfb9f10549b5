//! Turning deliveries into PUBLISH packets for one connection.
//!
//! Per-connection decisions happen here, at send time: the packet id and
//! inflight window (via the session), the read authorisation (ACL `read`),
//! the outgoing topic alias, the
//! remaining message expiry, the subscription identifiers, and the client's
//! Maximum Packet Size (a message that would exceed it is dropped and
//! counted, as MQTT 5.0 section 3.1.2.11.4 requires). Packets are appended
//! to one write buffer so a batch goes out in a single write.
//!
//! Retained messages for a new subscription are streamed, not built at
//! once: SUBSCRIBE queues one [`RetainedSend`] per granted filter (at most
//! `max_filters_per_subscribe` per packet), and [`Conn::pump`] looks the
//! filter's retained messages up only when it is that filter's turn, turning
//! at most `DRAIN_BATCH` of them into deliveries at a time, under the
//! inflight window and the write batch. Memory per subscriber is therefore
//! the filter list plus one lookup's message pointers, whatever the number
//! of filters times retained messages.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{self, Packet, PubAck, Publish, QoS};
use crate::router::{Delivery, Message};
use crate::session::aliases::AliasUse;
use crate::session::{Inflight, PubRecOutcome, Stage};
use crate::{counters, policy};

use super::Conn;

/// Stop filling the write buffer past this many bytes; write, then go on.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Deliveries taken from the mailbox at once.
const DRAIN_BATCH: usize = 64;

/// Longest topic given an outbound topic alias: an alias saves little on a
/// short topic, and the alias table keeps two copies of each topic.
const MAX_ALIASED_TOPIC: usize = 256;

/// The retained messages still owed to one new subscription.
#[derive(Debug)]
pub struct RetainedSend {
    filter: String,
    qos: QoS,
    id: Option<u32>,
    /// Looked up when this filter's turn comes.
    messages: Option<std::vec::IntoIter<Arc<Message>>>,
}

impl RetainedSend {
    pub fn new(filter: &str, qos: QoS, id: Option<u32>) -> RetainedSend {
        RetainedSend {
            filter: filter.to_string(),
            qos,
            id,
            messages: None,
        }
    }
}

impl Conn {
    /// Moves up to a batch of owed retained messages into `pending`; false
    /// when none are owed.
    fn refill_retained(&mut self) -> bool {
        while let Some(front) = self.retained.front_mut() {
            let router = &self.broker.router;
            let messages = front
                .messages
                .get_or_insert_with(|| router.retained_matching(&front.filter).into_iter());
            let (qos, id) = (front.qos, front.id);
            for message in messages.by_ref().take(DRAIN_BATCH) {
                self.pending.push_back(Delivery {
                    qos: qos.min(message.qos),
                    message,
                    retain: true,
                    subscription_ids: id.into_iter().collect(),
                    shared: None,
                });
            }
            if front.messages.as_ref().is_some_and(|m| m.len() == 0) {
                self.retained.pop_front();
            }
            if !self.pending.is_empty() {
                return true;
            }
        }
        false
    }

    /// Moves deliveries from the mailbox into the write buffer while the
    /// inflight window and the batch size allow.
    pub fn pump(&mut self) {
        let now = Instant::now();
        while self.wbuf.len() < WRITE_BATCH_BYTES {
            if self.pending.is_empty() && self.refill_retained() {
                continue;
            }
            if self.pending.is_empty() {
                let mut batch = Vec::new();
                self.session.mailbox.drain(DRAIN_BATCH, &mut batch);
                if batch.is_empty() {
                    return;
                }
                self.pending.extend(batch);
            }
            let Some(front) = self.pending.front() else {
                return;
            };
            if front.qos != QoS::AtMostOnce && !self.session.outgoing.has_room(self.window()) {
                return;
            }
            if let Some(delivery) = self.pending.pop_front() {
                self.send_delivery(delivery, now);
            }
        }
    }

    /// The outgoing window: the client's Receive Maximum capped by ours.
    pub fn window(&self) -> u16 {
        self.client
            .receive_maximum
            .min(self.broker.config.limits.max_inflight)
    }

    /// True when the next pending delivery could be sent now.
    pub fn can_send_more(&self) -> bool {
        match self.pending.front() {
            None => true,
            Some(d) => d.qos == QoS::AtMostOnce || self.session.outgoing.has_room(self.window()),
        }
    }

    fn send_delivery(&mut self, delivery: Delivery, now: Instant) {
        let broker = self.broker.clone();
        let metrics = &broker.metrics;
        if delivery.message.is_expired(now) {
            counters::inc(&metrics.dropped_expired);
            self.ack_persistence(&delivery);
            return;
        }
        // Deny lists and ACL `read`, again at delivery (retained included).
        if !policy::may_deliver(&broker, &self.identity, &delivery.message.topic) {
            counters::inc(&metrics.dropped_denied);
            self.ack_persistence(&delivery);
            return;
        }
        let packet = Packet::Publish(self.publish_for(&delivery, now));
        // An alias adds at most 3 bytes (and may shorten the topic later).
        let alias_overhead = if self.client.topic_alias_maximum > 0 {
            3
        } else {
            0
        };
        let size = protocol::encoded_len(&packet, self.version) + alias_overhead;
        let Packet::Publish(mut publish) = packet else {
            return;
        };
        if size > self.client.maximum_packet_size as usize {
            counters::inc(&metrics.dropped_too_large);
            self.ack_persistence(&delivery);
            return;
        }
        if delivery.qos != QoS::AtMostOnce {
            match self.session.outgoing.start(delivery.clone()) {
                Some(pkid) => {
                    publish.pkid = pkid;
                    if self.session.is_persistent() {
                        let stage = match delivery.qos {
                            QoS::ExactlyOnce => Stage::AwaitRec,
                            _ => Stage::AwaitAck,
                        };
                        self.broker.persistence.inflight(
                            &self.session.client_id,
                            delivery.message.id,
                            pkid,
                            stage,
                        );
                    }
                }
                None => {
                    // Unreachable while the window is <= 65535; keep it.
                    self.pending.push_front(delivery);
                    return;
                }
            }
        }
        self.apply_alias(&mut publish);
        self.encode(&Packet::Publish(publish));
        counters::inc(&metrics.publish_sent[usize::from(delivery.qos as u8)]);
    }

    /// The PUBLISH for a delivery (packet id 0 until assigned).
    pub fn publish_for(&self, delivery: &Delivery, now: Instant) -> Publish {
        let message = &delivery.message;
        let mut properties = if self.version.is_v5() {
            message.properties.clone()
        } else {
            Default::default()
        };
        if self.version.is_v5() {
            properties.message_expiry_interval = message.remaining_expiry(now);
            properties.subscription_identifiers = delivery.subscription_ids.clone();
        }
        Publish {
            dup: false,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: message.topic.clone(),
            pkid: 0,
            properties,
            payload: message.payload.clone(),
        }
    }

    fn apply_alias(&mut self, publish: &mut Publish) {
        if publish.topic.len() > MAX_ALIASED_TOPIC {
            return;
        }
        match self.out_aliases.assign(&publish.topic) {
            AliasUse::None => {}
            AliasUse::Assign(a) => publish.properties.topic_alias = Some(a),
            AliasUse::Reuse(a) => {
                publish.properties.topic_alias = Some(a);
                publish.topic.clear();
            }
        }
    }

    /// Resends unacknowledged messages after a session resumed: PUBLISH
    /// with DUP for those awaiting PUBACK/PUBREC, PUBREL for the others.
    /// The session may have been taken over by another user: a message the
    /// current identity may not read is completed and dropped, not resent
    /// (as Mosquitto filters inherited messages through the new user's ACL).
    pub fn resend_inflight(&mut self) {
        let now = Instant::now();
        let pending: Vec<Inflight> = self.session.outgoing.pending().cloned().collect();
        for inflight in pending {
            let topic = &inflight.delivery.message.topic;
            if inflight.stage != Stage::AwaitComp
                && !policy::may_deliver(&self.broker, &self.identity, topic)
            {
                let done = match inflight.stage {
                    Stage::AwaitAck => self.session.outgoing.on_puback(inflight.pkid).ok(),
                    _ => match self.session.outgoing.on_pubrec(inflight.pkid, 0x80) {
                        Ok(PubRecOutcome::Refused(d)) => Some(d),
                        _ => None,
                    },
                };
                if let Some(d) = done {
                    counters::inc(&self.broker.metrics.dropped_denied);
                    self.ack_persistence(&d);
                }
                continue;
            }
            let packet = match inflight.stage {
                Stage::AwaitComp => Packet::PubRel(PubAck {
                    pkid: inflight.pkid,
                    ..PubAck::default()
                }),
                Stage::AwaitAck | Stage::AwaitRec => {
                    let mut publish = self.publish_for(&inflight.delivery, now);
                    publish.pkid = inflight.pkid;
                    publish.dup = true;
                    Packet::Publish(publish)
                }
            };
            self.encode(&packet);
        }
    }

    /// Tells the store a persistent session is done with a delivery.
    pub fn ack_persistence(&self, delivery: &Delivery) {
        if self.session.is_persistent() && delivery.qos != QoS::AtMostOnce {
            self.broker
                .persistence
                .ack(&self.session.client_id, delivery.message.id);
        }
    }

    /// Appends a packet to the write buffer; encoding errors are logged and
    /// the packet skipped (they mean a field we cannot represent).
    pub fn encode(&mut self, packet: &Packet) {
        if let Err(e) = protocol::encode(packet, self.version, &mut self.wbuf) {
            tracing::warn!(error = %e, packet = ?packet.packet_type(), "cannot encode packet");
        }
    }
}

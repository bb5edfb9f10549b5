//! Building the bridge's PUBLISH packets from lane entries, inside the
//! cloud's limits (a child of `lane_machine`, whose invariants it keeps:
//! an entry taken from a lane is sent, put back at the front in order, or
//! becomes a Delete, Expired or DeadLetter action; nothing else).

use std::time::Instant;

use bytes::Bytes;

use super::{Action, Batch, CloudLimits, DeadLetterReason, LaneMachine};
use crate::envelope;
use crate::protocol::{self, Packet, Publish, QoS};
use crate::router::Delivery;

impl LaneMachine {
    /// Takes the lane's next delivery for a mirror PUBLISH; returns true if
    /// a PUBLISH went out (false: lane empty or the entry left otherwise).
    pub(super) fn next_mirror(
        &mut self,
        lane: usize,
        limits: CloudLimits,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(d) = self.take_sendable(lane, now, actions) else {
            return false;
        };
        let prefix = self.cfg.prefixes.get(lane).cloned().unwrap_or_default();
        let qos = d.qos.min(limits.maximum_qos);
        let mut properties = d.message.properties.clone();
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
        properties.message_expiry_interval = d.message.remaining_expiry(now);
        let mut publish = Publish {
            dup: false,
            qos,
            retain: d.message.retain && limits.retain_available,
            topic: format!("{prefix}{}", d.message.topic),
            pkid: u16::from(qos != QoS::AtMostOnce),
            properties,
            payload: d.message.payload.clone(),
        };
        if let Some(reason) = self.too_large(&publish, limits) {
            actions.push(Action::DeadLetter {
                lane,
                delivery: d,
                reason,
            });
            return false;
        }
        self.start(lane, &mut publish, vec![d], 0, actions)
    }

    /// Builds the lane's next envelope: up to `max_messages` and `max_bytes`
    /// (at least one message), halved until it fits the cloud's Maximum
    /// Packet Size; a single message that cannot fit is dead-lettered.
    pub(super) fn next_envelope(
        &mut self,
        lane: usize,
        limits: CloudLimits,
        now: Instant,
        wall_ms: u64,
        actions: &mut Vec<Action>,
    ) -> bool {
        if !self.batch_ready(lane, now) {
            return false;
        }
        let mut batch = self.take_batch(lane, now, wall_ms, actions);
        if batch.is_empty() {
            return false;
        }
        loop {
            let Some((mut publish, raw)) = self.envelope_publish(&batch, lane, wall_ms, limits)
            else {
                // Cannot happen for valid messages; never lose them.
                self.push_front(lane, batch);
                return false;
            };
            match self.too_large(&publish, limits) {
                None => return self.start(lane, &mut publish, batch, raw, actions),
                Some(reason) if batch.len() == 1 => {
                    for delivery in batch {
                        actions.push(Action::DeadLetter {
                            lane,
                            delivery,
                            reason: reason.clone(),
                        });
                    }
                    return false;
                }
                Some(_) => {
                    let rest = batch.split_off(batch.len() / 2);
                    self.push_front(lane, rest);
                }
            }
        }
    }

    /// True when the lane has messages and is not lingering for more.
    fn batch_ready(&self, lane: usize, now: Instant) -> bool {
        let max = self.cfg.max_messages.max(1);
        let Some(l) = self.lanes.get(lane) else {
            return false;
        };
        let lingering =
            l.pending.len() < max && !l.flush && l.since.is_some_and(|s| now < s + self.cfg.linger);
        !(l.pending.is_empty() || lingering)
    }

    /// Takes up to `max_messages` sendable deliveries of at most
    /// `max_bytes` together (at least one).
    fn take_batch(
        &mut self,
        lane: usize,
        now: Instant,
        wall_ms: u64,
        actions: &mut Vec<Action>,
    ) -> Vec<Delivery> {
        let max = self.cfg.max_messages.max(1);
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < max {
            let Some(d) = self.take_sendable(lane, now, actions) else {
                break;
            };
            let size = self
                .envelope_message(&d, lane, wall_ms)
                .size_hint(self.cfg.format.encoding);
            if !batch.is_empty() && bytes.saturating_add(size) > self.cfg.max_bytes {
                self.push_front(lane, vec![d]);
                break;
            }
            bytes = bytes.saturating_add(size);
            batch.push(d);
        }
        batch
    }

    /// The envelope PUBLISH of `batch` and the messages' raw size; `None`
    /// (logged) when the envelope cannot be encoded.
    fn envelope_publish(
        &self,
        batch: &[Delivery],
        lane: usize,
        wall_ms: u64,
        limits: CloudLimits,
    ) -> Option<(Publish, usize)> {
        let messages: Vec<envelope::Message> = batch
            .iter()
            .map(|d| self.envelope_message(d, lane, wall_ms))
            .collect();
        let raw: usize = messages
            .iter()
            .map(|m| m.size_hint(self.cfg.format.encoding))
            .sum();
        let body = match envelope::encode(&messages, self.cfg.format) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an envelope");
                return None;
            }
        };
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce.min(limits.maximum_qos),
            retain: false,
            topic: self.cfg.envelope_topic.clone(),
            pkid: 1,
            properties: protocol::PublishProperties {
                content_type: self
                    .cfg
                    .version
                    .is_v5()
                    .then(|| self.cfg.format.content_type()),
                ..Default::default()
            },
            payload: Bytes::from(body),
        };
        Some((publish, raw))
    }

    /// Registers `publish` (QoS 1/2: a packet id from [`Outgoing`]) and
    /// emits it; QoS 0 entries are deleted at once.
    fn start(
        &mut self,
        lane: usize,
        publish: &mut Publish,
        deliveries: Vec<Delivery>,
        raw_bytes: usize,
        actions: &mut Vec<Action>,
    ) -> bool {
        let messages = deliveries.len();
        if publish.qos == QoS::AtMostOnce {
            publish.pkid = 0;
            actions.push(Action::Publish {
                lane,
                publish: publish.clone(),
                messages,
                raw_bytes,
            });
            for delivery in deliveries {
                actions.push(Action::Delete { lane, delivery });
            }
            return true;
        }
        let Some(first) = deliveries.first() else {
            return false;
        };
        // The window entry carries the PUBLISH's QoS (an envelope is QoS 1
        // whatever its entries are); the entries themselves stay here.
        let mut rep = first.clone();
        rep.qos = publish.qos;
        let Some(pkid) = self.outgoing.start(rep) else {
            self.push_front(lane, deliveries);
            return false;
        };
        publish.pkid = pkid;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.batches.insert(
            pkid,
            Batch {
                seq,
                lane,
                deliveries,
            },
        );
        actions.push(Action::Publish {
            lane,
            publish: publish.clone(),
            messages,
            raw_bytes,
        });
        true
    }

    /// The lane's next entry that should go to the cloud; entries that
    /// should not (expired, downlink echoes) become actions on the way.
    fn take_sendable(
        &mut self,
        lane: usize,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> Option<Delivery> {
        let own = self.cfg.own_publisher.clone();
        let l = self.lanes.get_mut(lane)?;
        while let Some(d) = l.pending.pop_front() {
            if l.pending.is_empty() {
                l.flush = false;
                l.since = None;
            }
            if d.message.publisher.as_deref() == Some(&*own) {
                actions.push(Action::Delete { lane, delivery: d });
            } else if d.message.is_expired(now) {
                actions.push(Action::Expired { lane, delivery: d });
            } else {
                return Some(d);
            }
        }
        None
    }

    fn push_front(&mut self, lane: usize, deliveries: Vec<Delivery>) {
        if let Some(l) = self.lanes.get_mut(lane) {
            if l.pending.is_empty() && l.since.is_none() {
                l.flush = true;
            }
            for d in deliveries.into_iter().rev() {
                l.pending.push_front(d);
            }
        }
    }

    fn too_large(&self, publish: &Publish, limits: CloudLimits) -> Option<DeadLetterReason> {
        let max = limits.maximum_packet_size?;
        let size = protocol::encoded_len(&Packet::Publish(publish.clone()), self.cfg.version);
        (u64::try_from(size).unwrap_or(u64::MAX) > u64::from(max))
            .then_some(DeadLetterReason::TooLarge { size, max })
    }

    fn envelope_message(&self, d: &Delivery, lane: usize, wall_ms: u64) -> envelope::Message {
        let prefix = self.cfg.prefixes.get(lane).map_or("", String::as_str);
        envelope::Message {
            topic: format!("{prefix}{}", d.message.topic),
            timestamp_ms: wall_ms,
            qos: d.qos as u8,
            retain: d.message.retain,
            payload: d.message.payload.clone(),
            user_properties: d.message.properties.user_properties.clone(),
        }
    }
}

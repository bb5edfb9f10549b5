//! Handling the packets a connected client sends.
//!
//! Each handler either queues replies in the write buffer or returns an
//! [`Exit`] naming why the connection must close (with the v5 reason code
//! for the server's DISCONNECT). Publisher acknowledgements wait for the
//! durability of the message's durable copies before they are sent (see
//! [`Conn::acknowledge`]).

use std::sync::Arc;

use crate::counters;
use crate::hooks::{BoxFuture, Durability, PersistError};
use crate::policy::{self, Publisher};
use crate::protocol::{
    reason, Disconnect, Packet, PubAck, Publish, QoS, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::router::{self, Message, SubscriptionOptions};
use crate::session::{first_copy, PubRecOutcome, Qos2Arrival, Stage};

use super::handshake::topic_within_limits;
use super::outbound::RetainedSend;
use super::{Conn, Exit};

impl Conn {
    /// Dispatches one packet from the client.
    pub fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        counters::inc(&self.broker.metrics.messages_received);
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                if let Ok(d) = self.session.outgoing.on_puback(a.pkid) {
                    self.ack_persistence(&d);
                }
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_pubrec(a);
                Ok(())
            }
            Packet::PubRel(a) => {
                self.on_pubrel(a);
                Ok(())
            }
            Packet::PubComp(a) => {
                if let Ok(d) = self.session.outgoing.on_pubcomp(a.pkid) {
                    self.ack_persistence(&d);
                }
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.encode(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(d)),
            Packet::Connect(_) => Err(Exit::Protocol(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Auth(_) => Err(Exit::Protocol(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            )),
            other => Err(Exit::Protocol(
                reason::PROTOCOL_ERROR,
                match other {
                    Packet::ConnAck(_) => "CONNACK from a client",
                    Packet::SubAck(_) => "SUBACK from a client",
                    Packet::UnsubAck(_) => "UNSUBACK from a client",
                    _ => "PINGRESP from a client",
                },
            )),
        }
    }

    fn on_publish(&mut self, publish: Publish) -> Result<(), Exit> {
        counters::inc(&self.broker.metrics.publish_received[usize::from(publish.qos as u8)]);
        let topic = self.checked_topic(&publish)?;
        let metrics = &self.broker.metrics;
        // `$SYS` belongs to the broker, then deny lists and ACL (`policy`).
        let allowed =
            policy::may_publish(&self.broker, Publisher::Client(&self.identity), &topic).is_ok();
        if !allowed {
            counters::inc(&metrics.dropped_denied);
            tracing::debug!(%topic, "publish denied");
        }
        // v5 answers a refused QoS 1/2 publish with 0x87; 3.1.1 acknowledges
        // and drops it (it has no way to say no).
        let refused_code = if allowed || !self.version.is_v5() {
            0
        } else {
            reason::NOT_AUTHORIZED
        };
        let pkid = publish.pkid;
        match publish.qos {
            QoS::AtMostOnce => {
                if allowed {
                    // Nothing to acknowledge: durability is not awaited.
                    drop(self.route(topic, publish));
                }
            }
            QoS::AtLeastOnce => {
                let durable = if allowed {
                    self.route(topic, publish)
                } else {
                    Durability::Done
                };
                self.acknowledge(durable, Packet::PubAck(ack(pkid, refused_code)));
            }
            QoS::ExactlyOnce => {
                let durable = match allowed {
                    true => self.receive_qos2(topic, publish),
                    false => Durability::Done,
                };
                self.acknowledge(durable, Packet::PubRec(ack(pkid, refused_code)));
            }
        }
        Ok(())
    }

    /// The checks a PUBLISH must pass before the policy is asked: no
    /// Subscription Identifier from a client, the user-property cap, the
    /// topic alias (v5) and topic limits, Receive Maximum (v5) and the cap
    /// on QoS 2 ids awaiting PUBREL (3.1.1). Returns the topic, with its
    /// alias resolved; an error closes the connection with its reason.
    fn checked_topic(&mut self, publish: &Publish) -> Result<String, Exit> {
        if !publish.properties.subscription_identifiers.is_empty() {
            // MQTT-3.3.4-6: only the server sends Subscription Identifiers.
            return Err(Exit::Protocol(
                reason::PROTOCOL_ERROR,
                "Subscription Identifier in PUBLISH",
            ));
        }
        if publish.properties.user_properties.len() > self.broker.config.limits.max_user_properties
        {
            return Err(Exit::Protocol(
                reason::QUOTA_EXCEEDED,
                "too many user properties",
            ));
        }
        let topic = if self.version.is_v5() {
            self.in_aliases
                .resolve(&publish.topic, publish.properties.topic_alias)
                .map_err(|code| Exit::Protocol(code, "bad topic alias"))?
        } else {
            publish.topic.clone()
        };
        if !topic_within_limits(&self.broker, &topic) {
            return Err(Exit::Protocol(
                reason::TOPIC_NAME_INVALID,
                "topic over the configured limits",
            ));
        }
        // Our Receive Maximum (v5): a new QoS 1/2 message beyond it is an
        // error (a QoS 2 retransmission of a pending id is not new). 3.1.1
        // has no such limit to announce; the read loop applies back-pressure
        // on unsent acknowledgements instead.
        if self.version.is_v5()
            && publish.qos != QoS::AtMostOnce
            && !self.session.incoming.is_pending(publish.pkid)
            && self.incoming_inflight() >= usize::from(self.broker.config.limits.max_inflight)
        {
            return Err(Exit::Protocol(
                reason::RECEIVE_MAXIMUM_EXCEEDED,
                "receive maximum exceeded",
            ));
        }
        // 3.1.1 announces no Receive Maximum, but the QoS 2 ids a client
        // leaves awaiting PUBREL are state (and store records) it must not
        // grow without bound.
        if !self.version.is_v5()
            && publish.qos == QoS::ExactlyOnce
            && !self.session.incoming.is_pending(publish.pkid)
            && self.session.incoming.pending() >= self.broker.config.limits.max_qos2_pending
        {
            return Err(Exit::Protocol(
                reason::RECEIVE_MAXIMUM_EXCEEDED,
                "too many QoS 2 messages awaiting PUBREL",
            ));
        }
        Ok(topic)
    }

    /// An allowed QoS 2 PUBLISH: routed once per packet id until PUBREL.
    /// Its PUBREC waits for the durable write of the first copy, also when
    /// this is a retransmission (review finding D2); only persistent
    /// sessions record the pending id in the store (M6), after the message.
    fn receive_qos2(&mut self, topic: String, publish: Publish) -> Durability {
        let pkid = publish.pkid;
        match self.session.incoming.on_publish_qos2(pkid) {
            Qos2Arrival::Duplicate => Durability::Done,
            Qos2Arrival::Wait(rx) => Durability::Pending(Box::pin(first_copy(rx))),
            Qos2Arrival::New => {
                // A persistent session records the pending id, but only once
                // the message is durable: a crash can never leave the id on
                // flash without its message (whose retransmission would then
                // be taken for a duplicate). The PUBREC waits for both.
                let record = self.session.is_persistent().then(|| {
                    (
                        self.broker.persistence.clone(),
                        self.session.client_id.clone(),
                    )
                });
                let write = self.route(topic, publish);
                if record.is_none() && matches!(write, Durability::Done) {
                    return Durability::Done;
                }
                let outcome = self.session.incoming.storing(pkid);
                Durability::Pending(Box::pin(async move {
                    let mut result = write.wait().await;
                    if let (Ok(()), Some((persistence, client_id))) = (&result, record) {
                        result = persistence
                            .incoming_qos2(&client_id, pkid, true)
                            .wait()
                            .await;
                    }
                    outcome.send_replace(Some(result.clone()));
                    result
                }))
            }
        }
    }

    /// Routes a PUBLISH; the result completes when every queue took it and
    /// its durable copies are stored.
    fn route(&mut self, topic: String, publish: Publish) -> Durability {
        let message = Message::new(
            topic,
            publish.payload,
            publish.qos,
            publish.retain,
            publish.properties,
            Some(self.session.client_id.clone()),
        );
        let mut blocked = crate::broker::Blocked::default();
        let durable = self.broker.publish_offer(Arc::new(message), &mut blocked);
        // A queue without room: the acknowledgement waits (see `flow`).
        self.hold(durable, blocked)
    }

    /// Sends `ack` once `durable` completes, keeping acknowledgements in the
    /// order the PUBLISH packets arrived (MQTT 5.0 section 4.6). Publishes
    /// keep being read and routed meanwhile, so a group commit can cover
    /// many of them.
    fn acknowledge(&mut self, durable: Durability, ack: Packet) {
        match durable {
            Durability::Done if self.waiting_acks.is_empty() => self.encode(&ack),
            Durability::Done => self.waiting_acks.push_back((None, ack)),
            Durability::Pending(f) => {
                // Spawned so every write makes progress at once (a group
                // commit covers all of them), while the loop awaits only
                // the oldest acknowledgement.
                let write = tokio::spawn(f);
                let wait: BoxFuture<'static, Result<(), PersistError>> = Box::pin(async move {
                    write.await.map_err(|e| {
                        PersistError::Failed(format!("durable write task failed: {e}"))
                    })?
                });
                self.waiting_acks.push_back((Some(wait), ack));
            }
        }
    }

    /// QoS 1/2 messages received whose acknowledgement is not yet sent or
    /// (QoS 2) whose PUBREL has not arrived: what our Receive Maximum bounds.
    fn incoming_inflight(&self) -> usize {
        let qos1_waiting = self
            .waiting_acks
            .iter()
            .filter(|(_, p)| matches!(p, Packet::PubAck(_)))
            .count();
        self.session.incoming.pending() + qos1_waiting
    }

    /// Called when the first waiting acknowledgement's write is durable:
    /// sends it and every following one that needs no wait.
    pub fn release_acks(&mut self) {
        if let Some(front) = self.waiting_acks.front_mut() {
            front.0 = None;
        }
        self.send_ready_acks();
    }

    /// Sends the acknowledgements at the front that wait for nothing.
    pub(super) fn send_ready_acks(&mut self) {
        while self.waiting_acks.front().is_some_and(|(f, _)| f.is_none()) {
            if let Some((_, ack)) = self.waiting_acks.pop_front() {
                self.encode(&ack);
            }
        }
    }

    fn on_pubrec(&mut self, a: PubAck) {
        match self.session.outgoing.on_pubrec(a.pkid, a.reason_code) {
            Ok(PubRecOutcome::SendPubRel) => {
                // Remembered, so a restart resends PUBREL and not the
                // message (W7).
                let sent = self.session.outgoing.pending().find(|i| i.pkid == a.pkid);
                if let (Some(i), true) = (sent, self.session.is_persistent()) {
                    self.broker.persistence.inflight(
                        &self.session.client_id,
                        i.delivery.message.id,
                        a.pkid,
                        Stage::AwaitComp,
                    );
                }
                self.encode(&Packet::PubRel(ack(a.pkid, 0)));
            }
            Ok(PubRecOutcome::Refused(d)) => self.ack_persistence(&d),
            Err(_) => self.encode(&Packet::PubRel(ack(
                a.pkid,
                reason::PACKET_IDENTIFIER_NOT_FOUND,
            ))),
        }
    }

    /// PUBCOMP waits for the release record to be durable (review finding
    /// D3): a restart cannot make a completed id pending again, which would
    /// swallow the client's next message with that id.
    fn on_pubrel(&mut self, a: PubAck) {
        let known = self.session.incoming.on_pubrel(a.pkid);
        let durable = match known && self.session.is_persistent() {
            true => self
                .broker
                .persistence
                .incoming_qos2(&self.session.client_id, a.pkid, false),
            false => Durability::Done,
        };
        let code = if known {
            0
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.acknowledge(durable, Packet::PubComp(ack(a.pkid, code)));
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
        let v5 = self.version.is_v5();
        let id = subscribe.properties.subscription_identifier;
        let limits = &self.broker.config.limits;
        let (max_filters, max_subscriptions) = (
            limits.max_filters_per_subscribe,
            limits.max_subscriptions_per_client,
        );
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        // Filters already handled in this packet: a repeat gets the same
        // code and queues no retained messages again.
        let mut seen: std::collections::HashMap<&str, u8> = std::collections::HashMap::new();
        for (i, f) in subscribe.filters.iter().enumerate() {
            if i >= max_filters {
                // Beyond the per-packet cap: refused without being looked at.
                codes.push(reason::QUOTA_EXCEEDED);
                continue;
            }
            if let Some(&code) = seen.get(f.filter.as_str()) {
                codes.push(code);
                continue;
            }
            let (group, inner) = router::split_shared(&f.filter);
            if let Some(code) = self.refusal(f, group.is_some(), max_subscriptions)? {
                codes.push(code);
                seen.insert(&f.filter, code);
                continue;
            }
            seen.insert(&f.filter, f.qos as u8);
            let options = SubscriptionOptions {
                qos: f.qos,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                retain_handling: f.retain_handling,
                id,
            };
            let existed = self
                .broker
                .subscribe(&mut self.session, &f.filter, options.clone());
            codes.push(f.qos as u8);
            let send_retained = group.is_none()
                && match f.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                // Streamed by `pump` under the inflight window and the
                // write batch, one filter at a time (see `outbound`).
                retained.push(RetainedSend::new(inner, options.qos, id));
            }
        }
        self.broker.save_subscriptions(&self.session);
        let reason_codes = if v5 {
            codes
        } else {
            // 3.1.1 knows one failure code (0x80).
            codes
                .into_iter()
                .map(|c| {
                    if c >= 0x80 {
                        reason::UNSPECIFIED_ERROR
                    } else {
                        c
                    }
                })
                .collect()
        };
        self.encode(&Packet::SubAck(SubAck {
            pkid: subscribe.pkid,
            reason_codes,
            ..SubAck::default()
        }));
        // Retained messages go out after the SUBACK, ahead of newer traffic.
        self.retained.extend(retained);
        Ok(())
    }

    /// Why one filter of a SUBSCRIBE is refused (its SUBACK code), if it
    /// is: validity, limits, deny-list overlap and ACL (see `policy`), then
    /// the per-client subscription cap (a filter the session already has
    /// does not count again). No Local on a shared subscription is a
    /// protocol error that closes the connection.
    fn refusal(
        &self,
        f: &crate::protocol::SubscribeFilter,
        shared: bool,
        max_subscriptions: usize,
    ) -> Result<Option<u8>, Exit> {
        if shared && f.no_local {
            return Err(Exit::Protocol(
                reason::PROTOCOL_ERROR,
                "No Local on a shared subscription",
            ));
        }
        if let Err(code) = policy::may_subscribe(&self.broker, &self.identity, &f.filter) {
            return Ok(Some(code));
        }
        if !self.session.subscriptions.contains_key(&f.filter)
            && self.session.subscriptions.len() >= max_subscriptions
        {
            return Ok(Some(reason::QUOTA_EXCEEDED));
        }
        Ok(None)
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let existed = self.broker.unsubscribe(&mut self.session, filter);
            reason_codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.broker.save_subscriptions(&self.session);
        self.encode(&Packet::UnsubAck(UnsubAck {
            pkid: unsubscribe.pkid,
            reason_codes,
            ..UnsubAck::default()
        }));
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Exit {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.session.expiry_interval == 0 && expiry != 0 {
                return Exit::Protocol(
                    reason::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 in CONNECT",
                );
            }
            let capped = expiry.min(self.broker.config.limits.max_session_expiry);
            self.session.set_expiry(capped);
        }
        if d.reason_code == reason::DISCONNECT_WITH_WILL_MESSAGE {
            Exit::ClientWithWill
        } else {
            Exit::Client
        }
    }
}

fn ack(pkid: u16, reason_code: u8) -> PubAck {
    PubAck {
        pkid,
        reason_code,
        ..PubAck::default()
    }
}

//! The bridge's local publishes (a child of `link`): dead letters on
//! `dead_letter_topic` and downlink messages from the cloud.
//!
//! Invariants: a dead letter's lane entry is deleted only after its local
//! publish is durable (or at once when no `dead_letter_topic` is set); a
//! downlink message is acknowledged to the cloud only after its local publish
//! is durable; every downlink message enters the local broker through
//! [`Bridge::publish_downlink`], the one place for the local publish policy.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Bridge, LinkError};
use crate::bridge::lane_machine::DeadLetterReason;
use crate::bridge::stats::add;
use crate::hooks::PersistError;
use crate::protocol::{self, Packet, ProtocolVersion, PubAck, Publish, PublishProperties, QoS};
use crate::router::{Delivery, Message};

impl Bridge {
    /// Logs and counts a dead letter, publishes it on `dead_letter_topic`
    /// if set (durably, before the lane entry goes), then deletes it.
    pub(super) async fn dead_letter(
        &mut self,
        lane: usize,
        delivery: Delivery,
        reason: DeadLetterReason,
    ) {
        let lane_id = self
            .lanes
            .get(lane)
            .map_or_else(String::new, |l| l.session.client_id.to_string());
        add(&self.stats.messages_rejected, 1);
        tracing::warn!(bridge = %self.config.name, lane = %lane_id,
            topic = %delivery.message.topic, reason = %reason, "dead letter: message not forwarded");
        if let Some(topic) = &self.config.dead_letter_topic {
            let mut properties = PublishProperties {
                payload_format_indicator: delivery.message.properties.payload_format_indicator,
                content_type: delivery.message.properties.content_type.clone(),
                user_properties: delivery.message.properties.user_properties.clone(),
                ..PublishProperties::default()
            };
            properties.user_properties.extend([
                ("reason".to_string(), reason.to_string()),
                ("topic".to_string(), delivery.message.topic.clone()),
                ("lane".to_string(), lane_id),
            ]);
            let message = Message::new(
                topic.clone(),
                delivery.message.payload.clone(),
                delivery.qos.max(QoS::AtLeastOnce),
                false,
                properties,
                // As a downlink: never forwarded back up by a lane.
                Some(self.downlink_publisher.clone()),
            );
            if let Err(e) = self.broker.publish(Arc::new(message)).wait().await {
                // Kept in the store: it comes back after a restart.
                tracing::error!(bridge = %self.config.name, error = %e,
                    "dead letter not stored; the lane entry is kept");
                return;
            }
        }
        self.ack_lane(lane, &delivery);
    }

    /// A cloud message: publish it locally under its mapped topic, then
    /// acknowledge it to the cloud once it is durable here.
    pub(super) async fn downlink(
        &mut self,
        p: Publish,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        add(&self.stats.messages_received, 1);
        let rule = self
            .config
            .downlinks
            .iter()
            .find(|d| protocol::topic::matches(&d.filter, &p.topic))
            .cloned();
        let duplicate = p.qos == QoS::ExactlyOnce && !self.machine.downlink_qos2(p.pkid);
        if let (Some(rule), false) = (rule, duplicate) {
            let topic = p
                .topic
                .strip_prefix(rule.strip_prefix.as_str())
                .unwrap_or(&p.topic)
                .to_string();
            let size = p.payload.len();
            if crate::policy::may_publish_downlink(&self.broker, &self.config.name, &topic, size) {
                let qos = p
                    .qos
                    .min(QoS::from_u8(rule.qos).unwrap_or(QoS::AtLeastOnce));
                let message = Message::new(
                    topic,
                    p.payload.clone(),
                    qos,
                    p.retain,
                    p.properties.clone(),
                    Some(self.downlink_publisher.clone()),
                );
                if let Err(e) = self.publish_downlink(message).await {
                    // Not acknowledged: the cloud sends it again, and then
                    // it must not pass for a duplicate.
                    self.machine.downlink_released(p.pkid);
                    tracing::error!(bridge = %self.config.name, error = %e, "downlink message not stored");
                    return Ok(());
                }
            }
        }
        let ack = PubAck {
            pkid: p.pkid,
            ..Default::default()
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => protocol::encode(&Packet::PubAck(ack), version, wbuf)?,
            QoS::ExactlyOnce => protocol::encode(&Packet::PubRec(ack), version, wbuf)?,
        }
        Ok(())
    }

    /// The one call site through which cloud (downlink) messages enter the
    /// local broker: the place for the local publish policy (M7).
    async fn publish_downlink(&self, message: Message) -> Result<(), PersistError> {
        self.broker.publish(Arc::new(message)).wait().await
    }
}

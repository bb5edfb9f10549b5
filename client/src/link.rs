//! The two rumqttc flavours (3.1.1 and 5) behind one small interface.
//!
//! rumqttc has separate types per protocol version. The connection task
//! only needs a few operations (hand a publish over, subscribe, disconnect)
//! and a few events (CONNACK, packet id reports, acks, messages), so this
//! module maps both flavours onto [`Link`], [`EventLoop`] and [`LinkEvent`].

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::v5::mqttbytes::QoS as QoS5;

use crate::error::ConnectFailure;
use crate::options::{qos_v4, qos_v5, ConnectOptions, Protocol};
use crate::outbox::OutMessage;
use crate::ClientError;

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Topic it was published on.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS of the delivery.
    pub qos: u8,
    /// Retain flag (set for retained messages sent on subscribe).
    pub retain: bool,
    /// v5 content type, if any.
    pub content_type: Option<String>,
    /// v5 user properties.
    pub user_properties: Vec<(String, String)>,
}

/// What the connection task learns from one poll of the event loop.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    ConnAck {
        session_present: bool,
    },
    OutgoingPublish(u16),
    AwaitAck(u16),
    /// PUBACK or PUBREC; `rejected` holds a v5 failure reason.
    Ack {
        pkid: u16,
        rejected: Option<String>,
    },
    Message(Received),
    SubAck {
        failures: usize,
    },
    DisconnectSent,
    Other,
}

/// Sending half: rumqttc's request channel.
#[derive(Clone)]
pub(crate) enum Link {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Receiving half: rumqttc's event loop.
pub(crate) enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Creates both halves for `options`.
pub(crate) fn new(options: &ConnectOptions) -> Result<(Link, EventLoop), ClientError> {
    let client_id = options.effective_client_id();
    let timeout = options.connect_timeout.as_secs().max(1);
    match options.protocol {
        Protocol::V311 => {
            let (client, mut el) =
                rumqttc::AsyncClient::new(options.v311(&client_id)?, options.request_capacity());
            let mut net = rumqttc::NetworkOptions::new();
            net.set_connection_timeout(timeout);
            el.set_network_options(net);
            Ok((Link::V311(client), EventLoop::V311(Box::new(el))))
        }
        Protocol::V5 => {
            let mut o = options.v5(&client_id)?;
            let mut net = rumqttc::NetworkOptions::new();
            net.set_connection_timeout(timeout);
            o.set_network_options(net);
            let (client, el) = rumqttc::v5::AsyncClient::new(o, options.request_capacity());
            Ok((Link::V5(client), EventLoop::V5(Box::new(el))))
        }
    }
}

impl Link {
    /// Hands a message to rumqttc without waiting; false if its channel is full.
    pub(crate) fn try_publish(&self, m: &OutMessage) -> bool {
        match self {
            Link::V311(c) => match qos_v4(m.qos) {
                Ok(qos) => c
                    .try_publish(&m.topic, qos, m.retain, m.payload.to_vec())
                    .is_ok(),
                Err(_) => false,
            },
            Link::V5(c) => match qos_v5(m.qos) {
                Ok(qos) => c
                    .try_publish_with_properties(
                        &m.topic,
                        qos,
                        m.retain,
                        m.payload.clone(),
                        properties(m),
                    )
                    .is_ok(),
                Err(_) => false,
            },
        }
    }

    /// Sends a QoS 0 message, waiting for room in rumqttc's channel.
    pub(crate) async fn publish_qos0(&self, m: OutMessage) -> Result<(), ClientError> {
        let sent = match self {
            Link::V311(c) => c
                .publish(
                    &m.topic,
                    rumqttc::QoS::AtMostOnce,
                    m.retain,
                    m.payload.to_vec(),
                )
                .await
                .is_ok(),
            Link::V5(c) => {
                let props = properties(&m);
                c.publish_with_properties(&m.topic, QoS5::AtMostOnce, m.retain, m.payload, props)
                    .await
                    .is_ok()
            }
        };
        sent.then_some(()).ok_or(ClientError::Closed)
    }

    /// Queues a SUBSCRIBE without waiting; false if the channel is full or closed.
    pub(crate) fn try_subscribe(&self, filter: &str, qos: u8) -> bool {
        match self {
            Link::V311(c) => qos_v4(qos).is_ok_and(|q| c.try_subscribe(filter, q).is_ok()),
            Link::V5(c) => qos_v5(qos).is_ok_and(|q| c.try_subscribe(filter, q).is_ok()),
        }
    }

    /// Queues a DISCONNECT.
    pub(crate) async fn disconnect(&self) -> Result<(), ClientError> {
        let ok = match self {
            Link::V311(c) => c.disconnect().await.is_ok(),
            Link::V5(c) => c.disconnect().await.is_ok(),
        };
        ok.then_some(()).ok_or(ClientError::Closed)
    }
}

fn properties(m: &OutMessage) -> m5::PublishProperties {
    m5::PublishProperties {
        content_type: m.content_type.clone(),
        user_properties: m.user_properties.clone(),
        ..Default::default()
    }
}

impl EventLoop {
    /// Polls once. `connected` tells a refused/failed connect from a lost link.
    pub(crate) async fn poll(&mut self, connected: bool) -> Result<LinkEvent, ConnectFailure> {
        match self {
            EventLoop::V311(el) => match el.poll().await {
                Ok(event) => Ok(event_v4(event)),
                Err(e) => Err(failure_v4(e, connected)),
            },
            EventLoop::V5(el) => match el.poll().await {
                Ok(event) => Ok(event_v5(event)),
                Err(e) => Err(failure_v5(e, connected)),
            },
        }
    }

    /// Moves requests still in rumqttc's channel into its pending list, so
    /// that after an error everything handed over is in one known place.
    pub(crate) fn settle(&mut self) {
        match self {
            EventLoop::V311(el) => el.clean(),
            EventLoop::V5(el) => el.clean(),
        }
    }
}

fn event_v4(event: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match event {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::Ack {
            pkid: a.pkid,
            rejected: None,
        },
        Event::Incoming(Packet::PubRec(a)) => LinkEvent::Ack {
            pkid: a.pkid,
            rejected: None,
        },
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Message(Received {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            content_type: None,
            user_properties: vec![],
        }),
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            failures: s
                .return_codes
                .iter()
                .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::OutgoingPublish(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => LinkEvent::AwaitAck(pkid),
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

fn event_v5(event: rumqttc::v5::Event) -> LinkEvent {
    use m5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    match event {
        Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            session_present: c.session_present,
        },
        Event::Incoming(Packet::PubAck(a)) => {
            let ok = matches!(
                a.reason,
                m5::PubAckReason::Success | m5::PubAckReason::NoMatchingSubscribers
            );
            ack(a.pkid, ok, &a.reason)
        }
        Event::Incoming(Packet::PubRec(a)) => {
            let ok = matches!(
                a.reason,
                m5::PubRecReason::Success | m5::PubRecReason::NoMatchingSubscribers
            );
            ack(a.pkid, ok, &a.reason)
        }
        Event::Incoming(Packet::Publish(p)) => {
            let (content_type, user_properties) = match p.properties {
                Some(props) => (props.content_type, props.user_properties),
                None => (None, vec![]),
            };
            LinkEvent::Message(Received {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                qos: p.qos as u8,
                retain: p.retain,
                content_type,
                user_properties,
            })
        }
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::SubAck {
            failures: s
                .return_codes
                .iter()
                .filter(|c| !matches!(c, m5::SubscribeReasonCode::Success(_)))
                .count(),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => LinkEvent::OutgoingPublish(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => LinkEvent::AwaitAck(pkid),
        Event::Outgoing(Outgoing::Disconnect) => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

/// A v5 acknowledgement; a failure reason code is kept for the application.
fn ack(pkid: u16, ok: bool, reason: &impl std::fmt::Debug) -> LinkEvent {
    LinkEvent::Ack {
        pkid,
        rejected: (!ok).then(|| format!("{reason:?}")),
    }
}

fn failure_v4(e: rumqttc::ConnectionError, connected: bool) -> ConnectFailure {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            ConnectFailure::NotAuthorized(format!("{e}"))
        }
        E::ConnectionRefused(_) | E::NotConnAck(_) => ConnectFailure::Refused(e.to_string()),
        E::Tls(_) => ConnectFailure::Tls(e.to_string()),
        _ if connected => ConnectFailure::Lost(e.to_string()),
        _ => ConnectFailure::Unreachable(e.to_string()),
    }
}

fn failure_v5(e: rumqttc::v5::ConnectionError, connected: bool) -> ConnectFailure {
    use m5::ConnectReturnCode as C;
    use rumqttc::v5::ConnectionError as E;
    match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            ConnectFailure::NotAuthorized(format!("{e}"))
        }
        E::ConnectionRefused(_) | E::NotConnAck(_) => ConnectFailure::Refused(e.to_string()),
        E::Tls(_) => ConnectFailure::Tls(e.to_string()),
        _ if connected => ConnectFailure::Lost(e.to_string()),
        _ => ConnectFailure::Unreachable(e.to_string()),
    }
}

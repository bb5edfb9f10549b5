//! Connect options with edgemq's defaults, turned into rumqttc options.
//!
//! Applications describe a connection once (broker, protocol version,
//! session, credentials, TLS, outbox size) and the client builds the
//! rumqttc 3.1.1 or 5 options from it, so the rest of the crate never
//! branches on the version except where the wire really differs.

use std::time::Duration;

use bytes::Bytes;

use crate::tls::TlsOptions;
use crate::ClientError;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0, the default.
    #[default]
    V5,
}

/// Last will, published by the broker when the connection drops without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic of the will message.
    pub topic: String,
    /// Payload of the will message.
    pub payload: Bytes,
    /// QoS of the will message.
    pub qos: u8,
    /// Retain flag of the will message.
    pub retain: bool,
}

/// Everything needed to connect; `ConnectOptions::new` gives edgemq's defaults.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883, or 8883 with TLS).
    pub port: u16,
    /// Client identifier; empty picks `edgemq-<pid>-<nanos>`.
    pub client_id: String,
    /// Protocol version.
    pub protocol: Protocol,
    /// Keepalive interval.
    pub keep_alive: Duration,
    /// Clean session (3.1.1) / clean start (5). `false` = persistent session.
    pub clean_session: bool,
    /// v5 session expiry for persistent sessions (3.1.1 sessions never expire).
    pub session_expiry_secs: u32,
    /// User name.
    pub username: Option<String>,
    /// Password (needs a user name on 3.1.1; sent with an empty one if absent).
    pub password: Option<String>,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<TlsOptions>,
    /// Last will.
    pub will: Option<Will>,
    /// Maximum unacknowledged QoS 1/2 messages kept by the outbox.
    pub outbox_capacity: usize,
    /// Maximum QoS 1/2 publishes in flight on the wire.
    pub inflight: u16,
    /// Largest packet accepted or sent, in bytes.
    pub max_packet_size: u32,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Capacity of the event channel handed to the application.
    pub event_capacity: usize,
}

impl ConnectOptions {
    /// Options for `host:port` with edgemq's defaults: MQTT 5, clean session,
    /// 30 s keepalive, outbox of 10,000 messages, 100 in flight.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            client_id: String::new(),
            protocol: Protocol::V5,
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            session_expiry_secs: 3600,
            username: None,
            password: None,
            tls: None,
            will: None,
            outbox_capacity: 10_000,
            inflight: 100,
            max_packet_size: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            event_capacity: 1024,
        }
    }

    /// The client id, generated when empty.
    pub(crate) fn effective_client_id(&self) -> String {
        if !self.client_id.is_empty() {
            return self.client_id.clone();
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("edgemq-{}-{nanos}", std::process::id())
    }

    /// Capacity of rumqttc's request channel: room for the whole outbox
    /// plus control requests, so handing queued messages rarely waits.
    pub(crate) fn request_capacity(&self) -> usize {
        self.outbox_capacity.saturating_add(256)
    }

    fn transport(&self) -> Result<rumqttc::Transport, ClientError> {
        Ok(match &self.tls {
            None => rumqttc::Transport::Tcp,
            Some(tls) => {
                rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls.client_config()?))
            }
        })
    }

    /// rumqttc 3.1.1 options.
    pub(crate) fn v311(&self, client_id: &str) -> Result<rumqttc::MqttOptions, ClientError> {
        let mut o = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(self.clean_session)
            .set_inflight(self.inflight.max(1))
            .set_request_channel_capacity(self.request_capacity())
            .set_max_packet_size(self.max_packet_size as usize, self.max_packet_size as usize)
            .set_transport(self.transport()?);
        if self.username.is_some() || self.password.is_some() {
            o.set_credentials(
                self.username.clone().unwrap_or_default(),
                self.password.clone().unwrap_or_default(),
            );
        }
        if let Some(w) = &self.will {
            o.set_last_will(rumqttc::LastWill::new(
                &w.topic,
                w.payload.to_vec(),
                qos_v4(w.qos)?,
                w.retain,
            ));
        }
        Ok(o)
    }

    /// rumqttc 5 options.
    pub(crate) fn v5(&self, client_id: &str) -> Result<rumqttc::v5::MqttOptions, ClientError> {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)))
            .set_clean_start(self.clean_session)
            .set_outgoing_inflight_upper_limit(self.inflight.max(1))
            .set_request_channel_capacity(self.request_capacity())
            .set_max_packet_size(Some(self.max_packet_size))
            .set_transport(self.transport()?);
        if !self.clean_session {
            o.set_session_expiry_interval(Some(self.session_expiry_secs));
        }
        if self.username.is_some() || self.password.is_some() {
            o.set_credentials(
                self.username.clone().unwrap_or_default(),
                self.password.clone().unwrap_or_default(),
            );
        }
        if let Some(w) = &self.will {
            o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                &w.topic,
                w.payload.to_vec(),
                qos_v5(w.qos)?,
                w.retain,
                None,
            ));
        }
        Ok(o)
    }
}

/// 3.1.1 QoS from a number.
pub(crate) fn qos_v4(qos: u8) -> Result<rumqttc::QoS, ClientError> {
    rumqttc::qos(qos).map_err(|_| ClientError::InvalidQos(qos))
}

/// 5.0 QoS from a number.
pub(crate) fn qos_v5(qos: u8) -> Result<rumqttc::v5::mqttbytes::QoS, ClientError> {
    rumqttc::v5::mqttbytes::qos(qos).ok_or(ClientError::InvalidQos(qos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v311_options_follow_the_settings() {
        let mut o = ConnectOptions::new("gw", 1883);
        o.clean_session = false;
        o.password = Some("pw".into());
        o.inflight = 0;
        o.will = Some(Will {
            topic: "status/gw".into(),
            payload: Bytes::from_static(b"offline"),
            qos: 1,
            retain: true,
        });
        let m = o.v311("id").unwrap();
        assert!(!m.clean_session());
        assert_eq!(m.client_id(), "id");
        assert_eq!(m.inflight(), 1, "at least one in flight");
        let login = m.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("", "pw")
        );
        assert_eq!(m.last_will().unwrap().topic, "status/gw");
    }

    #[test]
    fn v5_persistent_sessions_get_an_expiry() {
        let mut o = ConnectOptions::new("gw", 1883);
        assert_eq!(o.v5("id").unwrap().session_expiry_interval(), None);
        o.clean_session = false;
        let m = o.v5("id").unwrap();
        assert!(!m.clean_start());
        assert_eq!(m.session_expiry_interval(), Some(3600));
    }

    #[test]
    fn invalid_will_qos_is_refused() {
        let mut o = ConnectOptions::new("gw", 1883);
        o.will = Some(Will {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: 3,
            retain: false,
        });
        assert!(matches!(o.v311("id"), Err(ClientError::InvalidQos(3))));
        assert!(matches!(o.v5("id"), Err(ClientError::InvalidQos(3))));
    }

    #[test]
    fn generated_client_ids_are_distinct_from_explicit_ones() {
        let mut o = ConnectOptions::new("gw", 1883);
        assert!(o.effective_client_id().starts_with("edgemq-"));
        o.client_id = "mine".into();
        assert_eq!(o.effective_client_id(), "mine");
    }
}

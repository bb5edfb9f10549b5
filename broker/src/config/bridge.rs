//! The `[[bridge]]` configuration blocks (keys fixed by issue 5).

use serde::Deserialize;

use crate::protocol::topic::valid_topic_filter;

/// One cloud uplink. `Debug` is written by hand in `config::security`: it
/// never prints the password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub name: String,
    /// `host:port` of the cloud broker; resolved on every connection attempt.
    pub address: String,
    #[serde(default)]
    pub protocol: BridgeProtocol,
    pub client_id: String,
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `[bridge.tls]`: connect with TLS (rustls, ring).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default, rename = "forward")]
    pub forwards: Vec<ForwardRule>,
    #[serde(default, rename = "downlink")]
    pub downlinks: Vec<DownlinkRule>,
    /// Reconnect backoff bounds in milliseconds (exponential, with jitter).
    #[serde(default = "default_backoff_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub reconnect_max_ms: u64,
    /// QoS 1 messages in flight towards the cloud (capped by its Receive Maximum).
    #[serde(default = "default_window")]
    pub max_inflight: u16,
    /// Local topic on which messages the cloud refused (or cannot take) are
    /// published, with the reason as a v5 user property; none by default.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// What to do at startup with a stored lane no forward rule owns.
    #[serde(default)]
    pub orphan_lanes: OrphanLanes,
    /// Store quota of each of this bridge's lanes, in messages; `None`: the
    /// `[storage]` per-session default.
    #[serde(default)]
    pub max_stored_messages: Option<u64>,
    /// Store quota of each lane, in bytes of stored records; `None`: the
    /// `[storage]` per-session default.
    #[serde(default)]
    pub max_stored_bytes: Option<u64>,
    /// A full lane: `reject` (the message is not stored for the lane;
    /// refused when no other destination takes it) or `drop-oldest` (the
    /// lane loses its own oldest message); `None`: `[storage] overflow`.
    #[serde(default)]
    pub overflow: Option<crate::storage::Overflow>,
}

/// `orphan_lanes`: a stored lane whose forward rule was removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OrphanLanes {
    /// Forward its backlog under the prefix it was queued for, then delete it.
    #[default]
    Drain,
    /// Delete it and its backlog (logged with the count).
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    #[default]
    V5,
    V311,
}

/// `[bridge.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that may sign the cloud's certificate.
    pub ca_file: std::path::PathBuf,
    /// Client certificate chain and key (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// Name checked against the cloud's certificate; default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[bridge.batch]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub mode: BatchMode,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub linger_ms: u64,
    pub envelope_topic: Option<String>,
    pub encoding: crate::envelope::Encoding,
    pub compression: crate::envelope::Compression,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            mode: BatchMode::Mirror,
            max_messages: 500,
            max_bytes: 262_144,
            linger_ms: 20,
            envelope_topic: None,
            encoding: crate::envelope::Encoding::Postcard,
            compression: crate::envelope::Compression::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// One cloud PUBLISH per message, pipelined.
    #[default]
    Mirror,
    /// Many messages per cloud PUBLISH (see `envelope`).
    Envelope,
}

/// `[[bridge.forward]]`: local messages to the cloud.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub filter: String,
    #[serde(default)]
    pub remote_prefix: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Keep QoS 0 messages in the durable lane too (sent to the cloud at
    /// QoS 1); otherwise they wait in a bounded memory buffer and are
    /// dropped (counted) when it is full.
    #[serde(default)]
    pub store_qos0: bool,
}

/// `[[bridge.downlink]]`: cloud messages (commands) to local topics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkRule {
    pub filter: String,
    #[serde(default)]
    pub strip_prefix: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_keepalive() -> u16 {
    30
}
fn default_backoff_min() -> u64 {
    200
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_window() -> u16 {
    100
}
fn default_qos() -> u8 {
    1
}
fn default_priority() -> u8 {
    5
}

impl BridgeConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.is_empty() || self.name.contains(['/', '+', '#']) {
            return Err(("name", "must be non-empty without '/', '+' or '#'".into()));
        }
        if self.client_id.is_empty() {
            return Err(("client_id", "must not be empty".into()));
        }
        if self.max_stored_messages == Some(0) {
            return Err(("max_stored_messages", "must be at least 1".into()));
        }
        if self.max_stored_bytes.is_some_and(|b| b < 1024) {
            return Err(("max_stored_bytes", "must be at least 1024".into()));
        }
        if self.forwards.is_empty() && self.downlinks.is_empty() {
            return Err((
                "forward",
                "a bridge needs at least one forward or downlink rule".into(),
            ));
        }
        for f in &self.forwards {
            if !valid_topic_filter(&f.filter) {
                return Err((
                    "forward.filter",
                    format!("invalid topic filter {:?}", f.filter),
                ));
            }
            if f.qos > 2 {
                return Err(("forward.qos", "must be 0, 1 or 2".into()));
            }
            if f.priority > 9 {
                return Err(("forward.priority", "must be between 0 and 9".into()));
            }
        }
        for d in &self.downlinks {
            if !valid_topic_filter(&d.filter) {
                return Err((
                    "downlink.filter",
                    format!("invalid topic filter {:?}", d.filter),
                ));
            }
            if d.qos > 2 {
                return Err(("downlink.qos", "must be 0, 1 or 2".into()));
            }
        }
        if self.batch.mode == BatchMode::Envelope && self.batch.envelope_topic.is_none() {
            return Err((
                "batch.envelope_topic",
                "is required in envelope mode".into(),
            ));
        }
        if let Some(t) = &self.dead_letter_topic {
            if !crate::protocol::topic::valid_topic_name(t) || t.starts_with('$') {
                return Err((
                    "dead_letter_topic",
                    format!("{t:?} is not a topic name (no wildcards, not starting with '$')"),
                ));
            }
        }
        if self.batch.max_messages == 0 || self.max_inflight == 0 {
            return Err(("batch.max_messages", "must be at least 1".into()));
        }
        Ok(())
    }
}

//! Typed broker configuration.
//!
//! Why this module exists: an operator must be able to run `edgemq` with no
//! file at all, and when they do write one, a typo or a bad value must be
//! reported with the file, line and key instead of being silently ignored.
//!
//! * The defaults live in `broker/config/default.toml`, embedded
//!   deflate-compressed by `build.rs` and printed by
//!   `--print-default-config` ([`default_config_text`]). The Rust
//!   `Default` impls below hold the same values; a unit test pins the two
//!   together so they cannot drift.
//! * A file is deserialized with `deny_unknown_fields`; every section and key
//!   is optional and falls back to its default (the file is merged over the
//!   defaults key by key). `[[listener]]` blocks replace the default listener.
//! * Errors carry the span toml reports; [`ConfigError`] turns it into
//!   `FILE:LINE: key `section.key`: message`. Semantic checks (zero limits,
//!   bad addresses) are located the same way.

pub mod auth;
pub mod bridge;
pub mod http;
mod listener;
mod locate;
pub mod metrics;
mod security;

pub use listener::{ListenerConfig, ListenerProtocol};

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::storage::StorageConfig;

/// A validation failure: section, key and what is wrong.
type Fault = (&'static str, &'static str, String);

/// The embedded default configuration, fully commented.
const DEFAULT_CONFIG_DEFLATE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/default.toml.deflate"));

/// The commented default configuration (`broker/config/default.toml`),
/// embedded compressed (the binary's size budget, docs/ARM.md).
pub fn default_config_text() -> String {
    use std::io::Read;
    let mut text = String::new();
    match flate2::read::DeflateDecoder::new(DEFAULT_CONFIG_DEFLATE).read_to_string(&mut text) {
        Ok(_) => text,
        // Cannot happen with the bytes build.rs wrote; say so rather than
        // print half a file.
        Err(e) => format!("# the embedded default configuration is damaged: {e}\n"),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    pub limits: Limits,
    pub sys: SysConfig,
    pub acl: SimpleAcl,
    pub log: LogConfig,
    /// `[storage]`: the durable store (owned by the storage module).
    pub storage: StorageConfig,
    /// `[metrics]`: the old name of `[http]` (`listen` only).
    pub metrics: metrics::MetricsConfig,
    /// `[http]`: metrics, health, API and status page (see `http`).
    pub http: http::HttpConfig,
    /// `[auth]`: password and ACL files (see `auth`).
    pub auth: auth::AuthConfig,
    /// `[[bridge]]`: cloud uplinks (see `bridge::config`).
    #[serde(rename = "bridge")]
    pub bridges: Vec<bridge::BridgeConfig>,
}

/// `[server]`: runtime and connection admission.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub worker_threads: usize,
    pub max_connections: usize,
    pub connect_timeout_ms: u64,
    pub max_pending_connections: usize,
    pub max_pending_per_address: usize,
}

/// `[limits]`: every queue and size bound of the broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_packet_size: u32,
    pub max_inflight: u16,
    /// QoS 2 packet ids a 3.1.1 client may leave awaiting PUBREL (v5
    /// clients are bounded by `max_inflight`, our Receive Maximum).
    pub max_qos2_pending: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub outbound_capacity: usize,
    pub max_client_id_len: usize,
    pub max_topic_len: usize,
    pub max_topic_levels: usize,
    pub max_keepalive: u16,
    pub max_session_expiry: u32,
    pub max_topic_aliases: u16,
    pub max_retained_messages: usize,
    pub max_retained_bytes: usize,
    pub write_timeout_ms: u64,
    pub max_connect_size: u32,
    pub max_subscriptions_per_client: usize,
    /// Sessions held at once, connected or parked (review M3).
    pub max_sessions: usize,
    pub max_filters_per_subscribe: usize,
    pub max_user_properties: usize,
    /// How long a full subscriber queue may hold publishers back (their
    /// acknowledgements wait, their sockets are not read) before the
    /// subscriber counts as a slow consumer; 0 never waits (drop at once).
    pub slow_consumer_timeout_ms: u64,
    /// What a full queue does with QoS 0 (see [`Qos0Overflow`]).
    pub qos0_overflow: Qos0Overflow,
}

/// `[limits] qos0_overflow`: QoS 0 to a full subscriber queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos0Overflow {
    /// The publisher waits, as for QoS 1, up to `slow_consumer_timeout_ms`;
    /// after that QoS 0 to that subscriber is dropped and counted.
    Wait,
    /// Dropped and counted at once.
    Drop,
}

impl Limits {
    /// Largest first packet (the CONNECT) read before authentication: the
    /// smaller of `max_connect_size` and `max_packet_size`.
    pub fn first_packet_max(&self) -> u32 {
        self.max_connect_size.min(self.max_packet_size)
    }
}

/// `[sys]`: the `$SYS` publisher.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysConfig {
    pub interval_secs: u64,
}

/// `[acl]`: topic filters denied to every client.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimpleAcl {
    pub deny_publish: Vec<String>,
    pub deny_subscribe: Vec<String>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            listeners: vec![ListenerConfig::mqtt(SocketAddr::from((
                [127, 0, 0, 1],
                1883,
            )))],
            limits: Limits::default(),
            sys: SysConfig::default(),
            acl: SimpleAcl::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            bridges: Vec::new(),
            auth: auth::AuthConfig::default(),
            metrics: metrics::MetricsConfig::default(),
            http: http::HttpConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            worker_threads: 1,
            max_connections: 10_000,
            connect_timeout_ms: 10_000,
            max_pending_connections: 512,
            max_pending_per_address: 256,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1_048_576,
            max_inflight: 100,
            max_qos2_pending: 100,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            outbound_capacity: 1024,
            max_client_id_len: 128,
            max_topic_len: 4096,
            max_topic_levels: 128,
            max_keepalive: 65535,
            max_session_expiry: u32::MAX,
            max_topic_aliases: 64,
            max_retained_messages: 10_000,
            max_retained_bytes: 64 * 1024 * 1024,
            write_timeout_ms: 30_000,
            max_connect_size: 65_536,
            max_subscriptions_per_client: 1000,
            max_sessions: 10_000,
            max_filters_per_subscribe: 256,
            max_user_properties: 128,
            slow_consumer_timeout_ms: 5_000,
            qos0_overflow: Qos0Overflow::Wait,
        }
    }
}

impl Config {
    /// Retained payload bytes the broker keeps: `max_retained_bytes`, and
    /// with a store at most a quarter of its capacity, so retained messages
    /// (which survive restarts) can never fill the store that persistent
    /// sessions and bridge lanes depend on (review M3).
    pub fn retained_bytes_bound(&self) -> usize {
        let limit = self.limits.max_retained_bytes;
        match self.storage.durability {
            crate::storage::SyncMode::Memory => limit,
            _ => {
                let quarter = usize::try_from(self.storage.capacity / 4).unwrap_or(usize::MAX);
                limit.min(quarter)
            }
        }
    }
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

/// A configuration error, displayed as `FILE:LINE: key `k`: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: key `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Other { file: String, message: String },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_toml(&text, &file)
    }

    /// Parses `text` (named `file` in errors) over the defaults and validates it.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let (line, key) = locate::key_at(text, span.start);
                    ConfigError::Invalid {
                        file: file.to_string(),
                        line,
                        key,
                        message,
                    }
                }
                None => ConfigError::Other {
                    file: file.to_string(),
                    message,
                },
            }
        })?;
        config.validate().map_err(|(section, key, message)| {
            let line = locate::line_of(text, &section, &key).unwrap_or(1);
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                key: format!("{section}.{key}"),
                message,
            }
        })?;
        Ok(config)
    }

    /// Semantic checks serde cannot express; the error names section and key.
    fn validate(&self) -> Result<(), (String, String, String)> {
        self.validate_core()
            .map_err(|(s, k, m)| (s.to_string(), k.to_string(), m))?;
        self.http
            .validate(&self.metrics)
            .map_err(|(key, message)| ("http".to_string(), key.to_string(), message))?;
        self.storage
            .validate()
            .map_err(|(key, message)| ("storage".to_string(), key.to_string(), message))?;
        for b in &self.bridges {
            b.validate().map_err(|(key, message)| {
                (
                    "bridge".to_string(),
                    key.to_string(),
                    format!("bridge {:?}: {message}", b.name),
                )
            })?;
        }
        Ok(())
    }

    fn validate_core(&self) -> Result<(), Fault> {
        self.validate_positive()?;
        self.validate_limit_ranges()?;
        self.validate_listeners_acl_log()
    }

    /// Counts and sizes that must not be 0.
    fn validate_positive(&self) -> Result<(), Fault> {
        let l = &self.limits;
        let positive: [(&'static str, &'static str, u64); 15] = [
            ("limits", "max_sessions", l.max_sessions as u64),
            (
                "server",
                "max_pending_per_address",
                self.server.max_pending_per_address as u64,
            ),
            (
                "server",
                "max_pending_connections",
                self.server.max_pending_connections as u64,
            ),
            (
                "limits",
                "max_subscriptions_per_client",
                l.max_subscriptions_per_client as u64,
            ),
            (
                "limits",
                "max_filters_per_subscribe",
                l.max_filters_per_subscribe as u64,
            ),
            (
                "server",
                "max_connections",
                self.server.max_connections as u64,
            ),
            (
                "server",
                "connect_timeout_ms",
                self.server.connect_timeout_ms,
            ),
            ("limits", "max_inflight", u64::from(l.max_inflight)),
            ("limits", "outbound_capacity", l.outbound_capacity as u64),
            ("limits", "max_client_id_len", l.max_client_id_len as u64),
            ("limits", "max_topic_len", l.max_topic_len as u64),
            ("limits", "max_topic_levels", l.max_topic_levels as u64),
            ("limits", "max_keepalive", u64::from(l.max_keepalive)),
            ("limits", "max_queued_bytes", l.max_queued_bytes as u64),
            ("limits", "write_timeout_ms", l.write_timeout_ms),
        ];
        for (section, key, value) in positive {
            if value == 0 {
                return Err((section, key, "must be greater than 0".to_string()));
            }
        }
        Ok(())
    }

    /// Limits with a floor or a range of their own.
    fn validate_limit_ranges(&self) -> Result<(), Fault> {
        let l = &self.limits;
        if l.max_qos2_pending == 0 {
            return Err((
                "limits",
                "max_qos2_pending",
                "must be greater than 0".to_string(),
            ));
        }
        if l.max_client_id_len < 23 {
            return Err((
                "limits",
                "max_client_id_len",
                "must be at least 23 (MQTT requires servers to accept 23-byte client ids)"
                    .to_string(),
            ));
        }
        if !(64..=268_435_455).contains(&l.max_packet_size) {
            return Err((
                "limits",
                "max_packet_size",
                "must be between 64 and 268435455 bytes".to_string(),
            ));
        }
        // Larger than max_packet_size is allowed: the smaller of the two
        // applies (see `Limits::first_packet_max`).
        if l.max_connect_size < 64 {
            return Err((
                "limits",
                "max_connect_size",
                "must be at least 64 bytes".to_string(),
            ));
        }
        Ok(())
    }

    /// Listeners, ACL filters and the log level.
    fn validate_listeners_acl_log(&self) -> Result<(), Fault> {
        if self.listeners.is_empty() {
            return Err((
                "listener",
                "address",
                "at least one listener is required".to_string(),
            ));
        }
        for l in &self.listeners {
            l.validate()
                .map_err(|(key, m)| ("listener", key, format!("listener {}: {m}", l.address)))?;
        }
        for (key, filters) in [
            ("deny_publish", &self.acl.deny_publish),
            ("deny_subscribe", &self.acl.deny_subscribe),
        ] {
            if let Some(bad) = filters
                .iter()
                .find(|f| !crate::protocol::topic::valid_filter(f))
            {
                return Err(("acl", key, format!("invalid topic filter {bad:?}")));
            }
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::filter::Targets>()
            .is_err()
        {
            return Err((
                "log",
                "level",
                format!("invalid log level {:?}", self.log.level),
            ));
        }
        Ok(())
    }

    /// Worker threads to start: the configured count, or one per core.
    pub fn worker_threads(&self) -> usize {
        match self.server.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

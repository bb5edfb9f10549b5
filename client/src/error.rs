//! Errors of the client library.
//!
//! One enum for everything an application can act on: a full outbox (retry
//! later or use the waiting `publish`), a closed client, bad TLS material (the
//! file and the reason), and connection failures classified so that a CLI can
//! map them to distinct exit codes.

use std::path::PathBuf;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The outbox holds `capacity` unacknowledged messages; `try_publish` gave up.
    #[error("outbox full ({capacity} unacknowledged messages)")]
    OutboxFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// The client was shut down or its connection task ended.
    #[error("client is closed")]
    Closed,
    /// A topic name is empty or contains wildcards or NUL.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// A topic filter is not valid.
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    /// A QoS other than 0, 1 or 2.
    #[error("invalid QoS {0} (expected 0, 1 or 2)")]
    InvalidQos(u8),
    /// TLS material could not be loaded.
    #[error("TLS: {what} {path}: {reason}")]
    Tls {
        /// "CA file", "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS configuration could not be built from valid files.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
}

/// Why a connection attempt or an established connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The broker refused the CONNECT because of credentials or authorisation.
    NotAuthorized(String),
    /// The broker refused the CONNECT for another reason (protocol, client id, ...).
    Refused(String),
    /// TCP could not connect, or timed out.
    Unreachable(String),
    /// TLS handshake or certificate failure.
    Tls(String),
    /// An established connection broke (IO error, protocol error, keepalive).
    Lost(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::NotAuthorized(m) => write!(f, "not authorized: {m}"),
            ConnectFailure::Refused(m) => write!(f, "connection refused by broker: {m}"),
            ConnectFailure::Unreachable(m) => write!(f, "broker unreachable: {m}"),
            ConnectFailure::Tls(m) => write!(f, "TLS failure: {m}"),
            ConnectFailure::Lost(m) => write!(f, "connection lost: {m}"),
        }
    }
}

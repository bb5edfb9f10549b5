//! `[http]`: the operator's HTTP endpoint (served by the `http` module). A
//! plain configuration type: this module imports nothing of the broker.
//! Invariant: `validate` refuses a config with both `[http] listen` and the
//! old `[metrics] listen`, half a TLS pair, or a zero bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve on; absent: off (unless `[metrics] listen` is set).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain: serve HTTPS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// A mosquitto_passwd-style file: its users may read (basic auth).
    pub password_file: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest time one connection is served.
    pub request_timeout_secs: u64,
    /// Largest number of items in one API page.
    pub max_page_size: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            cert_file: None,
            key_file: None,
            password_file: None,
            max_connections: 16,
            request_timeout_secs: 10,
            max_page_size: 500,
        }
    }
}

impl HttpConfig {
    /// The address to serve on: `[http] listen`, else the old `[metrics] listen`.
    pub fn effective_listen(&self, metrics: &super::metrics::MetricsConfig) -> Option<SocketAddr> {
        self.listen.or(metrics.listen)
    }

    /// Semantic checks: (key, message).
    pub fn validate(
        &self,
        metrics: &super::metrics::MetricsConfig,
    ) -> Result<(), (&'static str, String)> {
        if self.listen.is_some() && metrics.listen.is_some() {
            return Err((
                "listen",
                "[metrics] listen is the old name of [http] listen: set only one".into(),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err((
                "cert_file",
                "cert_file and key_file go together (HTTPS needs both)".into(),
            ));
        }
        for (key, value) in [
            ("max_connections", self.max_connections as u64),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_page_size", self.max_page_size as u64),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

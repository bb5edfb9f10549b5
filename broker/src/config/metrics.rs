//! `[metrics]`: where the Prometheus endpoint listens. A plain
//! configuration type: this module imports nothing of the broker.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; absent: off.
    pub listen: Option<SocketAddr>,
}

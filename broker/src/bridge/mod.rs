//! The cloud uplink bridge (docs/ARCHITECTURE.md; issue 12).
//!
//! Design: each forward rule is an *internal persistent session* of the
//! broker (`$bridge/<name>/<hash>/<prefix>`, see `lanes`), subscribed to the
//! rule's filter. That one decision gives the bridge everything the broker
//! already guarantees to persistent subscribers: a matching QoS 1/2 message
//! is in the durable store before its local publisher gets a PUBACK, the
//! lane keeps its order, overflow spills to the store instead of RAM, and
//! after a restart the lanes are restored with everything not yet
//! acknowledged by the cloud.
//!
//! The bridge task (`link`) connects to the cloud with edgemq's own codec
//! (not rumqttc, which drops pending QoS 1 messages when the cloud has lost
//! the session) and drives the IO-free `lane_machine`, which drains the
//! lanes highest priority first within the cloud's CONNACK limits. A lane
//! entry is deleted from the store only on the cloud's success
//! acknowledgement, or as a dead letter (refusal code, too large, or the
//! cloud closing on it three times), or when its v5 expiry passed. After any
//! reconnect every unacknowledged entry is sent again, whether or not the
//! cloud kept its session: at least once, in order. Cloud messages matching
//! a downlink rule are published locally with their prefix stripped.

pub mod lane_machine;
pub mod lanes;
mod link;
mod stats;
mod tls;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod lanes_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod machine_props;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod machine_tests;

use std::sync::Arc;

pub use crate::config::bridge::{
    BatchMode, BridgeConfig, BridgeProtocol, DownlinkRule, ForwardRule, OrphanLanes,
};
pub use lanes::lane_client_id;
pub use stats::BridgeStats;

use crate::broker::Broker;
use crate::session::Session;

/// Prefix of the internal client ids the bridge uses; MQTT clients cannot
/// connect with such an id.
pub const CLIENT_ID_PREFIX: &str = "$bridge/";

/// One lane: its session and rule.
struct Lane {
    rule: ForwardRule,
    session: Session,
    conn_id: u64,
    /// A stored lane no configured rule owns, being drained.
    orphan: bool,
    /// An orphan whose backlog is all forwarded: deleted, nothing to do.
    finished: bool,
}

/// The store quota of each lane of `config`, when it sets one of its own
/// (unset keys fall back to the `[storage]` per-session defaults).
fn lane_quota(broker: &Broker, config: &BridgeConfig) -> Option<crate::storage::Quota> {
    if config.max_stored_messages.is_none()
        && config.max_stored_bytes.is_none()
        && config.overflow.is_none()
    {
        return None;
    }
    let default = broker.config.storage.default_quota();
    Some(crate::storage::Quota {
        messages: config.max_stored_messages.unwrap_or(default.messages),
        bytes: config.max_stored_bytes.unwrap_or(default.bytes),
        overflow: config.overflow,
    })
}

/// Starts every configured bridge; returns their statistics handles.
/// Stored lanes that no rule owns are drained or dropped (see `lanes`).
pub async fn start(broker: &Arc<Broker>, configs: &[BridgeConfig]) -> Vec<Arc<BridgeStats>> {
    lanes::drop_unconfigured(broker, configs).await;
    let mut all = Vec::new();
    for config in configs {
        let mut lanes = Vec::new();
        let mut owned: Vec<String> = Vec::new();
        for rule in &config.forwards {
            let id = lane_client_id(&config.name, rule);
            if owned.contains(&id) {
                continue;
            }
            // The lane's own store quota, before it is restored and fed.
            if let Some(quota) = lane_quota(broker, config) {
                broker.persistence.set_store_quota(&id, Some(quota));
            }
            owned.push(id);
            lanes.push(lanes::open_lane(broker, &config.name, rule).await);
        }
        let orphans = lanes::orphan_lanes(broker, config, configs, &owned).await;
        let stats = Arc::new(BridgeStats::new(&config.name));
        stats::add(&stats.orphan_lanes, orphans.len());
        // Orphans first, so that the stable sort drains an orphan's older
        // backlog ahead of a configured lane of the same priority.
        let mut lanes: Vec<Lane> = orphans.into_iter().chain(lanes).collect();
        // Highest priority first; the lane order is the drain order.
        lanes.sort_by_key(|l| std::cmp::Reverse(l.rule.priority));
        all.push(stats.clone());
        let task = link::Bridge::new(broker.clone(), config.clone(), lanes, stats);
        tokio::spawn(task.run());
    }
    all
}

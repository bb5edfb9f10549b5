//! The cloud uplink bridge (DESIGN.md section 5).
//!
//! Design: each forward rule is an *internal persistent session* of the
//! broker (`$bridge/<name>/<rule>`), subscribed to the rule's filter. That
//! one decision gives the bridge everything the broker already guarantees to
//! persistent subscribers: a matching QoS 1/2 message is in the durable store
//! before its local publisher gets a PUBACK, the lane keeps its order,
//! overflow spills to the store instead of RAM, and after a restart the
//! lanes are restored with everything not yet acknowledged by the cloud.
//!
//! The bridge task (`link`) connects to the cloud with edgemq's own codec
//! (not rumqttc, which drops pending QoS 1 messages when the cloud has lost
//! the session), drains the lanes highest priority first, and acknowledges a
//! lane entry in the store only when the cloud's PUBACK for it arrives. After
//! any reconnect every unacknowledged entry is sent again, whether or not the
//! cloud kept its session: at least once, in order. Cloud messages matching
//! a downlink rule are published locally with their prefix stripped.

pub mod config;
mod link;
mod stats;
mod tls;

use std::sync::Arc;

pub use config::{BatchMode, BridgeConfig, BridgeProtocol, DownlinkRule, ForwardRule};
pub use stats::BridgeStats;

use crate::broker::Broker;
use crate::protocol::{QoS, RetainHandling};
use crate::router::SubscriptionOptions;
use crate::session::{Session, NEVER_EXPIRES};

/// Prefix of the internal client ids the bridge uses; MQTT clients cannot
/// connect with such an id.
pub const CLIENT_ID_PREFIX: &str = "$bridge/";

/// The internal session id of forward rule `index` of bridge `name`.
pub fn lane_client_id(name: &str, index: usize) -> String {
    format!("{CLIENT_ID_PREFIX}{name}/{index}")
}

/// One forward rule's lane: its session and rule.
struct Lane {
    rule: ForwardRule,
    session: Session,
    conn_id: u64,
}

/// Starts every configured bridge; returns their statistics handles.
pub async fn start(broker: &Arc<Broker>, configs: &[BridgeConfig]) -> Vec<Arc<BridgeStats>> {
    let mut all = Vec::new();
    for config in configs {
        let mut lanes = Vec::new();
        for (i, rule) in config.forwards.iter().enumerate() {
            lanes.push(open_lane(broker, &config.name, i, rule).await);
        }
        // Highest priority first; the lane order is the drain order.
        lanes.sort_by_key(|l| std::cmp::Reverse(l.rule.priority));
        let stats = Arc::new(BridgeStats::new(&config.name));
        all.push(stats.clone());
        let task = link::Bridge::new(broker.clone(), config.clone(), lanes, stats);
        tokio::spawn(task.run());
    }
    all
}

async fn open_lane(broker: &Arc<Broker>, name: &str, index: usize, rule: &ForwardRule) -> Lane {
    let client_id: Arc<str> = Arc::from(lane_client_id(name, index).as_str());
    let conn_id = broker.next_id();
    let opened = broker
        .open_session(client_id, false, NEVER_EXPIRES, conn_id)
        .await;
    let mut session = opened.session;
    session.mailbox.set_store_qos0(rule.store_qos0);
    if rule.store_qos0 {
        // Deliveries restored from the store were made before the flag was
        // set: stored QoS 0 messages travel (and are acknowledged) as QoS 1.
        let mut restored = Vec::new();
        session.mailbox.drain(usize::MAX, &mut restored);
        for d in &mut restored {
            d.qos = d.qos.max(QoS::AtLeastOnce);
        }
        session.mailbox.requeue_front(restored);
    }
    let options = SubscriptionOptions {
        qos: QoS::from_u8(rule.qos).unwrap_or(QoS::AtLeastOnce),
        no_local: false,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
        id: None,
    };
    broker
        .router
        .subscribe(&session.mailbox, &rule.filter, options.clone());
    session.subscriptions.insert(rule.filter.clone(), options);
    broker.persistence.save_session(&session.record());
    Lane {
        rule: rule.clone(),
        session,
        conn_id,
    }
}

//! Lane identities and the lanes a bridge starts with (W6).
//!
//! A lane is the internal persistent session
//! `$bridge/<name>/<hash>/<remote prefix>`, where `<hash>` is a 64-bit
//! FNV-1a hash (16 hex digits) of the rule's filter and remote prefix. It
//! does not depend on the rule's position, so reordering rules keeps every
//! backlog with its rule; the remote prefix is in the id so that a lane
//! whose rule is gone can still be drained under the prefix its messages
//! were queued for.
//!
//! Invariants:
//! * every configured forward rule has exactly one lane (rules with the same
//!   filter and prefix share one);
//! * a stored `$bridge/` lane that no configured rule owns (an *orphan*) is
//!   never left subscribed: it is logged and either drained (unsubscribed,
//!   priority 0 unless migrated, deleted once empty) or dropped with its backlog,
//!   according to `orphan_lanes`;
//! * a lane of the older index-keyed form `$bridge/<name>/<i>` is drained
//!   under the prefix (and at the priority) of rule `i` only if rule `i`
//!   still has the filter it was subscribed with, ahead of that rule's new
//!   lane; otherwise its prefix is unknown and it is dropped (logged);
//! * other orphans drain at priority 0, ahead of configured priority-0 lanes
//!   (their messages are older);
//! * lanes of a bridge that is no longer configured are dropped (logged):
//!   there is no cloud to drain them to.

use std::sync::Arc;

use super::{Lane, CLIENT_ID_PREFIX};
use crate::broker::Broker;
use crate::config::bridge::{BridgeConfig, ForwardRule, OrphanLanes};
use crate::protocol::{QoS, RetainHandling};
use crate::router::SubscriptionOptions;
use crate::session::NEVER_EXPIRES;

/// 64-bit FNV-1a: stable across builds and platforms (unlike std's hasher).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The internal session id of `rule`'s lane in bridge `name`.
pub fn lane_client_id(name: &str, rule: &ForwardRule) -> String {
    let hash = fnv1a(&[&rule.filter, &rule.remote_prefix]);
    format!(
        "{CLIENT_ID_PREFIX}{name}/{hash:016x}/{}",
        rule.remote_prefix
    )
}

/// A stored lane id, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneId {
    /// `$bridge/<name>/<hash>/<prefix>`.
    Keyed { bridge: String, prefix: String },
    /// `$bridge/<name>/<index>`, before lanes had stable identities.
    Indexed { bridge: String, index: usize },
}

/// Parses a `$bridge/` client id; `None` for anything else.
pub fn parse_lane_id(client_id: &str) -> Option<LaneId> {
    let rest = client_id.strip_prefix(CLIENT_ID_PREFIX)?;
    let (bridge, rest) = rest.split_once('/')?;
    match rest.split_once('/') {
        Some((hash, prefix)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(LaneId::Keyed {
                bridge: bridge.to_string(),
                prefix: prefix.to_string(),
            })
        }
        Some(_) => None,
        None => Some(LaneId::Indexed {
            bridge: bridge.to_string(),
            index: rest.parse().ok()?,
        }),
    }
}

/// What to do with one stored lane no rule owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrphanPlan {
    /// Drain under this remote prefix, at this priority.
    Drain(String, u8),
    /// Delete with its backlog; the reason is logged.
    Drop(&'static str),
}

/// Decides the fate of stored lane `id` (subscribed to `filters`), given
/// the configured bridges and the ids of their rules' lanes.
pub fn plan_orphan(id: &LaneId, filters: &[String], configs: &[BridgeConfig]) -> OrphanPlan {
    let bridge = match id {
        LaneId::Keyed { bridge, .. } | LaneId::Indexed { bridge, .. } => bridge,
    };
    let Some(config) = configs.iter().find(|c| &c.name == bridge) else {
        return OrphanPlan::Drop("its bridge is no longer configured");
    };
    if config.orphan_lanes == OrphanLanes::Drop {
        return OrphanPlan::Drop("orphan_lanes = \"drop\"");
    }
    match id {
        LaneId::Keyed { prefix, .. } => OrphanPlan::Drain(prefix.clone(), 0),
        LaneId::Indexed { index, .. } => match config.forwards.get(*index) {
            Some(rule) if filters.iter().any(|f| f == &rule.filter) => {
                OrphanPlan::Drain(rule.remote_prefix.clone(), rule.priority)
            }
            _ => OrphanPlan::Drop("an index-keyed lane whose rule changed: its prefix is unknown"),
        },
    }
}

/// Opens the lane of `rule`: resumes its stored session or creates it, and
/// subscribes it to the rule's filter.
pub(super) async fn open_lane(broker: &Arc<Broker>, name: &str, rule: &ForwardRule) -> Lane {
    let client_id: Arc<str> = Arc::from(lane_client_id(name, rule).as_str());
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
    broker.subscribe(&mut session, &rule.filter, options);
    broker.save_subscriptions(&session);
    Lane {
        rule: rule.clone(),
        session,
        conn_id,
        orphan: false,
        finished: false,
    }
}

/// Stored lanes of bridge `config` that none of its rules owns, opened for
/// draining (unsubscribed). Lanes to drop are deleted here.
pub(super) async fn orphan_lanes(
    broker: &Arc<Broker>,
    config: &BridgeConfig,
    configs: &[BridgeConfig],
    owned: &[String],
) -> Vec<Lane> {
    let mut lanes = Vec::new();
    for client_id in broker.parked_client_ids(&format!("{CLIENT_ID_PREFIX}{}/", config.name)) {
        if owned.iter().any(|o| **o == *client_id) {
            continue;
        }
        let Some(id) = parse_lane_id(&client_id) else {
            continue;
        };
        if let Some(lane) = open_orphan(broker, client_id, &id, configs).await {
            lanes.push(lane);
        }
    }
    lanes
}

/// Drops the stored lanes of bridges that are no longer configured.
pub async fn drop_unconfigured(broker: &Arc<Broker>, configs: &[BridgeConfig]) {
    for client_id in broker.parked_client_ids(CLIENT_ID_PREFIX) {
        let Some(id) = parse_lane_id(&client_id) else {
            continue;
        };
        let bridge = match &id {
            LaneId::Keyed { bridge, .. } | LaneId::Indexed { bridge, .. } => bridge,
        };
        if !configs.iter().any(|c| &c.name == bridge) {
            drop(open_orphan(broker, client_id, &id, configs).await);
        }
    }
}

async fn open_orphan(
    broker: &Arc<Broker>,
    client_id: Arc<str>,
    id: &LaneId,
    configs: &[BridgeConfig],
) -> Option<Lane> {
    let conn_id = broker.next_id();
    let opened = broker
        .open_session(client_id.clone(), false, NEVER_EXPIRES, conn_id)
        .await;
    let session = opened.session;
    let filters: Vec<String> = session.subscriptions.keys().cloned().collect();
    for f in &filters {
        broker.router.unsubscribe_mailbox(&session.mailbox, f);
    }
    let queued = session.mailbox.len();
    let spilled = session.mailbox.spill_state().is_some();
    match plan_orphan(id, &filters, configs) {
        OrphanPlan::Drain(prefix, priority) => {
            tracing::warn!(lane = %client_id, ?filters, %prefix, queued, spilled,
                "orphan bridge lane: no forward rule owns it; draining its backlog under its old prefix");
            // The stored record keeps its filters (so an index-keyed lane is
            // still recognised after another restart); the router no longer
            // routes to it. Bridges start before the listeners open.
            let rule = ForwardRule {
                filter: filters.first().cloned().unwrap_or_default(),
                remote_prefix: prefix,
                qos: 1,
                priority,
                store_qos0: false,
            };
            Some(Lane {
                rule,
                session,
                conn_id,
                orphan: true,
                finished: false,
            })
        }
        OrphanPlan::Drop(why) => {
            tracing::warn!(lane = %client_id, ?filters, queued, spilled, reason = why,
                "orphan bridge lane: dropping it with its backlog");
            let mut session = session;
            session.mailbox.clear();
            session.set_expiry(0);
            broker.persistence.remove_session(&client_id);
            broker.close_session(conn_id, session);
            None
        }
    }
}

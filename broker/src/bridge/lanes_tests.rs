//! Tests of the lane identities and orphan plans (W6).

use super::lanes::{lane_client_id, parse_lane_id, plan_orphan, LaneId, OrphanPlan};
use crate::config::bridge::{BridgeConfig, ForwardRule, OrphanLanes};

// W6: lane identities.
fn rule(filter: &str, prefix: &str) -> ForwardRule {
    ForwardRule {
        filter: filter.into(),
        remote_prefix: prefix.into(),
        qos: 1,
        priority: 5,
        store_qos0: false,
    }
}

#[test]
fn lane_ids_depend_on_filter_and_prefix_not_position() {
    let a = lane_client_id("cloud", &rule("a/#", "pa/"));
    assert_eq!(a, lane_client_id("cloud", &rule("a/#", "pa/")));
    assert_ne!(a, lane_client_id("cloud", &rule("a/#", "pb/")));
    assert_ne!(a, lane_client_id("cloud", &rule("b/#", "pa/")));
    assert_ne!(a, lane_client_id("other", &rule("a/#", "pa/")));
    // The separator keeps ("ab", "") and ("a", "b") apart.
    assert_ne!(
        lane_client_id("c", &rule("ab", "")),
        lane_client_id("c", &rule("a", "b"))
    );
    assert_eq!(
        parse_lane_id(&a),
        Some(LaneId::Keyed {
            bridge: "cloud".into(),
            prefix: "pa/".into()
        })
    );
    assert_eq!(
        parse_lane_id("$bridge/cloud/3"),
        Some(LaneId::Indexed {
            bridge: "cloud".into(),
            index: 3
        })
    );
    assert_eq!(parse_lane_id("$bridge/cloud/x/y"), None);
    assert_eq!(parse_lane_id("client"), None);
}

fn bridge(rules: Vec<ForwardRule>, orphans: OrphanLanes) -> BridgeConfig {
    let toml = "name = \"cloud\"\naddress = \"127.0.0.1:1\"\nclient_id = \"gw\"\n";
    let mut b: BridgeConfig = toml::from_str(toml).unwrap();
    b.forwards = rules;
    b.orphan_lanes = orphans;
    b
}

#[test]
fn orphan_plans() {
    let keyed = LaneId::Keyed {
        bridge: "cloud".into(),
        prefix: "old/".into(),
    };
    let configs = [bridge(vec![rule("b/#", "pb/")], OrphanLanes::Drain)];
    assert_eq!(
        plan_orphan(&keyed, &["a/#".into()], &configs),
        OrphanPlan::Drain("old/".into(), 0)
    );
    let dropping = [bridge(vec![rule("b/#", "pb/")], OrphanLanes::Drop)];
    assert!(matches!(
        plan_orphan(&keyed, &[], &dropping),
        OrphanPlan::Drop(_)
    ));
    assert!(matches!(plan_orphan(&keyed, &[], &[]), OrphanPlan::Drop(_)));
    // Index-keyed lanes: drained under rule i's prefix only if rule i
    // still has the lane's filter.
    let legacy = LaneId::Indexed {
        bridge: "cloud".into(),
        index: 0,
    };
    assert_eq!(
        plan_orphan(&legacy, &["b/#".into()], &configs),
        OrphanPlan::Drain("pb/".into(), 5)
    );
    assert!(matches!(
        plan_orphan(&legacy, &["a/#".into()], &configs),
        OrphanPlan::Drop(_)
    ));
}

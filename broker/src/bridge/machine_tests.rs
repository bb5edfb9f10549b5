//! Unit and property tests of the bridge's IO-free lane machine and of the
//! lane identities (issue 12; review findings W3, W4, W5, W6).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::config::{BatchMode, BridgeConfig, ForwardRule, OrphanLanes};
use super::lane_machine::{
    AckKind, Action, Backoff, CloudLimits, DeadLetterReason, LaneMachine, MachineConfig,
};
use super::lanes::{lane_client_id, parse_lane_id, plan_orphan, LaneId, OrphanPlan};
use crate::envelope::{self, Compression, Encoding, Format};
use crate::protocol::{Packet, ProtocolVersion, PublishProperties, QoS};
use crate::router::{Delivery, Message};

const OWN: &str = "$bridge/cloud";

fn cfg(mode: BatchMode, lanes: usize) -> MachineConfig {
    MachineConfig {
        version: ProtocolVersion::V5,
        mode,
        max_messages: 100,
        max_bytes: 262_144,
        linger: Duration::ZERO,
        envelope_topic: "gw/batch".into(),
        format: Format {
            encoding: Encoding::Postcard,
            compression: Compression::None,
        },
        max_inflight: 100,
        prefixes: (0..lanes).map(|i| format!("p{i}/")).collect(),
        own_publisher: Arc::from(OWN),
    }
}

fn delivery_with(topic: &str, payload: Vec<u8>, qos: QoS, props: PublishProperties) -> Delivery {
    let m = Message::new(topic.into(), Bytes::from(payload), qos, false, props, None);
    Delivery {
        message: Arc::new(m),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
    }
}

fn delivery(topic: &str, payload: &str) -> Delivery {
    delivery_with(
        topic,
        payload.as_bytes().to_vec(),
        QoS::AtLeastOnce,
        PublishProperties::default(),
    )
}

fn connected(mode: BatchMode, limits: CloudLimits) -> LaneMachine {
    let mut m = LaneMachine::new(cfg(mode, 1));
    m.connected(limits, false);
    m
}

/// The PUBLISH packets among `actions`, as (packet id, topic, payload).
fn publishes(actions: &[Action]) -> Vec<(u16, String, Bytes)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { publish, .. } => {
                Some((publish.pkid, publish.topic.clone(), publish.payload.clone()))
            }
            _ => None,
        })
        .collect()
}

fn now() -> Instant {
    Instant::now()
}

// W3: a refusal is a dead letter, never a silent delete.
#[test]
fn puback_refusal_code_is_a_dead_letter_not_a_delete() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    m.queued(0, vec![delivery("t/denied", "x")], now());
    let sent = publishes(&m.poll(now(), 0));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "p0/t/denied");
    let actions = m.acked(AckKind::PubAck, sent[0].0, 0x87);
    assert!(
        matches!(
            actions.as_slice(),
            [Action::DeadLetter { reason: DeadLetterReason::Refused(0x87), delivery, .. }]
                if delivery.message.topic == "t/denied"
        ),
        "{actions:?}"
    );
    assert_eq!(m.held(), 0);
}

#[test]
fn pubrec_refusal_code_is_a_dead_letter() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    let d = delivery_with("t/q2", b"x".to_vec(), QoS::ExactlyOnce, Default::default());
    m.queued(0, vec![d], now());
    let sent = publishes(&m.poll(now(), 0));
    let actions = m.acked(AckKind::PubRec, sent[0].0, 0x90);
    assert!(
        matches!(
            actions.as_slice(),
            [Action::DeadLetter {
                reason: DeadLetterReason::Refused(0x90),
                ..
            }]
        ),
        "{actions:?}"
    );
}

#[test]
fn qos2_success_sends_pubrel_and_deletes_on_pubcomp_only() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    let d = delivery_with("t/q2", b"x".to_vec(), QoS::ExactlyOnce, Default::default());
    m.queued(0, vec![d], now());
    let pkid = publishes(&m.poll(now(), 0))[0].0;
    let rel = m.acked(AckKind::PubRec, pkid, 0);
    assert!(matches!(rel.as_slice(), [Action::Send(Packet::PubRel(a))] if a.pkid == pkid));
    let done = m.acked(AckKind::PubComp, pkid, 0);
    assert!(
        matches!(done.as_slice(), [Action::Delete { .. }]),
        "{done:?}"
    );
}

#[test]
fn success_codes_below_0x80_delete() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    m.queued(0, vec![delivery("t/a", "x")], now());
    let pkid = publishes(&m.poll(now(), 0))[0].0;
    // 0x10 No matching subscribers is a success.
    let actions = m.acked(AckKind::PubAck, pkid, 0x10);
    assert!(
        matches!(actions.as_slice(), [Action::Delete { .. }]),
        "{actions:?}"
    );
}

#[test]
fn transient_codes_are_retried_in_order_after_a_reconnect() {
    for code in [0x97, 0x89] {
        let mut m = connected(BatchMode::Mirror, CloudLimits::default());
        m.queued(0, vec![delivery("t/a", "1"), delivery("t/a", "2")], now());
        let sent = publishes(&m.poll(now(), 0));
        assert_eq!(sent.len(), 2);
        let actions = m.acked(AckKind::PubAck, sent[0].0, code);
        assert!(
            matches!(actions.as_slice(), [Action::Disconnect { reason_code }] if *reason_code == code),
            "{actions:?}"
        );
        assert!(m.disconnected().is_empty(), "nothing leaves the lane");
        assert_eq!(m.held(), 2);
        m.connected(CloudLimits::default(), false);
        let again = publishes(&m.poll(now(), 0));
        let payloads: Vec<&[u8]> = again.iter().map(|s| s.2.as_ref()).collect();
        assert_eq!(
            payloads,
            [b"1".as_ref(), b"2".as_ref()],
            "resent first, in order"
        );
        // Transient closes are not strikes against the message.
        let mut sent = again;
        for _ in 0..5 {
            let actions = m.acked(AckKind::PubAck, sent[0].0, code);
            assert!(matches!(actions.as_slice(), [Action::Disconnect { .. }]));
            assert!(m.disconnected().is_empty());
            m.connected(CloudLimits::default(), false);
            sent = publishes(&m.poll(now(), 0));
            assert_eq!(sent[0].2.as_ref(), b"1");
        }
    }
}

// W4: the cloud's Maximum Packet Size.
#[test]
fn mirror_message_over_maximum_packet_size_is_dead_lettered_before_sending() {
    let limits = CloudLimits {
        maximum_packet_size: Some(2000),
        ..CloudLimits::default()
    };
    let mut m = connected(BatchMode::Mirror, limits);
    m.queued(
        0,
        vec![
            delivery("t/big", &"x".repeat(4000)),
            delivery("t/small", "ok"),
        ],
        now(),
    );
    let actions = m.poll(now(), 0);
    assert!(
        matches!(&actions[0], Action::DeadLetter { reason: DeadLetterReason::TooLarge { max: 2000, .. }, delivery, .. }
            if delivery.message.topic == "t/big"),
        "{actions:?}"
    );
    let sent = publishes(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "p0/t/small");
}

#[test]
fn envelope_batches_are_split_to_fit_maximum_packet_size() {
    let limits = CloudLimits {
        maximum_packet_size: Some(2000),
        ..CloudLimits::default()
    };
    let mut m = connected(BatchMode::Envelope, limits);
    let batch: Vec<Delivery> = (0..40)
        .map(|i| delivery("t/a", &format!("{i:0>100}")))
        .collect();
    m.queued(0, batch, now());
    let actions = m.poll(now(), 0);
    let mut all = Vec::new();
    for a in &actions {
        if let Action::Publish { publish, .. } = a {
            let size = crate::protocol::encoded_len(
                &Packet::Publish(publish.clone()),
                ProtocolVersion::V5,
            );
            assert!(size <= 2000, "{size}");
            all.extend(
                envelope::decode(
                    &publish.payload,
                    Format {
                        encoding: Encoding::Postcard,
                        compression: Compression::None,
                    },
                )
                .unwrap(),
            );
        }
    }
    assert!(publishes(&actions).len() > 1, "split");
    let payloads: Vec<String> = all
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("{i:0>100}")).collect();
    assert_eq!(payloads, want, "every message, in order");
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::DeadLetter { .. })));
}

#[test]
fn envelope_message_that_cannot_fit_alone_is_dead_lettered() {
    let limits = CloudLimits {
        maximum_packet_size: Some(500),
        ..CloudLimits::default()
    };
    let mut m = connected(BatchMode::Envelope, limits);
    m.queued(
        0,
        vec![delivery("t/a", "small"), delivery("t/b", &"y".repeat(900))],
        now(),
    );
    let actions = m.poll(now(), 0);
    assert_eq!(publishes(&actions).len(), 1);
    assert!(actions.iter().any(|a| matches!(a,
        Action::DeadLetter { reason: DeadLetterReason::TooLarge { .. }, delivery, .. } if delivery.message.topic == "t/b")));
}

#[test]
fn third_disconnect_with_the_same_head_message_dead_letters_it() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    m.queued(
        0,
        vec![delivery("t/poison", "p"), delivery("t/a", "1")],
        now(),
    );
    for round in 1..=3 {
        let sent = publishes(&m.poll(now(), 0));
        assert_eq!(sent[0].1, "p0/t/poison", "round {round}: resent first");
        let actions = m.disconnected();
        if round < 3 {
            assert!(actions.is_empty(), "round {round}: {actions:?}");
        } else {
            assert!(
                matches!(actions.as_slice(), [Action::DeadLetter { reason: DeadLetterReason::CloudClosed, delivery, .. }]
                    if delivery.message.topic == "t/poison"),
                "{actions:?}"
            );
        }
        m.connected(CloudLimits::default(), false);
    }
    let sent = publishes(&m.poll(now(), 0));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "p0/t/a");
}

#[test]
fn disconnects_with_different_heads_are_not_strikes() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    let ds: Vec<Delivery> = (0..6).map(|i| delivery("t/a", &i.to_string())).collect();
    m.queued(0, ds, now());
    for _ in 0..3 {
        let sent = publishes(&m.poll(now(), 0));
        // The head is acknowledged each time: a different head next time.
        let _ = m.acked(AckKind::PubAck, sent[0].0, 0);
        assert!(m.disconnected().is_empty());
        m.connected(CloudLimits::default(), false);
    }
    assert_eq!(m.held(), 3);
}

#[test]
fn receive_maximum_bounds_the_window() {
    let limits = CloudLimits {
        receive_maximum: 3,
        ..CloudLimits::default()
    };
    let mut m = connected(BatchMode::Mirror, limits);
    let ds: Vec<Delivery> = (0..10).map(|i| delivery("t/a", &i.to_string())).collect();
    m.queued(0, ds, now());
    let sent = publishes(&m.poll(now(), 0));
    assert_eq!(sent.len(), 3);
    assert!(publishes(&m.poll(now(), 0)).is_empty());
    let _ = m.acked(AckKind::PubAck, sent[1].0, 0);
    assert_eq!(publishes(&m.poll(now(), 0)).len(), 1);
}

#[test]
fn maximum_qos_retain_available_and_no_topic_alias() {
    let limits = CloudLimits {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        topic_alias_maximum: 10,
        ..CloudLimits::default()
    };
    let mut m = connected(BatchMode::Mirror, limits);
    let msg = Message::new(
        "t/r".into(),
        Bytes::from_static(b"x"),
        QoS::ExactlyOnce,
        true,
        PublishProperties::default(),
        None,
    );
    let d = Delivery {
        message: Arc::new(msg),
        qos: QoS::ExactlyOnce,
        retain: true,
        subscription_ids: vec![7],
        shared: None,
    };
    m.queued(0, vec![d], now());
    let actions = m.poll(now(), 0);
    let Some(Action::Publish { publish, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert!(!publish.retain);
    assert_eq!(publish.properties.topic_alias, None);
    assert!(publish.properties.subscription_identifiers.is_empty());
    // QoS 1 on the wire: PUBACK completes it.
    let done = m.acked(AckKind::PubAck, publish.pkid, 0);
    assert!(
        matches!(done.as_slice(), [Action::Delete { .. }]),
        "{done:?}"
    );
}

// W5: the downlink QoS 2 state belongs to the cloud session.
#[test]
fn downlink_qos2_state_is_reset_when_the_cloud_session_is_new() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    assert!(m.downlink_qos2(1), "first copy is new");
    assert!(!m.downlink_qos2(1), "a retransmission is a duplicate");
    let _ = m.disconnected();
    m.connected(CloudLimits::default(), true);
    assert!(!m.downlink_qos2(1), "same session: still a duplicate");
    let _ = m.disconnected();
    m.connected(CloudLimits::default(), false);
    assert!(
        m.downlink_qos2(1),
        "new session: a reused packet id is a new message"
    );
    m.downlink_released(1);
    assert!(m.downlink_qos2(1));
}

#[test]
fn expired_messages_are_not_forwarded_and_the_rest_of_the_interval_is() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let long = PublishProperties {
        message_expiry_interval: Some(100),
        ..Default::default()
    };
    let start = now();
    m.queued(
        0,
        vec![
            delivery_with("t/short", b"s".to_vec(), QoS::AtLeastOnce, short),
            delivery_with("t/long", b"l".to_vec(), QoS::AtLeastOnce, long),
        ],
        start,
    );
    let later = start + Duration::from_secs(30);
    let actions = m.poll(later, 0);
    assert!(
        matches!(&actions[0], Action::Expired { delivery, .. } if delivery.message.topic == "t/short"),
        "{actions:?}"
    );
    let Some(Action::Publish { publish, .. }) = actions.get(1) else {
        panic!("{actions:?}");
    };
    let left = publish.properties.message_expiry_interval.unwrap();
    assert!((69..=71).contains(&left), "{left}");
}

#[test]
fn downlink_echoes_are_deleted_not_forwarded() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    let msg = Message::new(
        "cmd/x".into(),
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        false,
        PublishProperties::default(),
        Some(Arc::from(OWN)),
    );
    let d = Delivery {
        message: Arc::new(msg),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
    };
    m.queued(0, vec![d], now());
    let actions = m.poll(now(), 0);
    assert!(
        matches!(actions.as_slice(), [Action::Delete { .. }]),
        "{actions:?}"
    );
}

#[test]
fn envelope_lingers_until_full_or_linger_passed() {
    let mut c = cfg(BatchMode::Envelope, 1);
    c.linger = Duration::from_millis(20);
    c.max_messages = 3;
    let mut m = LaneMachine::new(c);
    m.connected(CloudLimits::default(), false);
    let t0 = now();
    m.queued(0, vec![delivery("t/a", "1")], t0);
    assert!(m.poll(t0, 0).is_empty(), "lingers");
    assert_eq!(m.next_wakeup(), Some(t0 + Duration::from_millis(20)));
    assert_eq!(
        publishes(&m.poll(t0 + Duration::from_millis(20), 0)).len(),
        1
    );
    m.queued(
        0,
        (0..3).map(|i| delivery("t/a", &i.to_string())).collect(),
        t0,
    );
    assert_eq!(publishes(&m.poll(t0, 0)).len(), 1, "full: at once");
}

#[test]
fn nothing_is_sent_or_pulled_while_disconnected() {
    let mut m = LaneMachine::new(cfg(BatchMode::Mirror, 1));
    assert_eq!(m.wants(0), 0);
    m.queued(0, vec![delivery("t/a", "1")], now());
    assert!(m.poll(now(), 0).is_empty());
    m.connected(CloudLimits::default(), false);
    assert_eq!(m.wants(0), 99);
    assert_eq!(publishes(&m.poll(now(), 0)).len(), 1);
}

#[test]
fn backoff_doubles_with_jitter_and_resets_after_a_long_link() {
    let mut b = Backoff::new(100, 1000);
    let d: Vec<u64> = (0..6)
        .map(|_| b.next_delay(Duration::ZERO, 0).as_millis() as u64)
        .collect();
    assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
    let j = b.next_delay(Duration::ZERO, 7).as_millis();
    assert_eq!(j, 1007);
    assert_eq!(b.next_delay(Duration::from_secs(31), 0).as_millis(), 100);
}

#[test]
fn limits_from_connack_use_the_spec_defaults() {
    let mut a = crate::protocol::ConnAck::default();
    assert_eq!(CloudLimits::from_connack(&a), CloudLimits::default());
    a.properties.maximum_packet_size = Some(2000);
    a.properties.receive_maximum = Some(5);
    a.properties.maximum_qos = Some(0);
    a.properties.retain_available = Some(0);
    let l = CloudLimits::from_connack(&a);
    assert_eq!(l.maximum_packet_size, Some(2000));
    assert_eq!(l.receive_maximum, 5);
    assert_eq!(l.maximum_qos, QoS::AtMostOnce);
    assert!(!l.retain_available);
}

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
        OrphanPlan::Drain("old/".into())
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
        OrphanPlan::Drain("pb/".into())
    );
    assert!(matches!(
        plan_orphan(&legacy, &["a/#".into()], &configs),
        OrphanPlan::Drop(_)
    ));
}

// Property tests over random event orders.

#[derive(Debug, Clone)]
enum Ev {
    Queue(usize, usize),
    Connect(u16, bool),
    Disconnect,
    Ack(usize, u8),
    Tick,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..3usize, 1..5usize).prop_map(|(l, n)| Ev::Queue(l, n)),
        1 => (1..5u16, any::<bool>()).prop_map(|(r, p)| Ev::Connect(r, p)),
        1 => Just(Ev::Disconnect),
        5 => (0..8usize, prop::sample::select(vec![0u8, 0x10, 0x80, 0x87, 0x89, 0x97]))
            .prop_map(|(i, c)| Ev::Ack(i, c)),
        1 => Just(Ev::Tick),
    ]
}

/// A model of the network task and the cloud around the machine.
struct World {
    m: LaneMachine,
    /// The lanes' mailboxes (message ids).
    mailboxes: Vec<VecDeque<Delivery>>,
    /// Packet id to message ids, on this connection.
    outstanding: Vec<(u16, Vec<u64>)>,
    /// Ids acknowledged with a success code / refused with `code`.
    succeeded: HashSet<u64>,
    refused: HashMap<u64, u8>,
    /// Ids that left the lanes, and how.
    deleted: HashSet<u64>,
    dead: HashSet<u64>,
    /// Last id sent per lane on this connection.
    last_sent: Vec<Option<u64>>,
    lane_of: HashMap<u64, usize>,
    next: u64,
}

impl World {
    fn new() -> World {
        World {
            m: LaneMachine::new(cfg(BatchMode::Mirror, 3)),
            mailboxes: vec![VecDeque::new(); 3],
            outstanding: Vec::new(),
            succeeded: HashSet::new(),
            refused: HashMap::new(),
            deleted: HashSet::new(),
            dead: HashSet::new(),
            last_sent: vec![None; 3],
            lane_of: HashMap::new(),
            next: 0,
        }
    }

    fn id(d: &Delivery) -> u64 {
        std::str::from_utf8(&d.message.payload)
            .unwrap()
            .parse()
            .unwrap()
    }

    fn pull(&mut self) {
        for lane in 0..3 {
            let want = self.m.wants(lane).min(self.mailboxes[lane].len());
            let batch: Vec<Delivery> = self.mailboxes[lane].drain(..want).collect();
            if !batch.is_empty() {
                self.m.queued(lane, batch, now());
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
        let mut transient = false;
        for a in actions {
            match a {
                Action::Publish { lane, publish, .. } => {
                    let id: u64 = std::str::from_utf8(&publish.payload)
                        .unwrap()
                        .parse()
                        .unwrap();
                    prop_assert_eq!(self.lane_of[&id], lane);
                    if let Some(last) = self.last_sent[lane] {
                        prop_assert!(last < id, "lane {} sent {} after {}", lane, id, last);
                    }
                    self.last_sent[lane] = Some(id);
                    prop_assert!(!self.deleted.contains(&id) && !self.dead.contains(&id));
                    self.outstanding.push((publish.pkid, vec![id]));
                    prop_assert!(self.outstanding.len() <= usize::from(self.m.window()));
                }
                Action::Send(_) => {}
                Action::Delete { delivery, .. } => {
                    let id = Self::id(&delivery);
                    prop_assert!(
                        self.succeeded.contains(&id),
                        "{} deleted without a success ack",
                        id
                    );
                    prop_assert!(self.deleted.insert(id) && !self.dead.contains(&id));
                }
                Action::DeadLetter {
                    delivery, reason, ..
                } => {
                    let id = Self::id(&delivery);
                    match reason {
                        DeadLetterReason::Refused(code) => {
                            prop_assert_eq!(self.refused.get(&id), Some(&code));
                            prop_assert!(code >= 0x80 && code != 0x89 && code != 0x97);
                        }
                        DeadLetterReason::CloudClosed => {}
                        DeadLetterReason::TooLarge { .. } => {
                            prop_assert!(false, "no size limit here")
                        }
                    }
                    prop_assert!(self.dead.insert(id) && !self.deleted.contains(&id));
                }
                Action::Expired { .. } => prop_assert!(false, "nothing expires here"),
                Action::Disconnect { .. } => transient = true,
            }
        }
        if transient {
            self.disconnect()?;
        }
        Ok(())
    }

    fn disconnect(&mut self) -> Result<(), TestCaseError> {
        self.outstanding.clear();
        let actions = self.m.disconnected();
        self.apply(actions)
    }

    fn step(&mut self, e: Ev) -> Result<(), TestCaseError> {
        match e {
            Ev::Queue(lane, n) => {
                for _ in 0..n {
                    let id = self.next;
                    self.next += 1;
                    self.lane_of.insert(id, lane);
                    self.mailboxes[lane].push_back(delivery("t", &id.to_string()));
                }
            }
            Ev::Connect(rm, present) => {
                if !self.m.is_connected() {
                    let limits = CloudLimits {
                        receive_maximum: rm,
                        ..CloudLimits::default()
                    };
                    self.m.connected(limits, present);
                    self.last_sent = vec![None; 3];
                }
            }
            Ev::Disconnect => {
                if self.m.is_connected() {
                    self.disconnect()?;
                }
            }
            Ev::Ack(i, code) => {
                if !self.outstanding.is_empty() {
                    let (pkid, ids) = self.outstanding.remove(i % self.outstanding.len());
                    for id in &ids {
                        if code < 0x80 {
                            self.succeeded.insert(*id);
                        } else {
                            self.refused.insert(*id, code);
                        }
                    }
                    let actions = self.m.acked(AckKind::PubAck, pkid, code);
                    self.apply(actions)?;
                }
            }
            Ev::Tick => {}
        }
        self.pull();
        let actions = self.m.poll(now(), 0);
        self.apply(actions)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Nothing leaves a lane except on a success ack or an explicit dead
    /// letter; each connection sends each lane in queue order; at the end,
    /// with a cloud that accepts everything, every message is accounted for
    /// exactly once.
    #[test]
    fn lanes_lose_nothing_and_keep_order(events in prop::collection::vec(ev(), 1..120)) {
        let mut w = World::new();
        for e in events {
            w.step(e)?;
        }
        // Drain: a cooperative cloud acknowledges everything.
        if !w.m.is_connected() {
            w.step(Ev::Connect(4, false))?;
        }
        for _ in 0..10_000 {
            if w.outstanding.is_empty() && w.m.held() == 0
                && w.mailboxes.iter().all(VecDeque::is_empty) {
                break;
            }
            w.step(Ev::Ack(0, 0))?;
        }
        prop_assert_eq!(w.m.held(), 0);
        let total = w.next as usize;
        prop_assert_eq!(w.deleted.len() + w.dead.len(), total);
    }
}

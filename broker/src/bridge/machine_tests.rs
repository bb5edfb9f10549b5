//! Unit tests of the bridge's IO-free lane machine (issue 12; review
//! findings W3, W4, W5); property tests in `machine_props`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lane_machine::{
    AckKind, Action, Backoff, CloudLimits, DeadLetterReason, LaneMachine, MachineConfig,
};
use crate::config::bridge::BatchMode;
use crate::envelope::{self, Compression, Encoding, Format};
use crate::protocol::{Packet, ProtocolVersion, PublishProperties, QoS};
use crate::router::{Delivery, Message};
use bytes::Bytes;

const OWN: &str = "$bridge/cloud";

pub(super) fn cfg(mode: BatchMode, lanes: usize) -> MachineConfig {
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

pub(super) fn delivery(topic: &str, payload: &str) -> Delivery {
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
        assert!(m.disconnected(true).is_empty(), "nothing leaves the lane");
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
            assert!(m.disconnected(true).is_empty());
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
        let actions = m.disconnected(true);
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
fn disconnects_the_cloud_did_not_cause_are_not_strikes() {
    let mut m = connected(BatchMode::Mirror, CloudLimits::default());
    m.queued(0, vec![delivery("t/a", "1")], now());
    for _ in 0..5 {
        assert_eq!(publishes(&m.poll(now(), 0)).len(), 1);
        // A timeout or our own shutdown says nothing about the message.
        assert!(m.disconnected(false).is_empty());
        m.connected(CloudLimits::default(), false);
    }
    assert_eq!(m.held(), 1);
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
        assert!(m.disconnected(true).is_empty());
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
    let _ = m.disconnected(true);
    m.connected(CloudLimits::default(), true);
    assert!(!m.downlink_qos2(1), "same session: still a duplicate");
    let _ = m.disconnected(true);
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

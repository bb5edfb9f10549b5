//! Router tests: the matching table, `$` topics, shared groups, overlaps,
//! No Local, Retain As Published and the retained store bounds.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

#[test]
fn a_clients_sys_topic_counts_against_the_retained_bounds() {
    use crate::protocol::{PublishProperties, QoS};
    let mut store = RetainedStore::new(1, 1 << 20);
    let msg = |topic: &str, publisher: Option<&str>| {
        Arc::new(Message::new(
            topic.to_string(),
            bytes::Bytes::from_static(b"v"),
            QoS::AtMostOnce,
            true,
            PublishProperties::default(),
            publisher.map(Arc::from),
        ))
    };
    assert_eq!(store.set(msg("a", Some("c"))), RetainOutcome::Stored);
    // The broker's own $SYS is outside the bound; anyone else's is not.
    assert_eq!(
        store.set(msg("$SYS/broker/uptime", None)),
        RetainOutcome::Stored
    );
    assert_eq!(store.set(msg("$SYS/x", Some("c"))), RetainOutcome::Rejected);
}
use crate::protocol::{PublishProperties, QoS};
use crate::session::MailboxLimits;

const LIMITS: MailboxLimits = MailboxLimits {
    outbound_capacity: 16,
    max_queued_messages: 16,
    spill: false,
    max_queued_bytes: 1 << 20,
    slow_consumer_timeout: std::time::Duration::ZERO,
    qos0_wait: false,
};

fn mailbox(id: &str) -> Arc<Mailbox> {
    let m = Mailbox::new(Arc::from(id), false, LIMITS);
    m.set_online(true);
    m
}

fn message(topic: &str, qos: QoS, retain: bool, publisher: Option<&str>) -> Arc<Message> {
    Arc::new(Message::new(
        topic.to_string(),
        Bytes::from_static(b"x"),
        qos,
        retain,
        PublishProperties::default(),
        publisher.map(Arc::from),
    ))
}

/// An empty retained message: clears `topic`'s retained message.
fn clear_retained(topic: &str) -> Arc<Message> {
    Arc::new(Message::new(
        topic.to_string(),
        Bytes::new(),
        QoS::AtMostOnce,
        true,
        PublishProperties::default(),
        None,
    ))
}

fn targets(router: &Router, topic: &str) -> Vec<String> {
    let mut ids: Vec<String> = router
        .route(&message(topic, QoS::ExactlyOnce, false, None))
        .into_iter()
        .map(|(m, _)| m.client_id().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn matching_table() {
    // (filter, topic, matches)
    let table = [
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/+", "a/b", true),
        ("a/+", "a/b/c", false),
        ("a/+", "a", false),
        ("a/+", "a/", true),
        ("a/#", "a", true),
        ("a/#", "a/b/c", true),
        ("#", "a/b", true),
        ("+/+", "/a", true),
        ("+", "/a", false),
        ("/+", "/a", true),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a/b/d", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/+", "$SYS/x", true),
        ("a/#", "b", false),
    ];
    for (filter, topic, expected) in table {
        let router = Router::new(10, 1000);
        router.subscribe(
            &mailbox("c"),
            filter,
            SubscriptionOptions::qos(QoS::AtMostOnce),
        );
        let got = !targets(&router, topic).is_empty();
        assert_eq!(got, expected, "filter {filter:?} topic {topic:?}");
        assert_eq!(
            got,
            crate::protocol::topic::matches(filter, topic),
            "trie and codec disagree"
        );
    }
}

#[test]
fn unsubscribe_removes_and_prunes() {
    let router = Router::new(10, 1000);
    let m = mailbox("c");
    assert!(!router.subscribe(&m, "a/+/c", SubscriptionOptions::qos(QoS::AtMostOnce)));
    assert!(router.subscribe(&m, "a/+/c", SubscriptionOptions::qos(QoS::AtLeastOnce)));
    assert_eq!(router.subscription_count(), 1);
    assert!(router.unsubscribe("c", "a/+/c"));
    assert!(!router.unsubscribe("c", "a/+/c"));
    assert_eq!(router.subscription_count(), 0);
    assert!(targets(&router, "a/b/c").is_empty());
}

#[test]
fn wildcard_levels_keep_matching_as_siblings_come_and_go() {
    let router = Router::new(10, 1000);
    let (x, y, z) = (mailbox("x"), mailbox("y"), mailbox("z"));
    let qos0 = || SubscriptionOptions::qos(QoS::AtMostOnce);
    router.subscribe(&x, "a/+", qos0());
    router.subscribe(&y, "a/#", qos0());
    router.subscribe(&z, "a/b", qos0());
    assert_eq!(targets(&router, "a/b"), ["x", "y", "z"]);
    assert_eq!(targets(&router, "a"), ["y"], "# matches its parent level");
    assert!(router.unsubscribe("x", "a/+"));
    assert_eq!(targets(&router, "a/b"), ["y", "z"]);
    assert_eq!(targets(&router, "a/q"), ["y"]);
    assert!(router.unsubscribe("y", "a/#"));
    assert_eq!(targets(&router, "a/b"), ["z"]);
    assert!(targets(&router, "a/q").is_empty());
    router.subscribe(&x, "a/+", qos0());
    assert_eq!(
        targets(&router, "a/q"),
        ["x"],
        "a wildcard added back matches again"
    );
    assert_eq!(targets(&router, "a/b/c"), Vec::<String>::new());
}

#[test]
fn overlapping_subscriptions_give_one_copy_at_highest_qos_with_all_ids() {
    let router = Router::new(10, 1000);
    let m = mailbox("c");
    let mut o1 = SubscriptionOptions::qos(QoS::AtMostOnce);
    o1.id = Some(7);
    let mut o2 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    o2.id = Some(3);
    router.subscribe(&m, "a/#", o1);
    router.subscribe(&m, "a/+", o2);
    router.subscribe(&m, "a/b", SubscriptionOptions::qos(QoS::AtMostOnce));
    let out = router.route(&message("a/b", QoS::ExactlyOnce, false, None));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.qos, QoS::AtLeastOnce);
    assert_eq!(out[0].1.subscription_ids, vec![3, 7]);
    // Capped by the published QoS.
    let out = router.route(&message("a/b", QoS::AtMostOnce, false, None));
    assert_eq!(out[0].1.qos, QoS::AtMostOnce);
}

#[test]
fn no_local_and_retain_as_published() {
    let router = Router::new(10, 1000);
    let me = mailbox("me");
    let other = mailbox("other");
    let mut nl = SubscriptionOptions::qos(QoS::AtMostOnce);
    nl.no_local = true;
    router.subscribe(&me, "t", nl);
    let mut rap = SubscriptionOptions::qos(QoS::AtMostOnce);
    rap.retain_as_published = true;
    router.subscribe(&other, "t", rap);
    let out = router.route(&message("t", QoS::AtMostOnce, true, Some("me")));
    assert_eq!(out.len(), 1);
    assert_eq!(&**out[0].0.client_id(), "other");
    assert!(out[0].1.retain, "retain as published keeps the flag");
    let plain = mailbox("plain");
    router.subscribe(&plain, "t", SubscriptionOptions::qos(QoS::AtMostOnce));
    let out = router.route(&message("t", QoS::AtMostOnce, true, Some("x")));
    let plain_copy = out
        .iter()
        .find(|(m, _)| &**m.client_id() == "plain")
        .unwrap();
    assert!(
        !plain_copy.1.retain,
        "live messages lose the retain flag by default"
    );
}

#[test]
fn shared_group_round_robin_prefers_online_members() {
    let router = Router::new(10, 1000);
    let a = mailbox("a");
    let b = mailbox("b");
    let c = mailbox("c");
    c.set_online(false);
    for m in [&a, &b, &c] {
        router.subscribe(
            m,
            "$share/g/s/+",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        );
    }
    router.subscribe(&a, "s/#", SubscriptionOptions::qos(QoS::AtMostOnce));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..10 {
        let out = router.route(&message("s/1", QoS::AtLeastOnce, false, None));
        // One copy for the group plus a's own non-shared subscription.
        assert_eq!(out.len(), 2);
        let shared: Vec<_> = out.iter().filter(|(_, d)| d.shared.is_some()).collect();
        assert_eq!(shared.len(), 1);
        *counts
            .entry(shared[0].0.client_id().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        !counts.contains_key("c"),
        "offline member skipped: {counts:?}"
    );
    assert!(
        counts["a"] >= 3 && counts["b"] >= 3,
        "spread across members: {counts:?}"
    );
    assert!(router.shared_member("g", "s/+").is_some());
    assert!(router.unsubscribe("a", "$share/g/s/+"));
    assert!(router.unsubscribe("b", "$share/g/s/+"));
    // Only the offline member is left: it still gets the message (queued).
    let out = router.route(&message("s/1", QoS::AtLeastOnce, false, None));
    assert!(out
        .iter()
        .any(|(m, d)| &**m.client_id() == "c" && d.shared.is_some()));
}

#[test]
fn retained_set_replace_clear_and_bounds() {
    let router = Router::new(2, 100);
    assert_eq!(
        router.retain(message("a", QoS::AtMostOnce, true, None)),
        RetainOutcome::Stored
    );
    assert_eq!(
        router.retain(message("a", QoS::AtLeastOnce, true, None)),
        RetainOutcome::Stored
    );
    assert_eq!(
        router.retain(message("b", QoS::AtMostOnce, true, None)),
        RetainOutcome::Stored
    );
    assert_eq!(router.retained_stats().0, 2);
    assert_eq!(
        router.retain(message("c", QoS::AtMostOnce, true, None)),
        RetainOutcome::Rejected
    );
    let got = router.retained_matching("#");
    assert_eq!(got.len(), 2);
    assert_eq!(router.retained_matching("a")[0].qos, QoS::AtLeastOnce);
    let clear = clear_retained("a");
    assert_eq!(router.retain(clear), RetainOutcome::Cleared);
    assert!(router.retained_matching("a").is_empty());
    assert_eq!(router.retained_stats(), (1, 2));
}

#[test]
fn retained_byte_bound_and_dollar_topics() {
    let router = Router::new(100, 10);
    let big = Arc::new(Message::new(
        "t".into(),
        Bytes::from(vec![0u8; 20]),
        QoS::AtMostOnce,
        true,
        PublishProperties::default(),
        None,
    ));
    assert_eq!(router.retain(big), RetainOutcome::Rejected);
    router.retain(message("$SYS/x", QoS::AtMostOnce, true, None));
    assert!(router.retained_matching("#").is_empty());
    assert_eq!(router.retained_matching("$SYS/#").len(), 1);
}

#[test]
fn sys_topics_do_not_count_against_the_retained_bounds() {
    let router = Router::new(2, 1000);
    for t in ["$SYS/a", "$SYS/b", "$SYS/c"] {
        assert_eq!(
            router.retain(message(t, QoS::AtMostOnce, true, None)),
            RetainOutcome::Stored
        );
    }
    for t in ["x", "y"] {
        assert_eq!(
            router.retain(message(t, QoS::AtMostOnce, true, None)),
            RetainOutcome::Stored,
            "clients get the configured count"
        );
    }
    assert_eq!(
        router.retain(message("z", QoS::AtMostOnce, true, None)),
        RetainOutcome::Rejected
    );
    assert_eq!(router.retained_stats().0, 5);
    // Replacing and clearing keep the accounting straight.
    router.retain(message("$SYS/a", QoS::AtMostOnce, true, None));
    let clear = clear_retained("x");
    assert_eq!(router.retain(clear), RetainOutcome::Cleared);
    assert_eq!(
        router.retain(message("z", QoS::AtMostOnce, true, None)),
        RetainOutcome::Stored
    );
    assert_eq!(
        router.retain(message("w", QoS::AtMostOnce, true, None)),
        RetainOutcome::Rejected
    );
}

#[test]
fn unsubscribe_mailbox_spares_a_newer_session_with_the_same_id() {
    let router = Router::new(10, 1000);
    let old = mailbox("dup");
    let new = mailbox("dup");
    router.subscribe(&old, "t", SubscriptionOptions::qos(QoS::AtMostOnce));
    router.subscribe(&new, "t", SubscriptionOptions::qos(QoS::AtMostOnce));
    router.subscribe(
        &old,
        "$share/g/t",
        SubscriptionOptions::qos(QoS::AtMostOnce),
    );
    assert!(
        !router.unsubscribe_mailbox(&old, "t"),
        "replaced by the newer session"
    );
    assert!(router.unsubscribe_mailbox(&old, "$share/g/t"));
    let out = router.route(&message("t", QoS::AtMostOnce, false, None));
    assert_eq!(out.len(), 1);
    assert!(Arc::ptr_eq(&out[0].0, &new));
    assert!(router.unsubscribe_mailbox(&new, "t"));
    assert_eq!(router.subscription_count(), 0);
}

#[test]
fn weight_counts_properties_and_retained_copies_own_their_bytes() {
    use crate::protocol::{PublishProperties, QoS};
    let backing = Bytes::from(vec![7u8; 1 << 20]);
    let properties = PublishProperties {
        user_properties: vec![(String::new(), String::new()); 10_000],
        correlation_data: Some(backing.slice(0..4)),
        ..PublishProperties::default()
    };
    let m = Message::new(
        "t".to_string(),
        backing.slice(10..11),
        QoS::AtMostOnce,
        true,
        properties,
        Some(Arc::from("c")),
    );
    // 10,000 empty user properties are not free: each costs at least its
    // entry (48 bytes on 64-bit targets, 24 on armv7).
    let entry = std::mem::size_of::<crate::protocol::UserProperty>();
    assert!(m.weight() >= 10_000 * entry, "weight {}", m.weight());
    let mut store = RetainedStore::new(10, 100_000);
    assert_eq!(store.set(Arc::new(m)), RetainOutcome::Rejected);
    let m = Message::new(
        "t".to_string(),
        backing.slice(10..11),
        QoS::AtMostOnce,
        true,
        PublishProperties::default(),
        Some(Arc::from("c")),
    );
    assert_eq!(store.set(Arc::new(m)), RetainOutcome::Stored);
    let kept = store.matching("t", std::time::Instant::now());
    // The retained copy does not point into the 1 MiB buffer.
    let range = backing.as_ptr() as usize..backing.as_ptr() as usize + backing.len();
    assert!(!range.contains(&(kept[0].payload.as_ptr() as usize)));
}

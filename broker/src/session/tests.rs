//! Session tests: mailbox policy, inflight window, QoS 1/2 flows both ways,
//! resend order, and topic aliases.

use std::sync::Arc;

use bytes::Bytes;

use super::aliases::{AliasUse, InboundAliases, OutboundAliases};
use super::*;
use crate::message::{Delivery, Message};
use crate::protocol::{reason, PublishProperties, QoS};

const LIMITS: MailboxLimits = MailboxLimits {
    outbound_capacity: 2,
    max_queued_messages: 3,
    spill: false,
    max_queued_bytes: 1 << 20,
    slow_consumer_timeout: std::time::Duration::ZERO,
    qos0_wait: false,
};

/// A one-byte message on `t` at `qos` (shared with `tests_flow`).
pub(super) fn delivery(qos: QoS) -> Delivery {
    let message = Message::new(
        "t".into(),
        Bytes::from_static(b"p"),
        qos,
        false,
        PublishProperties::default(),
        None,
    );
    Delivery {
        message: Arc::new(message),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
    }
}

#[test]
fn mailbox_online_clean_session_drops_beyond_capacity() {
    let m = Mailbox::new(Arc::from("c"), false, LIMITS);
    m.set_online(true);
    assert!(m.push(delivery(QoS::AtMostOnce)).is_ok());
    assert!(m.push(delivery(QoS::AtLeastOnce)).is_ok());
    assert_eq!(
        m.push(delivery(QoS::AtMostOnce)),
        Err(DropReason::QueueFullQos0)
    );
    assert_eq!(
        m.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::QueueFull)
    );
    assert_eq!(m.len(), 2);
}

#[test]
fn mailbox_persistent_session_keeps_qos1_overflow_up_to_bounds() {
    let m = Mailbox::new(Arc::from("c"), true, LIMITS);
    m.set_online(true);
    for _ in 0..2 {
        assert_eq!(m.push(delivery(QoS::AtLeastOnce)), Ok(true));
    }
    assert_eq!(
        m.push(delivery(QoS::AtMostOnce)),
        Err(DropReason::QueueFullQos0)
    );
    for _ in 0..3 {
        assert_eq!(m.push(delivery(QoS::ExactlyOnce)), Ok(true));
    }
    assert_eq!(
        m.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::SessionQueueFull)
    );
    let mut out = Vec::new();
    m.drain(10, &mut out);
    assert_eq!(out.len(), 5);
    assert!(m.is_empty());
}

#[test]
fn mailbox_offline_keeps_qos1_only() {
    let m = Mailbox::new(Arc::from("c"), true, LIMITS);
    assert_eq!(m.push(delivery(QoS::AtMostOnce)), Err(DropReason::Offline));
    for _ in 0..3 {
        assert!(m.push(delivery(QoS::AtLeastOnce)).is_ok());
    }
    assert_eq!(
        m.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::SessionQueueFull)
    );
}

#[test]
fn mailbox_byte_bound() {
    let limits = MailboxLimits {
        max_queued_bytes: 4,
        ..LIMITS
    };
    let m = Mailbox::new(Arc::from("c"), true, limits);
    m.set_online(true);
    assert!(m.push(delivery(QoS::AtLeastOnce)).is_ok()); // "t" + "p" = 2 bytes
    assert!(m.push(delivery(QoS::AtLeastOnce)).is_ok());
    assert_eq!(
        m.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::SessionQueueFull)
    );
    let mut out = Vec::new();
    m.drain(1, &mut out);
    assert!(
        m.push(delivery(QoS::AtLeastOnce)).is_ok(),
        "draining frees bytes"
    );
}

#[test]
fn mailbox_requeue_front_preserves_order() {
    let m = Mailbox::new(Arc::from("c"), true, LIMITS);
    m.set_online(true);
    m.push(delivery(QoS::AtLeastOnce)).unwrap();
    m.push(delivery(QoS::AtLeastOnce)).unwrap();
    let mut out = Vec::new();
    m.drain(2, &mut out);
    let ids: Vec<u64> = out.iter().map(|d| d.message.id).collect();
    m.push(delivery(QoS::AtLeastOnce)).unwrap();
    m.requeue_front(out);
    let mut again = Vec::new();
    m.drain(10, &mut again);
    assert_eq!(again.len(), 3);
    assert_eq!(again[0].message.id, ids[0]);
    assert_eq!(again[1].message.id, ids[1]);
}

#[test]
fn inflight_window_and_unique_packet_ids() {
    let mut out = Outgoing::default();
    let mut ids = Vec::new();
    while out.has_room(3) {
        ids.push(out.start(delivery(QoS::AtLeastOnce)).unwrap());
    }
    assert_eq!(out.len(), 3);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&i| i != 0));
    out.on_puback(ids[1]).unwrap();
    assert!(out.has_room(3));
    assert_eq!(out.on_puback(ids[1]).unwrap_err(), UnknownPacketId(ids[1]));
}

#[test]
fn packet_ids_wrap_and_skip_ids_in_use() {
    let mut out = Outgoing::default();
    let first = out.start(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(first, 1);
    for _ in 0..65533 {
        let id = out.start(delivery(QoS::AtLeastOnce)).unwrap();
        out.on_puback(id).unwrap();
    }
    // The counter wraps past 65535 and must skip id 1, still inflight.
    let a = out.start(delivery(QoS::AtLeastOnce)).unwrap();
    let b = out.start(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(a, 65535);
    assert_eq!(b, 2);
}

#[test]
fn outgoing_qos2_flow() {
    let mut out = Outgoing::default();
    let id = out.start(delivery(QoS::ExactlyOnce)).unwrap();
    assert!(out.on_puback(id).is_err(), "PUBACK does not complete QoS 2");
    assert!(matches!(
        out.on_pubrec(id, 0),
        Ok(PubRecOutcome::SendPubRel)
    ));
    assert!(
        matches!(out.on_pubrec(id, 0), Ok(PubRecOutcome::SendPubRel)),
        "repeated PUBREC"
    );
    assert_eq!(out.pending().next().unwrap().stage, Stage::AwaitComp);
    assert!(!out.has_room(1), "counts against the window until PUBCOMP");
    out.on_pubcomp(id).unwrap();
    assert!(out.is_empty());
    assert!(out.on_pubrec(99, 0).is_err());
}

#[test]
fn outgoing_qos2_refused_by_pubrec_error() {
    let mut out = Outgoing::default();
    let id = out.start(delivery(QoS::ExactlyOnce)).unwrap();
    assert!(matches!(
        out.on_pubrec(id, reason::NOT_AUTHORIZED),
        Ok(PubRecOutcome::Refused(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn resend_order_is_send_order_with_stages() {
    let mut out = Outgoing::default();
    let a = out.start(delivery(QoS::AtLeastOnce)).unwrap();
    let b = out.start(delivery(QoS::ExactlyOnce)).unwrap();
    let c = out.start(delivery(QoS::ExactlyOnce)).unwrap();
    out.on_pubrec(b, 0).unwrap();
    let pending: Vec<(u16, Stage)> = out.pending().map(|i| (i.pkid, i.stage)).collect();
    assert_eq!(
        pending,
        vec![
            (a, Stage::AwaitAck),
            (b, Stage::AwaitComp),
            (c, Stage::AwaitRec)
        ]
    );
}

#[test]
fn incoming_qos2_delivers_once_until_pubrel() {
    let mut inc = Incoming::default();
    assert!(matches!(inc.on_publish_qos2(5), Qos2Arrival::New));
    assert!(
        matches!(inc.on_publish_qos2(5), Qos2Arrival::Duplicate),
        "retransmission is not routed again"
    );
    assert!(inc.is_pending(5));
    assert_eq!(inc.pending(), 1);
    assert!(inc.on_pubrel(5));
    assert!(!inc.on_pubrel(5));
    assert!(
        matches!(inc.on_publish_qos2(5), Qos2Arrival::New),
        "id reusable after PUBREL"
    );
}

/// D2: a retransmission waits for the first copy's write, and is routed
/// again when that write failed.
#[test]
fn incoming_qos2_retransmission_follows_the_first_write() {
    let mut inc = Incoming::default();
    assert!(matches!(inc.on_publish_qos2(7), Qos2Arrival::New));
    let tx = inc.storing(7);
    let Qos2Arrival::Wait(rx) = inc.on_publish_qos2(7) else {
        panic!("a retransmission during the write must wait for it");
    };
    tx.send_replace(Some(Err(crate::message::PersistError::QuotaExceeded(
        "full".into(),
    ))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(crate::session::first_copy(rx)).is_err());
    assert!(
        matches!(inc.on_publish_qos2(7), Qos2Arrival::New),
        "a first copy that was never stored is routed again"
    );
    let tx = inc.storing(7);
    tx.send_replace(Some(Ok(())));
    assert!(matches!(inc.on_publish_qos2(7), Qos2Arrival::Duplicate));
    assert!(inc.forget(7));
    assert!(!inc.is_pending(7));
}

#[test]
fn session_expiry_controls_persistence() {
    let mut s = Session::new(Arc::from("c"), 0, LIMITS);
    assert!(!s.is_persistent());
    s.mailbox.set_online(true);
    s.mailbox.push(delivery(QoS::AtLeastOnce)).unwrap();
    s.mailbox.push(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(
        s.mailbox.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::QueueFull)
    );
    s.set_expiry(NEVER_EXPIRES);
    assert!(s.is_persistent());
    assert_eq!(s.mailbox.push(delivery(QoS::AtLeastOnce)), Ok(true));
    assert_eq!(s.record().expiry_interval, NEVER_EXPIRES);
}

#[test]
fn inbound_aliases() {
    let mut a = InboundAliases::new(2);
    assert_eq!(a.resolve("x/y", Some(1)).unwrap(), "x/y");
    assert_eq!(a.resolve("", Some(1)).unwrap(), "x/y");
    assert_eq!(a.resolve("", Some(2)), Err(reason::PROTOCOL_ERROR));
    assert_eq!(a.resolve("z", Some(3)), Err(reason::TOPIC_ALIAS_INVALID));
    assert_eq!(a.resolve("z", Some(0)), Err(reason::TOPIC_ALIAS_INVALID));
    assert_eq!(a.resolve("", None), Err(reason::PROTOCOL_ERROR));
    assert_eq!(
        a.resolve("q", Some(1)).unwrap(),
        "q",
        "alias can be remapped"
    );
    assert_eq!(a.resolve("", Some(1)).unwrap(), "q");
    let mut none = InboundAliases::new(0);
    assert_eq!(none.resolve("t", Some(1)), Err(reason::TOPIC_ALIAS_INVALID));
}

#[test]
fn outbound_aliases_assign_reuse_and_replace() {
    let mut a = OutboundAliases::new(2);
    assert_eq!(a.assign("a"), AliasUse::Assign(1));
    assert_eq!(a.assign("a"), AliasUse::Reuse(1));
    assert_eq!(a.assign("b"), AliasUse::Assign(2));
    assert_eq!(a.assign("c"), AliasUse::Assign(1), "oldest replaced");
    assert_eq!(a.assign("a"), AliasUse::Assign(2));
    assert_eq!(a.assign("c"), AliasUse::Reuse(1));
    assert_eq!(OutboundAliases::new(0).assign("a"), AliasUse::None);
}

#[test]
fn persistent_overflow_spills_in_order_and_refills() {
    let limits = MailboxLimits {
        max_queued_messages: 2,
        spill: true,
        ..LIMITS
    };
    let m = Mailbox::new(Arc::from("c"), true, limits);
    let ds: Vec<Delivery> = (0..5).map(|_| delivery(QoS::AtLeastOnce)).collect();
    for d in &ds {
        assert_eq!(
            m.push(d.clone()),
            Ok(true),
            "spilled messages are persisted, not dropped"
        );
    }
    assert_eq!(m.len(), 2);
    let (from, seq) = m.spill_state().expect("spilling");
    assert_eq!(from, ds[2].message.id);
    // While spilling, later messages go to the store too (order is kept).
    let late = delivery(QoS::AtLeastOnce);
    assert_eq!(m.push(late.clone()), Ok(true));
    assert_eq!(m.len(), 2);
    let mut out = Vec::new();
    m.drain(10, &mut out);
    // A page read before `late` spilled does not end spill mode.
    m.refill(ds[2..].to_vec(), seq, true);
    assert_eq!(m.len(), 3);
    let (from, seq) = m.spill_state().expect("still spilling");
    assert_eq!(from, ds[4].message.id + 1);
    m.drain(10, &mut out);
    m.refill(vec![late.clone()], seq, true);
    assert!(m.spill_state().is_none());
    m.drain(10, &mut out);
    let ids: Vec<u64> = out.iter().map(|d| d.message.id).collect();
    let mut want: Vec<u64> = ds.iter().map(|d| d.message.id).collect();
    want.push(late.message.id);
    assert_eq!(ids, want);
}

#[test]
fn spill_mode_waits_for_appends_not_yet_submitted() {
    let limits = MailboxLimits {
        max_queued_messages: 1,
        spill: true,
        ..LIMITS
    };
    let m = Mailbox::new(Arc::from("c"), true, limits);
    m.push(delivery(QoS::AtLeastOnce)).unwrap();
    let late = delivery(QoS::AtLeastOnce);
    // Spilled, but its append is not in the store yet (the publisher has
    // not submitted it): a page read now cannot contain it.
    let pushed = m.push_reporting(late.clone()).unwrap();
    assert!(pushed.spilled);
    let (_, seq) = m.spill_state().expect("spilling");
    m.refill(Vec::new(), seq, true);
    assert!(
        m.spill_state().is_some(),
        "spill mode ended before the append was submitted"
    );
    m.spill_submitted();
    let (_, seq) = m.spill_state().expect("still spilling");
    m.refill(vec![late.clone()], seq, true);
    assert!(m.spill_state().is_none());
    let mut out = Vec::new();
    m.drain(10, &mut out);
    assert_eq!(out.last().map(|d| d.message.id), Some(late.message.id));
}

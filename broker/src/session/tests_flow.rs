//! Flow control in the mailbox (IO-free): a full queue hands deliveries
//! back instead of dropping them, wakes waiting publishers on room, and
//! decides about a slow consumer only after the timeout without progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::delivery;
use super::*;
use crate::protocol::QoS;

const TIMEOUT: Duration = Duration::from_secs(5);

const LIMITS: MailboxLimits = MailboxLimits {
    outbound_capacity: 2,
    max_queued_messages: 3,
    spill: false,
    max_queued_bytes: 1 << 20,
    slow_consumer_timeout: TIMEOUT,
    qos0_wait: true,
};

fn online(persistent: bool, limits: MailboxLimits) -> Arc<Mailbox> {
    let m = Mailbox::new(Arc::from("c"), persistent, limits);
    m.set_online(true);
    m
}

fn full(r: Result<Pushed, Refusal>) -> Full {
    match r {
        Err(Refusal::Full(f)) => *f,
        other => panic!("expected Full, got {other:?}"),
    }
}

#[test]
fn full_queue_hands_qos1_back_instead_of_dropping() {
    let m = online(false, LIMITS);
    let t0 = Instant::now();
    assert!(m.offer(delivery(QoS::AtLeastOnce), || t0).is_ok());
    assert!(m.offer(delivery(QoS::AtLeastOnce), || t0).is_ok());
    let f = full(m.offer(delivery(QoS::AtLeastOnce), || t0));
    assert_eq!(f.retry_at, t0 + TIMEOUT);
    assert_eq!(m.len(), 2, "the bound holds");
    // A drain makes room: the handed-back delivery is taken.
    let mut out = Vec::new();
    m.drain(1, &mut out);
    assert!(m.offer(f.delivery, || t0).is_ok());
    assert_eq!(m.len(), 2);
    assert!(!m.is_evicted());
}

#[test]
fn qos0_waits_too_unless_configured_to_drop() {
    let m = online(false, LIMITS);
    let t0 = Instant::now();
    for _ in 0..2 {
        m.offer(delivery(QoS::AtMostOnce), || t0).unwrap();
    }
    full(m.offer(delivery(QoS::AtMostOnce), || t0));
    let drop = online(
        false,
        MailboxLimits {
            qos0_wait: false,
            ..LIMITS
        },
    );
    for _ in 0..2 {
        drop.offer(delivery(QoS::AtMostOnce), || t0).unwrap();
    }
    assert!(matches!(
        drop.offer(delivery(QoS::AtMostOnce), || t0),
        Err(Refusal::Drop(DropReason::QueueFullQos0))
    ));
}

#[test]
fn callers_that_cannot_wait_and_offline_sessions_drop_as_before() {
    let m = online(false, LIMITS);
    for _ in 0..2 {
        m.push(delivery(QoS::AtLeastOnce)).unwrap();
    }
    assert_eq!(
        m.push(delivery(QoS::AtLeastOnce)),
        Err(DropReason::QueueFull)
    );
    // An offline persistent session never holds a publisher hostage.
    let off = Mailbox::new(Arc::from("c"), true, LIMITS);
    let t0 = Instant::now();
    for _ in 0..3 {
        off.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    }
    assert!(matches!(
        off.offer(delivery(QoS::AtLeastOnce), || t0),
        Err(Refusal::Drop(DropReason::SessionQueueFull))
    ));
    // Timeout 0: never wait.
    let never = online(
        false,
        MailboxLimits {
            slow_consumer_timeout: Duration::ZERO,
            ..LIMITS
        },
    );
    for _ in 0..2 {
        never.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    }
    assert!(matches!(
        never.offer(delivery(QoS::AtLeastOnce), || t0),
        Err(Refusal::Drop(DropReason::QueueFull))
    ));
}

#[test]
fn stuck_clean_session_is_evicted_after_the_timeout_but_progress_resets_it() {
    let m = online(false, LIMITS);
    let t0 = Instant::now();
    for _ in 0..2 {
        m.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    }
    full(m.offer(delivery(QoS::AtLeastOnce), || t0));
    // Progress just before the timeout: the clock starts again.
    let mut out = Vec::new();
    m.drain(1, &mut out);
    let t1 = t0 + TIMEOUT - Duration::from_millis(1);
    m.offer(delivery(QoS::AtLeastOnce), || t1).unwrap();
    let f = full(m.offer(delivery(QoS::AtLeastOnce), || t1));
    assert_eq!(f.retry_at, t1 + TIMEOUT);
    // QoS 0 past the timeout: dropped, no eviction.
    let t2 = t1 + TIMEOUT;
    assert!(matches!(
        m.offer(delivery(QoS::AtMostOnce), || t2),
        Err(Refusal::Drop(DropReason::QueueFullQos0))
    ));
    assert!(!m.is_evicted());
    // QoS 1 past the timeout: dropped and the session evicted.
    assert!(matches!(
        m.offer(f.delivery, || t2),
        Err(Refusal::Drop(DropReason::SlowConsumer))
    ));
    assert!(m.is_evicted());
    assert!(matches!(
        m.offer(delivery(QoS::AtLeastOnce), || t2),
        Err(Refusal::Drop(DropReason::SlowConsumer))
    ));
}

#[test]
fn persistent_session_with_a_store_spills_instead_of_waiting() {
    let m = online(
        true,
        MailboxLimits {
            spill: true,
            ..LIMITS
        },
    );
    let t0 = Instant::now();
    for _ in 0..5 {
        m.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    }
    let pushed = m.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    assert!(pushed.spilled);
    assert!(!m.is_evicted());
}

#[tokio::test]
async fn a_drain_wakes_a_waiting_publisher_and_a_close_refuses() {
    let m = online(false, LIMITS);
    let t0 = Instant::now();
    for _ in 0..2 {
        m.offer(delivery(QoS::AtLeastOnce), || t0).unwrap();
    }
    let f = full(m.offer(delivery(QoS::AtLeastOnce), Instant::now));
    let waiter = {
        let m = m.clone();
        tokio::spawn(async move { m.wait_room(f.seq, Instant::now() + TIMEOUT).await })
    };
    tokio::task::yield_now().await;
    let mut out = Vec::new();
    m.drain(1, &mut out);
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken by the drain")
        .unwrap();
    // A drain that happened before the wait began is not missed either.
    m.offer(delivery(QoS::AtLeastOnce), Instant::now).unwrap();
    let f = full(m.offer(delivery(QoS::AtLeastOnce), Instant::now));
    m.drain(1, &mut out);
    tokio::time::timeout(
        Duration::from_secs(2),
        m.wait_room(f.seq, Instant::now() + TIMEOUT),
    )
    .await
    .expect("the earlier drain counts");
    m.close();
    assert!(matches!(
        m.offer(delivery(QoS::AtLeastOnce), Instant::now),
        Err(Refusal::Closed)
    ));
}

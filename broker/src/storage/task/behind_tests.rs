//! The write-behind table alone: deadlines, acks before and after them,
//! order of a spilling destination, early acks, bounds.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::{Acked, Behind};
use crate::storage::StoredMessage;

fn msg(id: u64) -> StoredMessage {
    StoredMessage {
        id,
        topic: "t".into(),
        qos: 1,
        ..Default::default()
    }
}

fn d(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const SPILL: Duration = Duration::from_millis(100);

fn ids<R>(v: &[super::Held<R>]) -> Vec<u64> {
    v.iter().map(|h| h.msg.id).collect()
}

#[test]
fn all_acked_before_the_deadline_answers_without_a_write() {
    let t0 = Instant::now();
    let mut b: Behind<&str> = Behind::new(SPILL, 16);
    assert!(b.hold(msg(1), d(&["lane", "s"]), "r1", t0).is_none());
    assert!(matches!(b.ack(1, "lane"), Acked::StillOwed));
    assert!(matches!(b.ack(1, "s"), Acked::Done("r1")));
    assert_eq!(b.len(), 0);
    assert!(b.due(t0 + 10 * SPILL).is_empty());
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn the_deadline_spills_only_the_destinations_still_owing() {
    let t0 = Instant::now();
    let mut b: Behind<u8> = Behind::new(SPILL, 16);
    b.hold(msg(1), d(&["lane", "s"]), 1, t0);
    b.hold(msg(2), d(&["x"]), 2, t0 + Duration::from_millis(50));
    assert!(matches!(b.ack(1, "s"), Acked::StillOwed));
    assert!(b.inflight("lane", 1, 7, 1));
    assert_eq!(b.next_deadline(), Some(t0 + SPILL));
    assert!(b.due(t0 + SPILL - Duration::from_millis(1)).is_empty());
    let due = b.due(t0 + SPILL);
    assert_eq!(ids(&due), vec![1]);
    assert_eq!(due[0].owed, d(&["lane"]));
    assert_eq!(due[0].inflight, vec![("lane".to_string(), 7, 1)]);
    assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(150)));
}

#[test]
fn an_ack_after_the_deadline_is_not_the_tables_business() {
    let t0 = Instant::now();
    let mut b: Behind<u8> = Behind::new(SPILL, 16);
    b.hold(msg(1), d(&["lane"]), 1, t0);
    assert_eq!(b.due(t0 + SPILL).len(), 1);
    assert!(matches!(b.ack(1, "lane"), Acked::NotHeld));
    // An ack of a destination that does not owe it is not taken either.
    b.hold(msg(2), d(&["lane"]), 2, t0);
    assert!(matches!(b.ack(2, "other"), Acked::NotHeld));
}

#[test]
fn a_spilling_lane_takes_its_later_messages_along_in_order() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut b: Behind<u8> = Behind::new(SPILL, 16);
    b.hold(msg(1), d(&["lane"]), 1, t0);
    b.hold(msg(2), d(&["lane", "s"]), 2, t0 + ms(10));
    b.hold(msg(3), d(&["s"]), 3, t0 + ms(20));
    b.hold(msg(4), d(&["other"]), 4, t0 + ms(30));
    // 1 is due; 2 shares the lane, 3 shares "s" with 2: all three go, in
    // id order, so the flash never has a lane's later message before an
    // earlier one. "other" is unrelated and keeps waiting.
    let due = b.due(t0 + SPILL);
    assert_eq!(ids(&due), vec![1, 2, 3]);
    assert_eq!(b.len(), 1);
    assert!(!b.holds_for("lane"));
    assert!(b.holds_for("other"));
}

#[test]
fn early_acks_count_when_their_message_arrives() {
    let t0 = Instant::now();
    let mut b: Behind<u8> = Behind::new(SPILL, 2);
    b.early_ack(5, "s");
    assert_eq!(b.hold(msg(5), d(&["s"]), 5, t0), Some((5, 5)));
    b.early_ack(6, "s");
    assert!(b.hold(msg(6), d(&["s", "t"]), 6, t0).is_none());
    assert!(matches!(b.ack(6, "t"), Acked::Done(6)));
    // Bounded: the oldest early ack is forgotten first.
    b.early_ack(7, "s");
    b.early_ack(8, "s");
    b.early_ack(9, "s");
    assert!(b.hold(msg(7), d(&["s"]), 7, t0).is_none());
    assert!(b.hold(msg(9), d(&["s"]), 9, t0).is_some());
}

#[test]
fn clear_and_read_and_bounds() {
    let t0 = Instant::now();
    let mut b: Behind<u8> = Behind::new(SPILL, 2);
    assert!(b.has_room());
    b.hold(msg(1), d(&["s"]), 1, t0);
    b.hold(msg(2), d(&["s", "lane"]), 2, t0);
    assert!(!b.has_room());
    let read: Vec<u64> = b.read("s", None, 10).iter().map(|m| m.id).collect();
    assert_eq!(read, vec![1, 2]);
    let read: Vec<u64> = b.read("s", Some(1), 10).iter().map(|m| m.id).collect();
    assert_eq!(read, vec![2]);
    assert!(b.read("nobody", None, 10).is_empty());
    let done = b.clear("s");
    assert_eq!(done, vec![(1, 1)]);
    assert_eq!(b.len(), 1);
    let rest = b.drain();
    assert_eq!(ids(&rest), vec![2]);
    assert_eq!(rest[0].owed, d(&["lane"]));
    let off: Behind<u8> = Behind::new(Duration::ZERO, 16);
    assert!(!off.has_room());
}

#[test]
fn a_message_written_at_once_takes_the_held_ones_of_its_destinations_first() {
    let t0 = Instant::now();
    let mut b: Behind<u8> = Behind::new(SPILL, 16);
    b.hold(msg(1), d(&["lane", "s"]), 1, t0);
    b.hold(msg(2), d(&["s"]), 2, t0);
    b.hold(msg(3), d(&["x"]), 3, t0);
    assert_eq!(ids(&b.sharing(&d(&["lane"]))), vec![1, 2]);
    assert!(b.sharing(&d(&["nobody"])).is_empty());
    assert_eq!(b.len(), 1);
}

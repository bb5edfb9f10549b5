//! The outbox against a small model of rumqttc: packet ids assigned in
//! channel order, pending cleared on "no session", out-of-order acks.

use super::*;

fn msg(i: u32) -> OutMessage {
    OutMessage {
        topic: format!("t/{i}"),
        qos: 1,
        retain: false,
        payload: Bytes::from(i.to_be_bytes().to_vec()),
        content_type: None,
        user_properties: vec![],
    }
}

fn id(m: &OutMessage) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().unwrap())
}

/// Hands everything and returns the ids handed, in order.
fn hand_all(outbox: &mut Outbox) -> Vec<u32> {
    let mut sent = vec![];
    outbox.hand(|m| {
        sent.push(id(m));
        true
    });
    sent
}

#[test]
fn nothing_is_handed_before_connack() {
    let mut outbox = Outbox::new(4);
    assert!(outbox.push(msg(1)));
    assert!(hand_all(&mut outbox).is_empty());
    outbox.on_connack(false);
    assert_eq!(hand_all(&mut outbox), vec![1]);
}

#[test]
fn capacity_is_enforced_and_freed_by_acks() {
    let mut outbox = Outbox::new(2);
    outbox.on_connack(false);
    assert!(outbox.push(msg(1)) && outbox.push(msg(2)));
    assert!(!outbox.push(msg(3)));
    hand_all(&mut outbox);
    outbox.on_outgoing_publish(1);
    outbox.on_outgoing_publish(2);
    assert_eq!(id(&outbox.on_ack(2).unwrap()), 2);
    assert!(outbox.push(msg(3)));
    assert_eq!(outbox.len(), 2);
}

#[test]
fn acks_map_to_the_message_that_got_the_packet_id() {
    let mut outbox = Outbox::new(10);
    outbox.on_connack(false);
    for i in 1..=3 {
        outbox.push(msg(i));
    }
    hand_all(&mut outbox);
    for pkid in [7, 8, 9] {
        outbox.on_outgoing_publish(pkid);
    }
    assert_eq!(id(&outbox.on_ack(8).unwrap()), 2);
    assert_eq!(id(&outbox.on_ack(7).unwrap()), 1);
    assert!(outbox.on_ack(8).is_none(), "double ack is ignored");
    assert_eq!(id(&outbox.on_ack(9).unwrap()), 3);
    assert!(outbox.is_empty());
}

#[test]
fn lost_session_rehands_everything_unacked_in_order() {
    let mut outbox = Outbox::new(10);
    outbox.on_connack(false);
    for i in 1..=4 {
        outbox.push(msg(i));
    }
    hand_all(&mut outbox);
    outbox.on_outgoing_publish(1);
    outbox.on_outgoing_publish(2);
    outbox.on_ack(1);
    // 3 and 4 were handed but rumqttc never reported them: still in its channel.
    outbox.on_disconnect();
    outbox.push(msg(5));
    assert!(hand_all(&mut outbox).is_empty(), "offline: nothing handed");
    outbox.on_connack(false);
    assert_eq!(hand_all(&mut outbox), vec![2, 3, 4, 5]);
    for pkid in [3, 4, 5, 6] {
        outbox.on_outgoing_publish(pkid);
    }
    let acked: Vec<u32> = [3, 4, 5, 6]
        .into_iter()
        .map(|p| id(&outbox.on_ack(p).unwrap()))
        .collect();
    assert_eq!(acked, vec![2, 3, 4, 5]);
    assert!(outbox.is_empty());
}

#[test]
fn resumed_session_ignores_retransmissions() {
    let mut outbox = Outbox::new(10);
    outbox.on_connack(false);
    for i in 1..=3 {
        outbox.push(msg(i));
    }
    hand_all(&mut outbox);
    outbox.on_outgoing_publish(1);
    outbox.on_disconnect();
    outbox.push(msg(4));
    outbox.on_connack(true);
    // rumqttc resends pkid 1 (dup) then the never-sent 2 and 3 from its pending.
    assert_eq!(hand_all(&mut outbox), vec![4]);
    for pkid in [1, 2, 3, 4] {
        outbox.on_outgoing_publish(pkid);
    }
    let acked: Vec<u32> = [4, 1, 3, 2]
        .into_iter()
        .map(|p| id(&outbox.on_ack(p).unwrap()))
        .collect();
    assert_eq!(acked, vec![4, 1, 3, 2]);
    assert!(outbox.is_empty());
}

#[test]
fn packet_id_collision_is_followed() {
    let mut outbox = Outbox::new(10);
    outbox.on_connack(false);
    for i in 1..=3 {
        outbox.push(msg(i));
    }
    hand_all(&mut outbox);
    outbox.on_outgoing_publish(1);
    outbox.on_outgoing_publish(2);
    outbox.on_await_ack(1); // message 3 collided with the unacked 1
    assert_eq!(id(&outbox.on_ack(1).unwrap()), 1);
    outbox.on_outgoing_publish(1); // rumqttc now sends message 3 with id 1
    assert_eq!(id(&outbox.on_ack(2).unwrap()), 2);
    assert_eq!(id(&outbox.on_ack(1).unwrap()), 3);
    assert!(outbox.is_empty());
}

#[test]
fn a_full_channel_keeps_the_rest_queued_in_order() {
    let mut outbox = Outbox::new(10);
    outbox.on_connack(false);
    for i in 1..=3 {
        outbox.push(msg(i));
    }
    let mut budget = 1;
    let mut sent = vec![];
    outbox.hand(|m| {
        if budget == 0 {
            return false;
        }
        budget -= 1;
        sent.push(id(m));
        true
    });
    assert_eq!(sent, vec![1]);
    assert_eq!(hand_all(&mut outbox), vec![2, 3]);
}

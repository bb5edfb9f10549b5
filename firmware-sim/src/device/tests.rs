//! The firmware ring: windowing, in-order release, resend after a link
//! loss, overflow while offline, and the payload formats.

use super::*;
use crate::reading::decode;
use crate::scenario::PayloadFormat;

fn reading(fw: &mut Firmware, n: u32) {
    for _ in 0..n {
        fw.record(7, 1, Value::Temperature(20.0));
    }
}

#[test]
fn window_limits_in_flight_and_acks_release_in_order() {
    let mut fw = Firmware::boot(0);
    reading(&mut fw, 5);
    let sent: Vec<_> = std::iter::from_fn(|| fw.next_to_send(1, 3)).collect();
    assert_eq!(
        sent.iter().map(|s| s.0.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut released = vec![];
    fw.ack(sent[1].1, &mut |r| released.push(r.seq));
    assert!(released.is_empty(), "seq 1 waits for seq 0");
    fw.ack(sent[0].1, &mut |r| released.push(r.seq));
    assert_eq!(released, vec![0, 1]);
    assert_eq!(fw.next_to_send(1, 3).unwrap().0.seq, 3);
}

#[test]
fn link_loss_resends_with_same_packet_id_and_dup() {
    let mut fw = Firmware::boot(3);
    reading(&mut fw, 2);
    let first = fw.next_to_send(1, 8).unwrap();
    assert!(!first.2);
    fw.link_lost();
    let again = fw.next_to_send(1, 8).unwrap();
    assert_eq!((again.0.seq, again.1, again.2), (0, first.1, true));
    assert_eq!(again.0.boot, 3);
    let second = fw.next_to_send(1, 8).unwrap();
    assert!(!second.2 && second.1 != first.1);
}

#[test]
fn full_ring_drops_oldest_while_offline() {
    let mut fw = Firmware::boot(0);
    reading(&mut fw, RING as u32);
    assert!(fw.record(7, 1, Value::Humidity(50.0)));
    assert_eq!(fw.len(), RING);
    assert_eq!(fw.next_to_send(1, 1).unwrap().0.seq, 1);
}

#[test]
fn qos0_leaves_at_once() {
    let mut fw = Firmware::boot(0);
    reading(&mut fw, 2);
    assert_eq!(fw.next_to_send(0, 1).unwrap().1, 0);
    assert_eq!(fw.len(), 1);
}

#[test]
fn both_formats_round_trip_with_padding() {
    let r = Reading {
        device: 123,
        boot: 2,
        seq: 9,
        ts_ms: 5,
        value: Value::Gps {
            lat: 1.5,
            lon: -2.0,
        },
    };
    for format in [PayloadFormat::Postcard, PayloadFormat::Json] {
        for size in [0, 200] {
            let bytes = encode(r, format, size);
            assert!(bytes.len() >= size);
            assert_eq!(decode(&bytes).unwrap(), r, "{format:?} {size}");
        }
    }
    assert!(decode(b"garbage").is_none());
}

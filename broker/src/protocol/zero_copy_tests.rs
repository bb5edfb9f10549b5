//! Which decoded bytes stay slices of the read buffer (review finding H6):
//! a small payload or binary field is copied out, so a message kept in a
//! queue does not keep the whole buffer it arrived in alive; a large one
//! that is most of its buffer stays zero-copy.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};

use super::wire::ZERO_COPY_MIN;
use super::*;

const MAX: u32 = 1 << 21;

fn publish_packet(payload_len: usize, correlation: Option<&[u8]>) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "a/b".into(),
        pkid: 7,
        payload: Bytes::from(vec![b'x'; payload_len]),
        properties: PublishProperties {
            correlation_data: correlation.map(Bytes::copy_from_slice),
            ..PublishProperties::default()
        },
        ..Publish::default()
    })
}

/// `packet` encoded at the front of a read buffer of `capacity` bytes,
/// with the buffer's address range.
fn read_buffer(packet: &Packet, capacity: usize) -> (BytesMut, std::ops::Range<usize>) {
    let mut buf = BytesMut::with_capacity(capacity);
    encode(packet, ProtocolVersion::V5, &mut buf).unwrap();
    let start = buf.as_ptr() as usize;
    let range = start..start + buf.capacity();
    (buf, range)
}

fn decoded(buf: &mut BytesMut, backing: usize) -> Publish {
    match decode_in_buffer(buf, ProtocolVersion::V5, MAX, backing) {
        Ok(Some(Packet::Publish(p))) => p,
        other => panic!("not a PUBLISH: {other:?}"),
    }
}

fn inside(bytes: &Bytes, range: &std::ops::Range<usize>) -> bool {
    range.contains(&(bytes.as_ptr() as usize))
}

#[test]
fn a_small_payload_is_copied_out_of_a_large_read_buffer() {
    let (mut buf, range) = read_buffer(&publish_packet(10, Some(b"corr")), 64 * 1024);
    // Through the plain entry point too: it assumes the buffer's capacity.
    let p = match decode(&mut buf, ProtocolVersion::V5, MAX) {
        Ok(Some(Packet::Publish(p))) => p,
        other => panic!("not a PUBLISH: {other:?}"),
    };
    assert_eq!(&p.payload[..], b"xxxxxxxxxx");
    assert!(!inside(&p.payload, &range), "payload pins the read buffer");
    let corr = p.properties.correlation_data.unwrap();
    assert_eq!(&corr[..], b"corr");
    assert!(
        !inside(&corr, &range),
        "correlation data pins the read buffer"
    );
}

#[test]
fn a_large_payload_that_is_most_of_its_buffer_stays_zero_copy() {
    let packet = publish_packet(ZERO_COPY_MIN + 100, None);
    let len = encoded_len(&packet, ProtocolVersion::V5);
    let (mut buf, range) = read_buffer(&packet, len);
    let p = decoded(&mut buf, len);
    assert_eq!(p.payload.len(), ZERO_COPY_MIN + 100);
    assert!(inside(&p.payload, &range), "a large payload was copied");
}

#[test]
fn a_large_payload_in_a_much_larger_buffer_is_copied() {
    let packet = publish_packet(ZERO_COPY_MIN + 100, None);
    let (mut buf, range) = read_buffer(&packet, 1 << 20);
    // The buffer's owner knows the allocation is larger than what is left.
    let p = decoded(&mut buf, 1 << 20);
    assert_eq!(p.payload.len(), ZERO_COPY_MIN + 100);
    assert!(!inside(&p.payload, &range), "40 KB pins a 1 MiB buffer");
}

#[test]
fn a_will_payload_is_copied_out_of_the_connect_buffer() {
    let connect = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 30,
        client_id: "dev".into(),
        will: Some(LastWill {
            topic: "w".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }));
    let (mut buf, range) = read_buffer(&connect, 4096);
    let Ok(Some(Packet::Connect(c))) = decode(&mut buf, ProtocolVersion::V311, MAX) else {
        panic!("not a CONNECT");
    };
    let will = c.will.unwrap();
    assert_eq!(&will.payload[..], b"gone");
    assert!(
        !inside(&will.payload, &range),
        "the will pins the CONNECT buffer"
    );
}

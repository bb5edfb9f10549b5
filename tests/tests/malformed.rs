//! Hostile input over raw TCP (issue 2 and issue 7's malformed-input suite).
//! Packets are written by hand, byte by byte, independent of our codec. Each
//! case must close only the offending connection, with the right v5 reason
//! code, while a subscriber on the same broker keeps getting messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use edgemq_tests::{mosquitto_pub, raw_connect, Broker, Sub};

/// v5 CONNECT, clean start, keep alive 60, no properties, client id "bad".
const CONNECT_V5: &[u8] = &[
    0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 3, b'b', b'a', b'd',
];

/// Reads every packet until the server closes; returns (type byte, body) pairs.
fn read_until_closed(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let mut packets = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let first = bytes[i];
        let (mut len, mut shift, mut j) = (0usize, 0, i + 1);
        while j < bytes.len() {
            len |= usize::from(bytes[j] & 0x7F) << shift;
            shift += 7;
            j += 1;
            if bytes[j - 1] & 0x80 == 0 {
                break;
            }
        }
        let end = (j + len).min(bytes.len());
        packets.push((first, bytes[j..end].to_vec()));
        i = end;
    }
    packets
}

/// Sends `bytes` after a v5 CONNECT and returns the DISCONNECT reason code the
/// server sent before closing (None if it closed without one).
fn v5_case(port: u16, bytes: &[u8]) -> Option<u8> {
    let mut s = raw_connect(port);
    s.write_all(CONNECT_V5).unwrap();
    s.write_all(bytes).unwrap();
    let packets = read_until_closed(&mut s);
    assert_eq!(
        packets.first().map(|p| p.0),
        Some(0x20),
        "no CONNACK: {packets:?}"
    );
    packets
        .iter()
        .rev()
        .find(|p| p.0 == 0xE0)
        .map(|p| p.1.first().copied().unwrap_or(0))
}

fn still_serving(port: u16, sub: &mut Sub, n: usize) {
    let payload = format!("alive-{n}");
    assert!(mosquitto_pub(port, &["-t", "health", "-m", &payload])
        .status
        .success());
    assert_eq!(
        sub.messages(1, Duration::from_secs(10)),
        [format!("health {payload}")],
        "broker stopped serving others after case {n}"
    );
}

#[test]
fn each_malformed_packet_closes_only_its_connection_with_the_right_reason() {
    let broker = Broker::start();
    let mut healthy = Sub::spawn(broker.port, &["-t", "health"]);
    healthy.wait_subscribed();
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("QoS 3 PUBLISH", vec![0x36, 6, 0, 1, b'a', 0, 1, 0], 0x81),
        ("DUP on QoS 0", vec![0x38, 4, 0, 1, b'a', 0], 0x81),
        (
            "wildcard in PUBLISH topic",
            vec![0x30, 6, 0, 3, b'a', b'/', b'#', 0],
            0x90,
        ),
        (
            "invalid UTF-8 in topic",
            vec![0x30, 5, 0, 2, 0xC3, 0x28, 0],
            0x81,
        ),
        ("U+0000 in topic", vec![0x30, 5, 0, 2, b'a', 0, 0], 0x81),
        (
            "packet id 0 on QoS 1",
            vec![0x32, 6, 0, 1, b'a', 0, 0, 0],
            0x82,
        ),
        (
            "remaining length of 5 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            0x81,
        ),
        (
            "topic alias 0",
            vec![0x30, 7, 0, 1, b'a', 3, 0x23, 0, 0],
            0x94,
        ),
        (
            "topic alias above the maximum",
            vec![0x30, 7, 0, 1, b'a', 3, 0x23, 0xFF, 0xFF],
            0x94,
        ),
        (
            "duplicate message expiry property",
            vec![0x30, 14, 0, 1, b'a', 10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1],
            0x82,
        ),
        ("reserved flags on PUBREL", vec![0x60, 2, 0, 1], 0x81),
        (
            "reserved flags on SUBSCRIBE",
            vec![0x80, 7, 0, 1, 0, 0, 1, b'a', 0],
            0x81,
        ),
        ("SUBSCRIBE without filters", vec![0x82, 3, 0, 1, 0], 0x82),
        (
            "subscription options reserved bits",
            vec![0x82, 7, 0, 1, 0, 0, 1, b'a', 0xC0],
            0x81,
        ),
        (
            "retain handling 3",
            vec![0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30],
            0x81,
        ),
        ("second CONNECT", CONNECT_V5.to_vec(), 0x82),
        (
            "packet beyond the maximum packet size",
            vec![0x30, 0x80, 0x80, 0x80, 0x01],
            0x95,
        ),
        (
            "truncated property length",
            vec![0x30, 4, 0, 1, b'a', 0x80],
            0x81,
        ),
    ];
    for (n, (name, bytes, want)) in cases.into_iter().enumerate() {
        assert_eq!(v5_case(broker.port, &bytes), Some(want), "{name}");
        still_serving(broker.port, &mut healthy, n);
    }
}

#[test]
fn packets_before_connect_and_garbage_are_dropped() {
    let broker = Broker::start();
    let mut healthy = Sub::spawn(broker.port, &["-t", "health"]);
    healthy.wait_subscribed();
    let openers: [&[u8]; 4] = [
        &[0x30, 3, 0, 1, b'a'],               // PUBLISH before CONNECT
        &[0xC0, 0],                           // PINGREQ before CONNECT
        &[0x00, 0],                           // reserved packet type 0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // not MQTT at all
    ];
    for (n, bytes) in openers.iter().enumerate() {
        let mut s = raw_connect(broker.port);
        s.write_all(bytes).unwrap();
        let packets = read_until_closed(&mut s);
        assert!(
            packets.iter().all(|p| p.0 != 0x20),
            "case {n}: got a CONNACK: {packets:?}"
        );
        still_serving(broker.port, &mut healthy, n);
    }
}

#[test]
fn v311_violations_close_the_connection_without_a_disconnect() {
    let broker = Broker::start();
    // 3.1.1 CONNECT, then a PUBLISH with a wildcard topic.
    let connect: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
    ];
    let mut s = raw_connect(broker.port);
    s.write_all(connect).unwrap();
    s.write_all(&[0x30, 5, 0, 3, b'a', b'/', b'+']).unwrap();
    let packets = read_until_closed(&mut s);
    assert_eq!(
        packets.iter().map(|p| p.0).collect::<Vec<_>>(),
        [0x20],
        "3.1.1 has no server DISCONNECT"
    );
}

//! Small messages do not pin whole read buffers (issue 17 item 4, review
//! finding H6), against the real broker binary over 127.0.0.1.
//!
//! A publisher interleaves a large PUBLISH nobody subscribes to with a
//! 10-byte one that an offline persistent session queues. The large packet
//! makes the connection's read buffer grow to ~60 KB; the small one arrives
//! in the same buffer. If the queued message's payload were a slice of that
//! buffer, each of them would keep a whole buffer alive (300 × 60 KB), while
//! the queue accounts for 10 bytes each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw_client;

use std::time::Duration;

use edgemq::protocol::{Packet, QoS};
use edgemq_tests::Broker;
use raw_client::*;

/// The broker's resident set size in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

const MESSAGES: u16 = 300;
const FILLER: usize = 60_000;

#[test]
fn queued_small_messages_do_not_pin_the_read_buffers_they_arrived_in() {
    let broker = Broker::start_with(Some("[storage]\ndurability = \"memory\"\n"));
    let port = broker.port;
    park_subscriber(port, V311, "slow", "q/#");
    let (mut publisher, _) = Raw::connect(port, V311, "pub", true);
    // Warm up: the first large packets grow the allocator's heap whatever
    // happens to them.
    for _ in 0..4 {
        publisher.send_all(&[publish("fill", QoS::AtMostOnce, 0, vec![b'f'; FILLER])]);
    }
    assert!(publisher.alive());
    let before = rss_kib(broker.pid());
    for i in 1..=MESSAGES {
        let small = format!("small-{i:04}");
        publisher.send_all(&[
            publish("fill", QoS::AtMostOnce, 0, vec![b'f'; FILLER]),
            publish(&format!("q/{i}"), QoS::AtLeastOnce, i, small.into_bytes()),
        ]);
        match publisher.recv() {
            Some(Packet::PubAck(a)) => assert_eq!(a.pkid, i),
            other => panic!("no PUBACK for {i}: {other:?}"),
        }
    }
    let after = rss_kib(broker.pid());
    let grown_kib = after.saturating_sub(before);
    eprintln!(
        "{MESSAGES} queued 10-byte messages behind {FILLER}-byte packets: \
         RSS {before} -> {after} KiB (+{grown_kib} KiB)"
    );
    // 300 queued messages of ~10 bytes need well under 1 MiB; pinned read
    // buffers would hold 300 × 60 KB = 17 MiB.
    assert!(
        grown_kib < 4 * 1024,
        "RSS grew by {grown_kib} KiB for {MESSAGES} queued 10-byte messages"
    );
    // Nothing was lost: the session gets every message, intact.
    let (mut sub, present) = Raw::connect(port, V311, "slow", false);
    assert!(present);
    let got = sub.drain(Duration::from_secs(20), |got| {
        got.len() >= usize::from(MESSAGES)
    });
    assert_eq!(got.len(), usize::from(MESSAGES));
    for (i, payload) in (1..=MESSAGES).zip(&got) {
        assert_eq!(&payload[..], format!("small-{i:04}").as_bytes());
    }
}

//! The cloud bridge against a real Mosquitto cloud that refuses things
//! (issue 12): an ACL denial (v5 PUBACK 0x87) and a message larger than the
//! cloud's `max_packet_size` are dead letters that do not block the lane;
//! a 3.1.1 cloud that closes the connection on a message gets it
//! dead-lettered after three disconnects; lanes keep their identity when
//! the forward rules are reordered or removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use edgemq_tests::{mosquitto_pub, mosquitto_pub_lines, wait_sys, Broker, Mosquitto, Sub};

const CLOUD: &str = "max_queued_messages 10000000";

/// A cloud whose ACL denies `gw-0001/sensors/denied` and which accepts no
/// packet over 2,000 bytes. Returns it with the directory of its ACL file.
fn refusing_cloud() -> (Mosquitto, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Mosquitto checks the entries in order: the denial first.
    std::fs::write(
        &acl,
        "topic deny gw-0001/sensors/denied\ntopic readwrite #\n",
    )
    .unwrap();
    let cloud = Mosquitto::start(&format!(
        "{CLOUD}\nmax_packet_size 2000\nacl_file {}",
        acl.display()
    ));
    (cloud, dir)
}

fn config(cloud_port: u16, protocol: &str, extra: &str) -> String {
    format!(
        r#"
[sys]
interval_secs = 1

[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
protocol = "{protocol}"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 200
{extra}

[[bridge.forward]]
filter = "sensors/#"
remote_prefix = "gw-0001/"
qos = 1
"#
    )
}

fn publish(port: u16, topic: &str, payload: &str) {
    let out = mosquitto_pub(port, &["-q", "1", "-t", topic, "-m", payload]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn numbered(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

/// Sends the 0x87 refusal, the oversize message and 50 ordinary ones;
/// checks the 50 arrive in order and the rejected counter reads 2.
fn refused_then_ordinary(edge: &Broker, cloud: &Mosquitto) {
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/sensors/#"]);
    sub.wait_subscribed();
    publish(edge.port, "sensors/denied", "refused by the cloud's ACL");
    publish(edge.port, "sensors/big", &"x".repeat(4000));
    mosquitto_pub_lines(edge.port, "sensors/p0", &numbered("0", 50));
    let got = sub.messages(50, Duration::from_secs(60));
    let want: Vec<String> = numbered("0", 50)
        .iter()
        .map(|l| format!("gw-0001/sensors/p0 {l}"))
        .collect();
    assert_eq!(got, want, "edge log:\n{}", edge.log());
    let rejected = wait_sys(edge.port, "$SYS/broker/bridge/cloud/messages/rejected", "2");
    assert_eq!(rejected, "2", "edge log:\n{}", edge.log());
    let log = edge.log();
    assert!(
        log.contains("sensors/denied") && log.contains("0x87"),
        "{log}"
    );
}

#[test]
fn refused_and_oversize_messages_do_not_block_the_lane() {
    let (cloud, _acl) = refusing_cloud();
    let metrics = edgemq_tests::free_port();
    let edge = Broker::start_with(Some(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{}",
        config(cloud.port, "v5", "")
    )));
    refused_then_ordinary(&edge, &cloud);
    // The same counter on /metrics.
    let mut http = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.0\r\nHost: edge\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut http, &mut page).unwrap();
    assert!(
        page.lines()
            .any(|l| l == "edgemq_bridge_cloud_messages_rejected 2"),
        "{page}"
    );
}

#[test]
fn refused_and_oversize_messages_reach_the_dead_letter_topic() {
    let (cloud, _acl) = refusing_cloud();
    let edge = Broker::start_with(Some(&config(
        cloud.port,
        "v5",
        "dead_letter_topic = \"deadletter/cloud\"",
    )));
    let mut dead = Sub::spawn(
        edge.port,
        &["-V", "5", "-q", "1", "-t", "deadletter/#", "-F", "%t|%P|%p"],
    );
    dead.wait_subscribed();
    refused_then_ordinary(&edge, &cloud);
    let got = dead.messages(2, Duration::from_secs(20));
    assert_eq!(got.len(), 2, "{got:?}; edge log:\n{}", edge.log());
    let denied = got
        .iter()
        .find(|l| l.ends_with("|refused by the cloud's ACL"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(denied.starts_with("deadletter/cloud|"), "{denied}");
    assert!(denied.contains("0x87"), "{denied}");
    assert!(denied.contains("sensors/denied"), "{denied}");
    let big = got
        .iter()
        .find(|l| l.ends_with(&"x".repeat(4000)))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(big.contains("maximum packet size"), "{big}");
    assert!(big.contains("sensors/big"), "{big}");
}

#[test]
fn v311_cloud_that_closes_on_a_message_gets_it_dead_lettered() {
    // 3.1.1: no Maximum Packet Size in CONNACK, so the oversize message is
    // sent and the cloud closes the connection each time.
    let (cloud, _acl) = refusing_cloud();
    let edge = Broker::start_with(Some(&config(cloud.port, "v311", "")));
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/sensors/#"]);
    sub.wait_subscribed();
    publish(edge.port, "sensors/big", &"x".repeat(4000));
    mosquitto_pub_lines(edge.port, "sensors/p0", &numbered("0", 50));
    let got = sub.messages(50, Duration::from_secs(60));
    let want: Vec<String> = numbered("0", 50)
        .iter()
        .map(|l| format!("gw-0001/sensors/p0 {l}"))
        .collect();
    assert_eq!(got, want, "edge log:\n{}", edge.log());
    assert!(
        edge.log().contains("cloud closed the connection"),
        "{}",
        edge.log()
    );
    let rejected = wait_sys(edge.port, "$SYS/broker/bridge/cloud/messages/rejected", "1");
    assert_eq!(rejected, "1");
}

fn two_rules(cloud_port: u16, rules: &[(&str, &str)], extra: &str) -> String {
    let mut c = format!(
        r#"
[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 200
{extra}
"#
    );
    for (filter, prefix) in rules {
        c.push_str(&format!(
            "\n[[bridge.forward]]\nfilter = \"{filter}\"\nremote_prefix = \"{prefix}\"\nqos = 1\n"
        ));
    }
    c
}

/// Queues 20 messages under `a/#` and 20 under `b/#` while the cloud is
/// down, restarts the edge with `after` as its rules, and returns what the
/// cloud receives on `pa/#` and `pb/#` (waiting for `expect` messages).
fn backlog_across_a_rule_change(
    after: &[(&str, &str)],
    extra: &str,
    expect: usize,
) -> (Vec<String>, Broker, Mosquitto) {
    let mut cloud = Mosquitto::start(CLOUD);
    cloud.stop();
    let before = [("a/#", "pa/"), ("b/#", "pb/")];
    let mut edge = Broker::start_with(Some(&two_rules(cloud.port, &before, extra)));
    mosquitto_pub_lines(edge.port, "a/x", &numbered("a", 20));
    mosquitto_pub_lines(edge.port, "b/x", &numbered("b", 20));
    assert_eq!(edge.terminate(), Some(0), "{}", edge.log());
    cloud.start_again();
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "pa/#", "-t", "pb/#"]);
    sub.wait_subscribed();
    edge.set_config(&two_rules(cloud.port, after, extra));
    edge.restart();
    let got = sub.messages(expect, Duration::from_secs(30));
    (got, edge, cloud)
}

fn expect(prefix_topic: &str, tag: &str) -> Vec<String> {
    numbered(tag, 20)
        .iter()
        .map(|l| format!("{prefix_topic} {l}"))
        .collect()
}

#[test]
fn backlog_keeps_its_prefix_when_the_rules_are_swapped() {
    let (got, edge, _cloud) =
        backlog_across_a_rule_change(&[("b/#", "pb/"), ("a/#", "pa/")], "", 40);
    let a: Vec<String> = got.iter().filter(|l| l.contains(" a-")).cloned().collect();
    let b: Vec<String> = got.iter().filter(|l| l.contains(" b-")).cloned().collect();
    assert_eq!(a, expect("pa/a/x", "a"), "edge log:\n{}", edge.log());
    assert_eq!(b, expect("pb/b/x", "b"), "edge log:\n{}", edge.log());
}

#[test]
fn backlog_of_a_removed_rule_is_drained_to_its_old_prefix() {
    let (got, edge, _cloud) = backlog_across_a_rule_change(&[("b/#", "pb/")], "", 40);
    let a: Vec<String> = got.iter().filter(|l| l.contains(" a-")).cloned().collect();
    let b: Vec<String> = got.iter().filter(|l| l.contains(" b-")).cloned().collect();
    assert_eq!(a, expect("pa/a/x", "a"), "edge log:\n{}", edge.log());
    assert_eq!(b, expect("pb/b/x", "b"), "edge log:\n{}", edge.log());
    assert!(edge.log().contains("orphan"), "{}", edge.log());
}

#[test]
fn orphan_lanes_drop_deletes_the_backlog_of_a_removed_rule() {
    let extra = "orphan_lanes = \"drop\"";
    let (got, mut edge, cloud) = backlog_across_a_rule_change(&[("b/#", "pb/")], extra, 20);
    assert_eq!(got, expect("pb/b/x", "b"), "edge log:\n{}", edge.log());
    assert!(edge.log().contains("dropping"), "{}", edge.log());
    // Deleted from the store, not just skipped: with the rule back, the
    // old backlog does not come back.
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "pa/#"]);
    sub.wait_subscribed();
    edge.set_config(&two_rules(
        cloud.port,
        &[("a/#", "pa/"), ("b/#", "pb/")],
        extra,
    ));
    assert_eq!(edge.terminate(), Some(0));
    edge.restart();
    publish(edge.port, "a/x", "new");
    let got = sub.messages(2, Duration::from_secs(10));
    assert_eq!(got, ["pa/a/x new"], "edge log:\n{}", edge.log());
}

#[test]
fn expired_messages_are_not_forwarded_and_the_rest_of_the_interval_is() {
    let mut cloud = Mosquitto::start(&format!("{CLOUD}\npersistence true"));
    // A v5 consumer session on the cloud that outlives the cloud's restart.
    let consumer = [
        "-V",
        "5",
        "-q",
        "1",
        "-t",
        "gw-0001/#",
        "-c",
        "-x",
        "3600",
        "-i",
        "consumer",
        "-F",
        "%t|%E|%p",
    ];
    let mut sub = Sub::spawn(cloud.port, &consumer);
    sub.wait_subscribed();
    sub.interrupt();
    cloud.terminate();
    let edge = Broker::start_with(Some(&config(cloud.port, "v5", "")));
    for (topic, expiry) in [("sensors/short", "1"), ("sensors/long", "300")] {
        let out = mosquitto_pub(
            edge.port,
            &[
                "-V",
                "5",
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                topic,
                "-D",
                "publish",
                "message-expiry-interval",
                expiry,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    publish(edge.port, "sensors/after", "sensors/after");
    // Let the short interval pass while the messages wait in the lane.
    std::thread::sleep(Duration::from_secs(3));
    cloud.spawn_again();
    let mut sub = Sub::spawn(cloud.port, &consumer);
    let got = sub.messages(3, Duration::from_secs(20));
    let fields: Vec<Vec<&str>> = got.iter().map(|l| l.split('|').collect()).collect();
    assert_eq!(fields.len(), 2, "{got:?}; edge log:\n{}", edge.log());
    assert_eq!(fields[0][0], "gw-0001/sensors/long", "{got:?}");
    let left: u32 = fields[0][1].parse().unwrap();
    assert!((200..=297).contains(&left), "remaining interval {left}");
    assert_eq!(fields[1][0], "gw-0001/sensors/after", "{got:?}");
    assert_eq!(fields[1][1], "", "no expiry: none forwarded");
    let expired = wait_sys(edge.port, "$SYS/broker/bridge/cloud/messages/expired", "1");
    assert_eq!(expired, "1");
}

#[test]
fn envelope_batches_are_split_to_fit_the_clouds_maximum_packet_size() {
    use edgemq::envelope::{decode, Compression, Encoding, Format};
    let (cloud, _acl) = refusing_cloud();
    // Up to 500 messages per envelope and a long linger: without the cloud's
    // limit the whole burst (about 12 KB) would be one PUBLISH.
    let batch = "[bridge.batch]\nmode = \"envelope\"\nmax_messages = 500\nlinger_ms = 300\n\
                 envelope_topic = \"gw-0001/batch\"\nencoding = \"postcard\"\ncompression = \"none\"\n";
    let edge = Broker::start_with(Some(&config(cloud.port, "v5", batch)));
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/batch", "-F", "%x"]);
    sub.wait_subscribed();
    let n = 200;
    let readings: Vec<String> = (0..n)
        .map(|i| format!("{{\"seq\":{i:>4},\"t\":21.5,\"unit\":\"celsius\",\"ok\":true}}"))
        .collect();
    mosquitto_pub_lines(edge.port, "sensors/t1", &readings);
    let format = Format {
        encoding: Encoding::Postcard,
        compression: Compression::None,
    };
    let mut decoded = Vec::new();
    let mut envelopes = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while decoded.len() < n && Instant::now() < deadline {
        for hex in sub.messages(1, Duration::from_secs(1)) {
            let body: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert!(body.len() < 2000, "{} byte envelope", body.len());
            envelopes += 1;
            decoded.extend(decode(&body, format).unwrap());
        }
    }
    assert_eq!(decoded.len(), n, "edge log:\n{}", edge.log());
    for (m, want) in decoded.iter().zip(&readings) {
        assert_eq!(m.topic, "gw-0001/sensors/t1");
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), want);
    }
    assert!(envelopes > 1);
    let rejected = wait_sys(edge.port, "$SYS/broker/bridge/cloud/messages/rejected", "0");
    assert_eq!(rejected, "0");
}

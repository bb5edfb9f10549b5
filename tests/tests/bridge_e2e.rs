//! The cloud uplink bridge end to end (issue 5), with a real Mosquitto as
//! the cloud broker: mirror mode in order, an outage with store-and-forward,
//! `kill -9` during the drain, a cloud restarted without its session,
//! downlink commands, envelope batches decoded with `edgemq::envelope`, and
//! priority lanes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgemq_tests::{mosquitto_pub, mosquitto_pub_lines, Broker, Mosquitto, Sub};

/// The cloud must not drop messages for its own slow consumer (Mosquitto
/// keeps 1,000 per client by default), or the test would measure that.
const CLOUD: &str = "max_queued_messages 10000000";

/// A consumer with a persistent session on a cloud started with
/// `persistence true`: the session (and what is queued for it) outlives the
/// cloud's restart, so whatever the bridge forwards before the test's
/// subscriber is back is kept for it, not dropped by the cloud.
const CONSUMER: [&str; 7] = ["-q", "1", "-t", "gw-0001/#", "-c", "-i", "consumer"];

/// Creates the consumer's session on the cloud, then leaves.
fn park_cloud_consumer(cloud: &Mosquitto) {
    let mut sub = Sub::spawn(cloud.port, &CONSUMER);
    sub.wait_subscribed();
    sub.interrupt();
}

fn bridge_config(cloud_port: u16, extra: &str) -> String {
    format!(
        r#"
[[bridge]]
name = "cloud"
address = "127.0.0.1:{cloud_port}"
protocol = "v5"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 500
{extra}

[[bridge.forward]]
filter = "sensors/#"
remote_prefix = "gw-0001/"
qos = 1
priority = 5

[[bridge.downlink]]
filter = "gw-0001/cmd/#"
strip_prefix = "gw-0001/"
qos = 1
"#
    )
}

/// Checks every publisher's messages arrived, each publisher's in order;
/// returns the number of duplicates.
fn check_in_order(got: &[String], publishers: usize, per_publisher: usize) -> usize {
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    for line in got {
        let payload = line.rsplit(' ').next().unwrap();
        let (p, seq) = payload.split_once('-').unwrap();
        seen.entry(p.parse().unwrap())
            .or_default()
            .push(seq.parse().unwrap());
    }
    let mut duplicates = 0;
    for p in 0..publishers {
        let seqs = seen.get(&p).cloned().unwrap_or_default();
        let mut dedup = seqs.clone();
        dedup.dedup();
        duplicates += seqs.len() - dedup.len();
        let mut sorted = dedup.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted,
            (0..per_publisher).collect::<Vec<_>>(),
            "publisher {p}: missing messages"
        );
        assert!(
            dedup.windows(2).all(|w| w[0] < w[1] || w[1] == 0),
            "publisher {p}: out of order"
        );
    }
    duplicates
}

fn lines(publisher: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{publisher}-{i}")).collect()
}

#[test]
fn mirror_mode_delivers_every_message_in_order() {
    let cloud = Mosquitto::start(CLOUD);
    let edge = Broker::start_with(Some(&bridge_config(cloud.port, "")));
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/sensors/#"]);
    sub.wait_subscribed();
    let (publishers, each) = (4, 2500);
    std::thread::scope(|s| {
        for p in 0..publishers {
            let port = edge.port;
            s.spawn(move || mosquitto_pub_lines(port, &format!("sensors/p{p}"), &lines(p, each)));
        }
    });
    let got = sub.messages(publishers * each, Duration::from_secs(120));
    assert_eq!(got.len(), publishers * each, "log:\n{}", edge.log());
    assert_eq!(check_in_order(&got, publishers, each), 0);
}

#[test]
fn outage_then_crash_during_drain_loses_nothing() {
    let mut cloud = Mosquitto::start(&format!("{CLOUD}\npersistence true"));
    park_cloud_consumer(&cloud);
    let mut edge = Broker::start_with(Some(&bridge_config(cloud.port, "")));
    cloud.terminate();
    // Cloud down: messages are PUBACKed locally and wait on flash.
    let each = 10_000;
    mosquitto_pub_lines(edge.port, "sensors/p0", &lines(0, each));
    cloud.spawn_again();
    let mut sub = Sub::spawn(cloud.port, &CONSUMER);
    // Let part of the backlog drain, then kill edgemq in the middle of it.
    let mut got = sub.messages(1000, Duration::from_secs(60));
    let first_batch = got.len();
    edge.kill9();
    edge.restart();
    // Wait until every sequence number arrived (generous deadline: the
    // restarted bridge reconnects with backoff), not for a quiet period.
    let seq = |l: &String| l.rsplit('-').next().and_then(|n| n.parse::<usize>().ok());
    let mut distinct: std::collections::HashSet<usize> = got.iter().filter_map(seq).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while distinct.len() < each && std::time::Instant::now() < deadline {
        let more = sub.messages(each - distinct.len(), Duration::from_secs(2));
        distinct.extend(more.iter().filter_map(seq));
        got.extend(more);
    }
    let missing: Vec<usize> = (0..each).filter(|i| !distinct.contains(i)).collect();
    let before_kill: std::collections::HashSet<usize> =
        got[..first_batch].iter().filter_map(seq).collect();
    assert!(
        missing.is_empty(),
        "{} messages missing after outage and kill -9 (first {:?}, last {:?}; {} distinct \
         received before the kill, highest {:?}); edge log:\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        before_kill.len(),
        before_kill.iter().max(),
        edge.log()
    );
    let duplicates = check_in_order_allowing_replay(&got, each);
    println!(
        "outage + kill -9: {} received, {duplicates} duplicates",
        got.len()
    );
}

/// After a crash the bridge resends from its last acknowledged entry, so the
/// sequence may step back; every message must still be there.
fn check_in_order_allowing_replay(got: &[String], each: usize) -> usize {
    let mut seqs: Vec<usize> = got
        .iter()
        .map(|l| l.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs,
        (0..each).collect::<Vec<_>>(),
        "messages missing after outage and kill -9"
    );
    total - each
}

#[test]
fn cloud_restart_without_session_loses_nothing() {
    let mut cloud = Mosquitto::start(&format!("{CLOUD}\npersistence false"));
    let edge = Broker::start_with(Some(&bridge_config(cloud.port, "")));
    let mut sub = Sub::spawn(
        cloud.port,
        &["-q", "1", "-t", "gw-0001/sensors/#", "-c", "-i", "consumer"],
    );
    sub.wait_subscribed();
    let each = 3000;
    let port = edge.port;
    let publisher =
        std::thread::spawn(move || mosquitto_pub_lines(port, "sensors/p0", &lines(0, each)));
    let mut got = sub.messages(500, Duration::from_secs(60));
    // The cloud loses everything, including the bridge's session.
    cloud.start_again();
    let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/sensors/#"]);
    sub.wait_subscribed();
    publisher.join().unwrap();
    // Messages sent to the old cloud after our consumer's last read were
    // lost by the cloud, not by the bridge: everything the bridge had not
    // seen acknowledged is resent, and new ones flow until the last one.
    let last = format!("0-{}", each - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !got.last().is_some_and(|l| l.ends_with(&last)) && std::time::Instant::now() < deadline {
        got.extend(sub.messages(1, Duration::from_secs(1)));
    }
    assert!(
        got.last().is_some_and(|l| l.ends_with(&last)),
        "the stream did not complete; log:\n{}",
        edge.log()
    );
}

#[test]
fn downlink_command_reaches_a_local_subscriber() {
    let cloud = Mosquitto::start(CLOUD);
    let edge = Broker::start_with(Some(&bridge_config(cloud.port, "")));
    let mut local = Sub::spawn(edge.port, &["-q", "1", "-t", "cmd/#"]);
    local.wait_subscribed();
    // The bridge subscribes on connect; publish until the command lands.
    let mut got = Vec::new();
    for _ in 0..50 {
        assert!(mosquitto_pub(
            cloud.port,
            &["-q", "1", "-t", "gw-0001/cmd/reboot", "-m", "now"]
        )
        .status
        .success());
        got = local.messages(1, Duration::from_millis(200));
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, ["cmd/reboot now"], "log:\n{}", edge.log());
}

#[test]
fn envelope_batches_decode_with_every_encoding_and_compression() {
    use edgemq::envelope::{decode, Compression, Encoding, Format};
    let n = 300;
    for (encoding, compression) in [
        (Encoding::Postcard, Compression::None),
        (Encoding::Postcard, Compression::Lz4),
        (Encoding::Postcard, Compression::Gzip),
        (Encoding::Json, Compression::None),
        (Encoding::Json, Compression::Lz4),
        (Encoding::Json, Compression::Gzip),
    ] {
        let cloud = Mosquitto::start(CLOUD);
        let names = |e: Encoding, c: Compression| {
            let e = match e {
                Encoding::Postcard => "postcard",
                Encoding::Json => "json",
            };
            let c = match c {
                Compression::None => "none",
                Compression::Lz4 => "lz4",
                Compression::Gzip => "gzip",
            };
            (e, c)
        };
        let (e, c) = names(encoding, compression);
        let batch = format!(
            "[bridge.batch]\nmode = \"envelope\"\nmax_messages = 100\nlinger_ms = 20\nenvelope_topic = \"gw-0001/batch\"\nencoding = \"{e}\"\ncompression = \"{c}\"\n"
        );
        let edge = Broker::start_with(Some(&bridge_config(cloud.port, &batch)));
        let mut sub = Sub::spawn(cloud.port, &["-q", "1", "-t", "gw-0001/batch", "-F", "%x"]);
        sub.wait_subscribed();
        let readings: Vec<String> = (0..n)
            .map(|i| format!("{{\"seq\":{i},\"t\":21.5}}"))
            .collect();
        mosquitto_pub_lines(edge.port, "sensors/t1", &readings);
        let mut decoded = Vec::new();
        let mut wire_bytes = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while decoded.len() < n && std::time::Instant::now() < deadline {
            for hex in sub.messages(1, Duration::from_secs(1)) {
                let body: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                wire_bytes += body.len();
                decoded.extend(
                    decode(
                        &body,
                        Format {
                            encoding,
                            compression,
                        },
                    )
                    .unwrap(),
                );
            }
        }
        assert_eq!(decoded.len(), n, "{e}/{c}: log:\n{}", edge.log());
        for (i, m) in decoded.iter().enumerate() {
            assert_eq!(m.topic, "gw-0001/sensors/t1");
            assert_eq!(std::str::from_utf8(&m.payload).unwrap(), readings[i]);
        }
        println!(
            "envelope {e}/{c}: {:.1} payload bytes on the wire per message",
            wire_bytes as f64 / n as f64
        );
    }
}

#[test]
fn high_priority_lane_drains_first_after_an_outage() {
    // The cloud keeps an offline consumer's session across its own restart,
    // so the consumer sees the cloud's arrival order of everything.
    let mut cloud = Mosquitto::start(&format!("{CLOUD}\npersistence true"));
    park_cloud_consumer(&cloud);
    let extra = "\n[[bridge.forward]]\nfilter = \"alerts/#\"\nremote_prefix = \"gw-0001/\"\nqos = 1\npriority = 9\n";
    // The alerts rule (priority 9) is listed after the sensors rule (5).
    let config = format!("{}{extra}", bridge_config(cloud.port, ""));
    let edge = Broker::start_with(Some(&config));
    cloud.terminate();
    mosquitto_pub_lines(edge.port, "sensors/p0", &lines(0, 500));
    mosquitto_pub_lines(edge.port, "alerts/fire", &lines(1, 500));
    cloud.spawn_again();
    let mut sub = Sub::spawn(cloud.port, &CONSUMER);
    let got = sub.messages(1000, Duration::from_secs(60));
    assert_eq!(got.len(), 1000, "log:\n{}", edge.log());
    let first_sensor = got
        .iter()
        .position(|l| l.starts_with("gw-0001/sensors/"))
        .unwrap();
    assert_eq!(
        first_sensor, 500,
        "the high-priority backlog did not drain first"
    );
    assert!(got[first_sensor..]
        .iter()
        .all(|l| l.starts_with("gw-0001/sensors/")));
}

#[test]
fn bridge_over_tls_checks_the_server_name() {
    let pki = tempfile::tempdir().unwrap();
    edgemq_tests::make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).to_str().unwrap().to_string();
    let cloud = Mosquitto::start(&format!(
        "{CLOUD}\ncafile {}\ncertfile {}\nkeyfile {}",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    ));
    let tls = format!("\n[bridge.tls]\nca_file = {:?}\n", p("ca.pem"));
    // `localhost` is resolved on connect and checked against the certificate.
    let config = bridge_config(cloud.port, &tls).replace("127.0.0.1:", "localhost:");
    let edge = Broker::start_with(Some(&config));
    let mut sub = Sub::spawn(
        cloud.port,
        &[
            "--cafile",
            &p("ca.pem"),
            "-h",
            "localhost",
            "-q",
            "1",
            "-t",
            "gw-0001/sensors/#",
        ],
    );
    sub.wait_subscribed();
    mosquitto_pub_lines(edge.port, "sensors/p0", &lines(0, 100));
    let got = sub.messages(100, Duration::from_secs(30));
    assert_eq!(got.len(), 100, "log:\n{}", edge.log());
    assert_eq!(check_in_order(&got, 1, 100), 0);
}

#[test]
fn store_qos0_keeps_qos0_readings_through_an_outage_in_order() {
    let mut cloud = Mosquitto::start(&format!("{CLOUD}\npersistence true"));
    park_cloud_consumer(&cloud);
    let config = bridge_config(cloud.port, "").replace(
        "filter = \"sensors/#\"",
        "filter = \"sensors/#\"\nstore_qos0 = true",
    );
    let edge = Broker::start_with(Some(&config));
    cloud.terminate();
    // More QoS 0 readings than a memory buffer holds (outbound_capacity 1024).
    let each = 3000;
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &edge.port.to_string(),
            "-q",
            "0",
            "-t",
            "sensors/p0",
            "-l",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines(0, each) {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    cloud.spawn_again();
    let mut sub = Sub::spawn(cloud.port, &CONSUMER);
    let got = sub.messages(each, Duration::from_secs(60));
    let seqs: Vec<usize> = got
        .iter()
        .map(|l| l.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    let first = seqs.first().copied().expect("nothing arrived");
    assert_eq!(
        seqs,
        (first..each).collect::<Vec<_>>(),
        "log:\n{}",
        edge.log()
    );
    assert_eq!(first, 0, "the subscriber missed the start of the backlog");
}

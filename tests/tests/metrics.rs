//! The Prometheus endpoint and /healthz (issue 8), scraped over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use edgemq_tests::{free_port, mosquitto_pub, Broker, Sub};

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_endpoint_reports_core_and_store_figures() {
    let port = free_port();
    let broker = Broker::start_with(Some(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")));
    let health = get(port, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    // An offline persistent session with three messages waiting for it.
    let mut offline = Sub::spawn(broker.port, &["-c", "-i", "qd", "-q", "1", "-t", "q/#"]);
    offline.wait_subscribed();
    offline.interrupt();
    for i in 0..3 {
        let out = mosquitto_pub(
            broker.port,
            &["-q", "1", "-t", &format!("q/{i}"), "-m", "y"],
        );
        assert!(out.status.success());
    }
    for i in 0..5 {
        let out = mosquitto_pub(
            broker.port,
            &["-q", "1", "-r", "-t", &format!("m/{i}"), "-m", "x"],
        );
        assert!(out.status.success());
    }
    let body = get(port, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(value(&body, "edgemq_messages_received") >= 5.0);
    assert!(value(&body, "edgemq_publish_messages_received") >= 5.0);
    // By QoS: the sum is the total; the queue gauge counts the offline
    // session's three messages.
    let by_qos: f64 = ["qos0", "qos1", "qos2"]
        .iter()
        .map(|q| value(&body, &format!("edgemq_edgemq_publish_received_{q}")))
        .sum();
    assert_eq!(by_qos, value(&body, "edgemq_publish_messages_received"));
    assert_eq!(value(&body, "edgemq_edgemq_publish_received_qos1"), 8.0);
    assert_eq!(value(&body, "edgemq_edgemq_queued_messages"), 3.0);
    // $SYS topics are retained too, as in Mosquitto.
    assert!(value(&body, "edgemq_retained_messages_count") >= 5.0);
    // Five retained messages went through the durable store.
    assert!(value(&body, "edgemq_store_syncs") >= 1.0);
    assert!(value(&body, "edgemq_store_bytes_written") > 0.0);
    assert!(body.contains("# TYPE edgemq_store_write_amplification gauge"));
    // The sync latency histogram counts every sync the store made.
    assert!(body.contains("# TYPE edgemq_store_sync_seconds histogram"));
    let counted = value(&body, "edgemq_store_sync_seconds_count");
    assert!(counted >= 1.0, "{body}");
    let inf = value(&body, "edgemq_store_sync_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(inf, counted, "{body}");
    assert!(get(port, "/nope").starts_with("HTTP/1.1 404"));
}

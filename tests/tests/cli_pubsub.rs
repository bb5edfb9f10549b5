//! Publish/subscribe with Mosquitto's own command-line clients, in MQTT 3.1.1
//! and 5: QoS 0/1/2, retained messages, wills, persistent sessions and $SYS.
//! These clients are independent of our code, so they check interoperability
//! as much as behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgemq_tests::{mosquitto_pub, Broker, Sub};

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];
const WAIT: Duration = Duration::from_secs(15);

#[test]
fn qos_0_1_2_delivered_in_order_both_versions() {
    let broker = Broker::start();
    for v in VERSIONS {
        for qos in ["0", "1", "2"] {
            let topic = format!("cli/{v}/{qos}");
            let mut sub = Sub::spawn(broker.port, &["-V", v, "-q", qos, "-t", &topic]);
            sub.wait_subscribed();
            let lines: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
            let out = mosquitto_pub(broker.port, &["-V", v, "-q", qos, "-t", &topic, "-m", "x"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for l in &lines {
                let out = mosquitto_pub(broker.port, &["-V", v, "-q", qos, "-t", &topic, "-m", l]);
                assert!(out.status.success());
            }
            let got = sub.messages(21, WAIT);
            let mut want = vec![format!("{topic} x")];
            want.extend(lines.iter().map(|l| format!("{topic} {l}")));
            assert_eq!(got, want, "{v} QoS {qos}");
        }
    }
}

#[test]
fn wildcards_and_dollar_topics() {
    let broker = Broker::start();
    let mut sub = Sub::spawn(broker.port, &["-t", "w/+/temp", "-t", "deep/#", "-t", "#"]);
    sub.wait_subscribed();
    for (topic, payload) in [
        ("w/a/temp", "1"),
        ("w/a/b/temp", "2"),
        ("deep", "3"),
        ("deep/x/y", "4"),
    ] {
        mosquitto_pub(broker.port, &["-t", topic, "-m", payload]);
    }
    // '#' matches everything but $-topics; overlapping filters give one copy in 3.1.1.
    let got = sub.messages(4, WAIT);
    assert_eq!(got, ["w/a/temp 1", "w/a/b/temp 2", "deep 3", "deep/x/y 4"]);
    let mut sys = Sub::spawn(broker.port, &["-t", "#", "-C", "1", "-W", "3"]);
    sys.wait_subscribed();
    assert!(sys
        .messages(1, Duration::from_secs(3))
        .iter()
        .all(|l| !l.starts_with('$')));
}

#[test]
fn retained_set_replace_clear() {
    let broker = Broker::start();
    for v in VERSIONS {
        let topic = format!("ret/{v}");
        mosquitto_pub(
            broker.port,
            &["-V", v, "-r", "-q", "1", "-t", &topic, "-m", "first"],
        );
        mosquitto_pub(
            broker.port,
            &["-V", v, "-r", "-q", "1", "-t", &topic, "-m", "second"],
        );
        let mut sub = Sub::spawn(broker.port, &["-V", v, "-t", &topic]);
        sub.wait_subscribed();
        assert_eq!(sub.messages(1, WAIT), [format!("{topic} second")]);
        sub.kill();
        // An empty retained payload clears it: a new subscriber gets nothing.
        mosquitto_pub(broker.port, &["-V", v, "-r", "-q", "1", "-t", &topic, "-n"]);
        mosquitto_pub(
            broker.port,
            &["-V", v, "-q", "1", "-t", "ret/marker", "-m", "after"],
        );
        let mut sub = Sub::spawn(broker.port, &["-V", v, "-t", &topic, "-t", "ret/marker"]);
        sub.wait_subscribed();
        mosquitto_pub(broker.port, &["-V", v, "-t", "ret/marker", "-m", "live"]);
        assert_eq!(
            sub.messages(1, WAIT),
            ["ret/marker live"],
            "{v}: cleared retained message came back"
        );
    }
}

/// A mosquitto_sub client (subscribed to `x`) whose will is `payload` on `topic`.
fn will_client(port: u16, version: &str, topic: &str, payload: &str) -> Sub {
    Sub::spawn(
        port,
        &[
            "-V",
            version,
            "-t",
            "x",
            "--will-topic",
            topic,
            "--will-payload",
            payload,
        ],
    )
}

#[test]
fn will_published_on_socket_loss_not_on_disconnect() {
    let broker = Broker::start();
    for v in VERSIONS {
        let topic = format!("will/{v}");
        let mut watcher = Sub::spawn(broker.port, &["-V", v, "-t", &topic]);
        watcher.wait_subscribed();
        // A normal DISCONNECT (mosquitto_pub ends with one) discards the will.
        let out = mosquitto_pub(
            broker.port,
            &[
                "-V",
                v,
                "-t",
                "x",
                "-m",
                "hi",
                "--will-topic",
                &topic,
                "--will-payload",
                "polite",
            ],
        );
        assert!(out.status.success(), "{v}: mosquitto_pub failed");
        if v == "mqttv5" {
            // On SIGINT mosquitto_sub v5 sends DISCONNECT with reason 0x04
            // "disconnect with will message": the will is published.
            let mut leaving = will_client(broker.port, v, &topic, "with-will");
            leaving.wait_subscribed();
            leaving.interrupt();
            assert_eq!(
                watcher.messages(1, WAIT),
                vec![format!("{topic} with-will")],
                "{v}"
            );
        }
        // Socket loss (SIGKILL): the will is published.
        let mut rude = will_client(broker.port, v, &topic, "gone");
        rude.wait_subscribed();
        rude.kill();
        assert_eq!(
            watcher.messages(1, WAIT),
            vec![format!("{topic} gone")],
            "{v}: the polite client's will must not appear"
        );
    }
}

#[test]
fn persistent_session_receives_what_was_queued_offline() {
    let broker = Broker::start();
    for v in VERSIONS {
        let id = format!("persist-{v}");
        let topic = format!("queue/{v}");
        let mut args = vec!["-V", v, "-c", "-i", &id, "-q", "1", "-t", &topic];
        if v == "mqttv5" {
            args.extend(["-x", "600"]);
        }
        let mut sub = Sub::spawn(broker.port, &args);
        sub.wait_subscribed();
        sub.interrupt();
        for i in 0..5 {
            let out = mosquitto_pub(
                broker.port,
                &["-V", v, "-q", "1", "-t", &topic, "-m", &format!("q{i}")],
            );
            assert!(out.status.success());
        }
        let mut sub = Sub::spawn(broker.port, &args);
        let got = sub.messages(5, WAIT);
        let want: Vec<String> = (0..5).map(|i| format!("{topic} q{i}")).collect();
        assert_eq!(got, want, "{v}");
    }
}

#[test]
fn sys_topics_in_mosquitto_layout() {
    let broker = Broker::start_with(Some("[sys]\ninterval_secs = 1\n"));
    let mut sub = Sub::spawn(broker.port, &["-t", "$SYS/#"]);
    sub.wait_subscribed();
    let got = sub.messages(200, Duration::from_secs(4));
    for want in [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ] {
        // Lines are "topic payload"; some of Mosquitto's topic names contain spaces.
        assert!(
            got.iter().any(|l| l.starts_with(&format!("{want} "))),
            "{want} missing from {got:?}"
        );
    }
}

//! edgemq-pub and edgemq-sub against a real Mosquitto, with mosquitto_pub and
//! mosquitto_sub on the other side; envelope unpacking; exit codes.
//!
//! Retained messages make the tests deterministic: they are published
//! before the subscriber starts and arrive on subscribe, so no test has to
//! guess when a subscription became active.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use client_support::{binary, free_port, Mosquitto, TestBroker};
use edgemq_client::envelope::{self, Compression, Encoding, Format};

fn edgemq_pub() -> Command {
    Command::new(binary("edgemq-client", "edgemq-pub"))
}

fn edgemq_sub() -> Command {
    Command::new(binary("edgemq-client", "edgemq-sub"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    if !out.status.success() {
        eprintln!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn lines(out: &Output) -> BTreeSet<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn both_brokers() -> [TestBroker; 2] {
    [TestBroker::mosquitto(), TestBroker::edgemq()]
}

#[test]
fn edgemq_pub_to_mosquitto_sub() {
    for broker in both_brokers() {
        edgemq_pub_to_mosquitto_sub_on(broker);
    }
}

fn edgemq_pub_to_mosquitto_sub_on(broker: TestBroker) {
    let p = broker.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, "from a file").unwrap();

    let ok = |o: Output| assert!(o.status.success());
    ok(run(edgemq_pub().args([
        "-p", &p, "-t", "cli/m", "-m", "hello", "-q", "1", "-r",
    ])));
    ok(run(edgemq_pub()
        .args([
            "-p", &p, "-t", "cli/f", "-r", "-q", "2", "-V", "mqttv5", "-f",
        ])
        .arg(&file)));
    let mut lines_pub = edgemq_pub()
        .args([
            "-p", &p, "-t", "cli/l", "-l", "-q", "1", "-r", "-i", "line-pub",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    lines_pub
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\nlast\n")
        .unwrap();
    assert!(lines_pub.wait().unwrap().success());

    let out =
        run(Command::new("mosquitto_sub")
            .args(["-p", &p, "-t", "cli/#", "-v", "-C", "3", "-W", "10"]));
    assert!(out.status.success());
    assert_eq!(
        lines(&out),
        set(&["cli/m hello", "cli/f from a file", "cli/l last"])
    );
}

#[test]
fn mosquitto_pub_to_edgemq_sub() {
    for broker in both_brokers() {
        mosquitto_pub_to_edgemq_sub_on(broker);
    }
}

fn mosquitto_pub_to_edgemq_sub_on(broker: TestBroker) {
    let p = broker.port().to_string();
    for (topic, msg) in [("m/a", "alpha"), ("m/b", "beta")] {
        let st = Command::new("mosquitto_pub")
            .args(["-p", &p, "-t", topic, "-m", msg, "-r", "-q", "1"])
            .status();
        assert!(st.unwrap().success());
    }
    for version in ["mqttv311", "mqttv5"] {
        let out = run(edgemq_sub().args([
            "-p", &p, "-t", "m/a", "-t", "m/b", "-v", "-C", "2", "-W", "10", "-V", version,
        ]));
        assert!(out.status.success(), "{version}");
        assert_eq!(lines(&out), set(&["m/a alpha", "m/b beta"]), "{version}");
    }
    let out = run(edgemq_sub().args(["-p", &p, "-t", "m/a", "-C", "1", "-W", "10", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["topic"], "m/a");
    assert_eq!(v["payload"], "alpha");
    assert_eq!(v["retain"], true);
}

fn batch() -> Vec<envelope::Message> {
    (0..3)
        .map(|i| envelope::Message {
            topic: format!("gw/sensors/{i}"),
            timestamp_ms: 1_700_000_000_000 + i,
            qos: 1,
            retain: false,
            payload: format!("{{\"t\":{i}}}").into(),
            user_properties: vec![],
        })
        .collect()
}

#[test]
fn unbatch_by_content_type_and_by_flag() {
    for broker in both_brokers() {
        unbatch_on(broker);
    }
}

fn unbatch_on(broker: TestBroker) {
    let p = broker.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let expected = set(&[
        "gw/sensors/0 {\"t\":0}",
        "gw/sensors/1 {\"t\":1}",
        "gw/sensors/2 {\"t\":2}",
    ]);
    for (i, format) in [
        Format {
            encoding: Encoding::Postcard,
            compression: Compression::Lz4,
        },
        Format {
            encoding: Encoding::Json,
            compression: Compression::Gzip,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("batch{i}"));
        std::fs::write(&file, envelope::encode(&batch(), format).unwrap()).unwrap();
        let topic = format!("gw/batch/{i}");
        // MQTT 5: mosquitto_pub sets the content type, edgemq-sub reads it.
        let st = Command::new("mosquitto_pub")
            .args([
                "-p",
                &p,
                "-t",
                &topic,
                "-r",
                "-V",
                "mqttv5",
                "-D",
                "publish",
                "content-type",
            ])
            .arg(format.content_type())
            .arg("-f")
            .arg(&file)
            .status();
        assert!(st.unwrap().success());
        let out = run(edgemq_sub().args([
            "-p",
            &p,
            "-t",
            &topic,
            "-V",
            "mqttv5",
            "--unbatch",
            "-v",
            "-C",
            "3",
            "-W",
            "10",
        ]));
        assert!(out.status.success());
        assert_eq!(lines(&out), expected, "{format}");
    }
    // MQTT 3.1.1 has no content type: the format is given on the command line.
    let file = dir.path().join("batch-v311");
    let format = Format {
        encoding: Encoding::Postcard,
        compression: Compression::Gzip,
    };
    std::fs::write(&file, envelope::encode(&batch(), format).unwrap()).unwrap();
    assert!(run(edgemq_pub()
        .args(["-p", &p, "-t", "gw/v311", "-r", "-f"])
        .arg(&file))
    .status
    .success());
    let out = run(edgemq_sub().args([
        "-p",
        &p,
        "-t",
        "gw/v311",
        "--unbatch",
        "--unbatch-format",
        "postcard+gzip",
        "--json",
        "-C",
        "3",
        "-W",
        "10",
    ]));
    assert!(out.status.success());
    let ts: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp_ms"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ts,
        vec![1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002]
    );
}

#[test]
fn exit_codes_for_scripts() {
    let closed = free_port().to_string();
    let code = |o: Output| o.status.code().unwrap();
    assert_eq!(
        code(run(edgemq_pub().args(["-p", &closed, "-t", "a", "-m", "x"]))),
        3,
        "unreachable"
    );
    assert_eq!(
        code(run(edgemq_sub().args(["-p", &closed, "-t", "a"]))),
        3,
        "unreachable"
    );
    assert_eq!(
        code(run(edgemq_pub().args(["-t", "a"]))),
        2,
        "no message source"
    );
    assert_eq!(
        code(run(edgemq_pub().args(["-t", "a/#", "-m", "x"]))),
        2,
        "wildcard topic"
    );
    assert_eq!(
        code(run(edgemq_sub().args(["-t", "a/#/b"]))),
        2,
        "bad filter"
    );
    assert_eq!(
        code(run(
            edgemq_pub().args(["-t", "a", "-m", "x", "-V", "mqttv31"])
        )),
        2,
        "bad version"
    );

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&pw)
        .args(["alice", "secret"])
        .status();
    assert!(st.unwrap().success());
    let extra = format!("allow_anonymous false\npassword_file {}\n", pw.display());
    let broker = Mosquitto::start_with(free_port(), &extra, dir);
    let p = broker.port.to_string();
    for v in ["mqttv311", "mqttv5"] {
        let bad = run(edgemq_pub().args([
            "-p", &p, "-t", "a", "-m", "x", "-u", "alice", "-P", "wrong", "-V", v,
        ]));
        assert_eq!(code(bad), 4, "refused credentials {v}");
        let good = run(edgemq_pub().args([
            "-p", &p, "-t", "a", "-m", "x", "-u", "alice", "-P", "secret", "-V", v,
        ]));
        assert_eq!(code(good), 0, "good credentials {v}");
    }
    let timeout = run(edgemq_sub().args([
        "-p", &p, "-t", "none", "-u", "alice", "-P", "secret", "-W", "1",
    ]));
    assert_eq!(code(timeout), 27, "-W timeout");
}

/// `-c` keeps the session: a QoS 1 message published while the subscriber
/// is away is delivered when it comes back.
#[test]
fn persistent_session_receives_what_was_sent_while_away() {
    for broker in both_brokers() {
        let p = broker.port().to_string();
        for v in ["mqttv311", "mqttv5"] {
            let id = format!("persistent-{v}");
            let sub = || {
                let mut c = edgemq_sub();
                c.args([
                    "-p", &p, "-c", "-i", &id, "-q", "1", "-t", "away/x", "-V", v,
                ]);
                c
            };
            // Creates the session; nothing to receive yet.
            assert_eq!(run(sub().args(["-W", "1"])).status.code(), Some(27));
            let st = Command::new("mosquitto_pub")
                .args(["-p", &p, "-t", "away/x", "-m", "kept", "-q", "1"])
                .status();
            assert!(st.unwrap().success());
            let out = run(sub().args(["-C", "1", "-W", "10"]));
            assert!(out.status.success(), "{v}");
            assert_eq!(lines(&out), set(&["kept"]), "{v}");
        }
    }
}

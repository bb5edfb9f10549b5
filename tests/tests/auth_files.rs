//! Password and ACL files (part of issue 7): entries written by the real
//! `mosquitto_passwd` and by `edgemq passwd`, wrong passwords refused, and
//! ACL grants and denials for publish and subscribe, with Mosquitto's clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgemq_tests::{edgemq_command, mosquitto_pub, require_tool, run, Broker, Sub};

fn setup() -> (tempfile::TempDir, String) {
    require_tool("mosquitto_passwd");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let out = run(
        Command::new("mosquitto_passwd").args([
            "-c",
            "-b",
            pw.to_str().unwrap(),
            "alice",
            "secret",
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(out.status.success());
    let mut child = edgemq_command()
        .args(["passwd", pw.to_str().unwrap(), "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "edgemq passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic read public/#\nuser alice\ntopic readwrite alice/#\nuser bob\ntopic read alice/#\npattern write devices/%c/up\n",
    )
    .unwrap();
    let config = format!(
        "[auth]\npassword_file = {:?}\nacl_file = {:?}\n",
        pw.to_str().unwrap(),
        acl.to_str().unwrap()
    );
    (dir, config)
}

#[test]
fn passwords_from_mosquitto_passwd_and_edgemq_passwd() {
    let (_dir, config) = setup();
    let broker = Broker::start_with(Some(&config));
    for (user, pass, ok) in [
        ("alice", "secret", true),
        ("bob", "hunter2", true),
        ("alice", "wrong", false),
        ("eve", "x", false),
    ] {
        for v in ["mqttv311", "mqttv5"] {
            let out = mosquitto_pub(
                broker.port,
                &[
                    "-V",
                    v,
                    "-u",
                    user,
                    "-P",
                    pass,
                    "-t",
                    "devices/x/up",
                    "-m",
                    "1",
                ],
            );
            assert_eq!(
                out.status.success(),
                ok,
                "{user}/{pass} {v}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        !broker.log().contains("secret") && !broker.log().contains("hunter2"),
        "a password reached the log"
    );
}

#[test]
fn acl_grants_and_denies_publish_and_subscribe() {
    let (_dir, config) = setup();
    let broker = Broker::start_with(Some(&config));
    // bob may read alice/#: his subscription is granted.
    let mut bob = Sub::spawn(
        broker.port,
        &[
            "-V", "mqttv5", "-u", "bob", "-P", "hunter2", "-i", "bob-sub", "-t", "alice/#",
        ],
    );
    bob.wait_subscribed();
    // bob may not write to alice/#; alice may.
    mosquitto_pub(
        broker.port,
        &[
            "-V", "mqttv5", "-u", "bob", "-P", "hunter2", "-q", "1", "-t", "alice/x", "-m",
            "from-bob",
        ],
    );
    mosquitto_pub(
        broker.port,
        &[
            "-V",
            "mqttv5",
            "-u",
            "alice",
            "-P",
            "secret",
            "-q",
            "1",
            "-t",
            "alice/x",
            "-m",
            "from-alice",
        ],
    );
    assert_eq!(
        bob.messages(1, Duration::from_secs(10)),
        ["alice/x from-alice"]
    );
    // alice has no read grant on bob/#: a v5 SUBACK failure (0x87 = 135),
    // which mosquitto_sub reports.
    let mut denied = Sub::spawn(
        broker.port,
        &["-V", "mqttv5", "-u", "alice", "-P", "secret", "-t", "bob/#"],
    );
    let lines = denied.raw_lines(Duration::from_secs(3));
    assert!(
        lines.iter().any(|l| l.contains("SUBACK"))
            && lines
                .iter()
                .any(|l| l.contains("135") || l.contains("denied")),
        "expected a refused subscription: {lines:?}"
    );
}

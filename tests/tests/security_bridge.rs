//! Security hardening (issue 17, M7): bridge downlinks go through the local
//! publish policy. A real Mosquitto plays the cloud; a broad downlink rule
//! (`gw-0001/#` with the prefix stripped) must not let the cloud write the
//! broker's `$SYS` topics or topics the `[acl]` deny list forbids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgemq_tests::{mosquitto_pub, Broker, Mosquitto, Sub};

#[test]
fn downlinks_cannot_write_sys_or_denied_topics() {
    let cloud = Mosquitto::start("");
    let config = format!(
        r#"
[acl]
deny_publish = ["cmd/forbidden/#"]

[[bridge]]
name = "cloud"
address = "127.0.0.1:{}"
client_id = "gw-0001"
reconnect_min_ms = 50
reconnect_max_ms = 500

[[bridge.downlink]]
filter = "gw-0001/#"
strip_prefix = "gw-0001/"
qos = 1
"#,
        cloud.port
    );
    let edge = Broker::start_with(Some(&config));
    let mut local = Sub::spawn(edge.port, &["-q", "1", "-t", "cmd/#", "-t", "$SYS/spoof"]);
    local.wait_subscribed();
    let mut got = Vec::new();
    // The bridge subscribes on connect; send until the allowed command lands.
    for _ in 0..50 {
        for (topic, payload) in [
            ("gw-0001/$SYS/spoof", "forged"),
            ("gw-0001/cmd/forbidden/open", "forged"),
            ("gw-0001/cmd/ok", "allowed"),
        ] {
            let out = mosquitto_pub(cloud.port, &["-q", "1", "-r", "-t", topic, "-m", payload]);
            assert!(out.status.success());
        }
        got.extend(local.messages(1, Duration::from_millis(200)));
        if got.iter().any(|m| m == "cmd/ok allowed") {
            break;
        }
    }
    got.extend(local.messages(10, Duration::from_millis(500)));
    assert!(
        got.iter().any(|m| m == "cmd/ok allowed"),
        "log:\n{}",
        edge.log()
    );
    assert!(
        got.iter().all(|m| !m.contains("forged")),
        "a downlink wrote a forbidden topic: {got:?}"
    );
    // Nothing forged was retained either.
    let mut late = Sub::spawn(edge.port, &["-t", "$SYS/spoof", "-t", "cmd/forbidden/#"]);
    late.wait_subscribed();
    let retained = late.messages(1, Duration::from_millis(700));
    assert!(retained.is_empty(), "retained: {retained:?}");
}

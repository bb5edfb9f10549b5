//! The HTTP endpoint on hyper (issue 16): the JSON API lists what real
//! clients do, `[http]` basic auth with a real password file, `[metrics]`
//! still accepted, and a bad `[http]` rejected by `check-config`.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use edgemq_tests::{edgemq_command, free_port, mosquitto_pub, require_tool, run, Broker, Sub};

/// `curl -s -w '\n%{http_code}'`: (status, body).
fn curl(port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    require_tool("curl");
    let out = run(
        Command::new("curl")
            .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}{path}")),
        Duration::from_secs(15),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = curl(port, path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn api_lists_clients_sessions_subscriptions_and_retained() {
    let http = free_port();
    let broker = Broker::start_with(Some(&format!("[http]\nlisten = \"127.0.0.1:{http}\"\n")));
    let mut sub = Sub::spawn(
        broker.port,
        &["-i", "api-watcher", "-q", "1", "-t", "plant/+/temp"],
    );
    sub.wait_subscribed();
    // An offline persistent session with two queued messages.
    let mut offline = Sub::spawn(
        broker.port,
        &["-c", "-i", "api-offline", "-q", "1", "-t", "q/#"],
    );
    offline.wait_subscribed();
    offline.interrupt();
    for i in 0..2 {
        assert!(mosquitto_pub(
            broker.port,
            &["-q", "1", "-t", &format!("q/{i}"), "-m", "y"]
        )
        .status
        .success());
    }
    assert!(
        mosquitto_pub(broker.port, &["-r", "-t", "plant/1/temp", "-m", "21.5"])
            .status
            .success()
    );

    let clients = json(http, "/api/v1/clients");
    let items = clients["items"].as_array().unwrap();
    let watcher = items
        .iter()
        .find(|c| c["client_id"] == "api-watcher")
        .unwrap_or_else(|| panic!("api-watcher missing: {clients}"));
    assert_eq!(watcher["protocol"], "3.1.1", "{clients}");
    assert!(
        watcher["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{clients}"
    );
    assert!(
        watcher["connected_since"].as_u64().unwrap() > 1_600_000_000,
        "{clients}"
    );
    assert!(
        !items.iter().any(|c| c["client_id"] == "api-offline"),
        "{clients}"
    );

    let sessions = json(http, "/api/v1/sessions");
    let offline = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client_id"] == "api-offline")
        .unwrap_or_else(|| panic!("api-offline missing: {sessions}"));
    assert_eq!(offline["queued"], 2, "{sessions}");

    let subs = json(http, "/api/v1/subscriptions");
    assert!(
        subs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["client_id"] == "api-watcher"
                && s["filter"] == "plant/+/temp"
                && s["qos"] == 1),
        "{subs}"
    );
    let retained = json(http, "/api/v1/retained");
    assert!(
        retained["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["topic"] == "plant/1/temp" && r["bytes"] == 4),
        "{retained}"
    );
    // Paging: one item per page, the total unchanged.
    let page = json(http, "/api/v1/subscriptions?offset=0&limit=1");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["limit"], 1, "{page}");
    assert_eq!(page["total"], subs["total"], "{page}");

    let store = json(http, "/api/v1/store");
    assert_eq!(store["state"], "ok", "{store}");
    assert!(store["capacity_bytes"].as_u64().unwrap() > 0, "{store}");
    // Retained and queued messages went to flash: a positive wear rate.
    assert!(
        store["figures"]["bytes_written"].as_u64().unwrap() > 0,
        "{store}"
    );
    assert!(
        store["bytes_written_per_day"].as_u64().unwrap() > 0,
        "{store}"
    );
    let bridges = json(http, "/api/v1/bridges");
    assert_eq!(bridges["total"], 0, "{bridges}");
    assert_eq!(curl(http, "/api/v1/nothing", &[]).0, 404);
    assert_eq!(curl(http, "/api/v1/clients", &["-X", "POST"]).0, 405);
    let (status, page) = curl(http, "/", &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("<title>edgemq status</title>")
            && !page.contains("http://")
            && !page.contains("https://")
    );
    sub.kill();
}

/// Every metric the Grafana dashboard in deploy/ names exists in /metrics
/// (bridge metrics are matched by regex there and skipped here).
#[test]
fn the_grafana_dashboard_uses_existing_metrics() {
    let http = free_port();
    let _broker = Broker::start_with(Some(&format!("[http]\nlisten = \"127.0.0.1:{http}\"\n")));
    let (status, body) = curl(http, "/metrics", &[]);
    assert_eq!(status, 200);
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut names = Vec::new();
    for panel in parsed["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("edgemq_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                if !name.starts_with("edgemq_bridge_") {
                    names.push(name);
                }
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "{name} from the dashboard is not in /metrics:\n{body}"
        );
    }
}

#[test]
fn password_file_guards_everything_but_healthz() {
    require_tool("mosquitto_passwd");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("http.passwd");
    let out = run(
        Command::new("mosquitto_passwd").args(["-c", "-b", pw.to_str().unwrap(), "tech", "s3cret"]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(out.status.success());
    let http = free_port();
    let _broker = Broker::start_with(Some(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\npassword_file = \"{}\"\n",
        pw.display()
    )));
    assert_eq!(curl(http, "/healthz", &[]).0, 200);
    assert_eq!(curl(http, "/api/v1/clients", &[]).0, 401);
    assert_eq!(curl(http, "/metrics", &["-u", "tech:wrong"]).0, 401);
    assert_eq!(curl(http, "/", &["-u", "nobody:s3cret"]).0, 401);
    let (status, body) = curl(http, "/metrics", &["-u", "tech:s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(curl(http, "/api/v1/clients", &["-u", "tech:s3cret"]).0, 200);
}

#[test]
fn metrics_section_is_an_alias_and_both_is_an_error() {
    let http = free_port();
    let _broker = Broker::start_with(Some(&format!("[metrics]\nlisten = \"127.0.0.1:{http}\"\n")));
    let (status, body) = curl(http, "/api/v1/clients", &[]);
    assert_eq!(status, 200, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("both.toml");
    std::fs::write(
        &file,
        "[metrics]\nlisten = \"127.0.0.1:9883\"\n\n[http]\nlisten = \"127.0.0.1:9884\"\n",
    )
    .unwrap();
    let out = run(
        edgemq_command().arg("check-config").arg(&file),
        Duration::from_secs(10),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("both.toml:5") && err.contains("http.listen"),
        "{err}"
    );
}

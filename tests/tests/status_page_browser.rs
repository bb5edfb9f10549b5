//! The status page (issue 16) in a real browser: headless Chromium loads
//! `/` from a running edgemq that has a connected mosquitto_sub and a bridge
//! to a real Mosquitto, runs the page's JavaScript, and the rendered DOM
//! must show the same clients, bridge and store figures as the JSON API.
//! A screenshot is saved to `<target>/status-page.png`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edgemq_tests::{
    free_port, mosquitto_pub, require_tool, run, wait_until, Broker, Mosquitto, Sub,
};

fn api(port: u16, path: &str) -> serde_json::Value {
    let out = run(
        Command::new("curl")
            .args(["-s", "-m", "10"])
            .arg(format!("http://127.0.0.1:{port}/api/v1/{path}")),
        Duration::from_secs(15),
    )
    .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn chromium(args: &[&str], url: &str) -> String {
    let out = run(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--virtual-time-budget=5000", "--window-size=1280,900"])
            .args(args)
            .arg(url),
        Duration::from_secs(90),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The text cells of each row of `<tbody id="{id}">`.
fn rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("<tbody id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no tbody {id} in:\n{dom}"));
    let body = &dom[start..];
    let body = &body[..body.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').unwrap() + 1..];
                    text[..text.find("</td>").unwrap()].to_string()
                })
                .collect()
        })
        .collect()
}

/// The text of the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &dom[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    rest[..rest.find('<').unwrap()].to_string()
}

#[test]
fn the_status_page_shows_what_the_api_says() {
    require_tool("chromium");
    require_tool("curl");
    let cloud = Mosquitto::start("");
    let http = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [[bridge]]\nname = \"cloud\"\naddress = \"127.0.0.1:{}\"\nclient_id = \"gw-page\"\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 500\n\
         [[bridge.forward]]\nfilter = \"sensors/#\"\nremote_prefix = \"gw-page/\"\nqos = 1\n",
        cloud.port
    )));
    let mut sub = Sub::spawn(broker.port, &["-i", "page-watcher", "-t", "sensors/#"]);
    sub.wait_subscribed();
    for i in 0..5 {
        assert!(mosquitto_pub(
            broker.port,
            &["-q", "1", "-t", &format!("sensors/{i}"), "-m", "20"]
        )
        .status
        .success());
    }
    assert!(
        wait_until(Duration::from_secs(15), || api(http, "bridges")["items"][0]
            ["link"]
            == "up"),
        "bridge did not come up: {}",
        api(http, "bridges")
    );

    let url = format!("http://127.0.0.1:{http}/");
    let dom = chromium(&["--dump-dom"], &url);
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page did not load its data:\n{dom}"
    );
    assert_eq!(text_of(&dom, "err"), "", "the page reported an error");

    // Clients: the same ids, addresses and protocol versions as the API.
    let clients = api(http, "clients");
    let mut from_api: Vec<Vec<String>> = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            vec![
                c["client_id"].as_str().unwrap().to_string(),
                c["address"].as_str().unwrap().to_string(),
                c["protocol"].as_str().unwrap().to_string(),
                c["queued"].to_string(),
                c["inflight"].to_string(),
            ]
        })
        .collect();
    let mut on_page: Vec<Vec<String>> = rows(&dom, "clients")
        .into_iter()
        .map(|r| r.into_iter().take(5).collect())
        .collect();
    from_api.sort();
    on_page.sort();
    assert!(
        on_page.iter().any(|r| r[0] == "page-watcher"),
        "{on_page:?}"
    );
    assert_eq!(on_page, from_api);
    assert_eq!(text_of(&dom, "clients-count"), clients["total"].to_string());

    // Bridges: name, cloud address and link state.
    let bridges = api(http, "bridges");
    let page_bridges = rows(&dom, "bridges");
    assert_eq!(page_bridges.len(), 1, "{page_bridges:?}");
    let b = &bridges["items"][0];
    assert_eq!(page_bridges[0][0], b["name"].as_str().unwrap());
    assert_eq!(page_bridges[0][1], b["address"].as_str().unwrap());
    assert_eq!(page_bridges[0][2], "up");
    assert_eq!(page_bridges[0][3], b["backlog"].to_string());
    let oldest = match b["oldest_message_age_secs"].as_u64() {
        Some(age) => format!("{age} s"),
        None => "-".to_string(),
    };
    assert_eq!(page_bridges[0][5], oldest);

    // Store: state and capacity (fixed), erase counts.
    let store = api(http, "store");
    assert_eq!(
        text_of(&dom, "store-state"),
        store["state"].as_str().unwrap()
    );
    assert_eq!(
        text_of(&dom, "store-capacity"),
        store["capacity_bytes"].to_string()
    );
    assert_eq!(
        text_of(&dom, "store-erase-max"),
        store["figures"]["erase_count/max"].to_string()
    );
    assert!(
        !dom.contains("<li class=\"warn\">"),
        "unexpected warnings:\n{dom}"
    );

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let shot = target.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot too small: {}",
        png.len()
    );
    sub.kill();
}

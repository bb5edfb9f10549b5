//! The status page at `/`: one self-contained HTML file (inline CSS and
//! JavaScript, no CDN, no external request) embedded in the binary. It
//! polls `/api/v1/{overview,clients,bridges,store}` every two seconds and
//! draws the message rates of the last five minutes on a canvas.
//!
//! Invariants: the page reads only the API (so it shows the same figures);
//! it sets text with `textContent`, never HTML, so client ids cannot inject
//! markup; `data-loaded` on `<body>` marks a successful refresh.

use serde_json::{Map, Value};

/// The page, as served.
pub const PAGE: &str = include_str!("page.html");

/// Conditions an operator should look at now, from the `$SYS` values
/// (keys without the `$SYS/broker/` prefix).
pub fn recent_warnings(sys: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    match sys.get("store/state").and_then(Value::as_str) {
        Some("full") => {
            out.push("store full: new messages are refused until stored ones are delivered".into())
        }
        Some("failed") => out.push(format!(
            "store failed: {}",
            sys.get("store/failure")
                .and_then(Value::as_str)
                .unwrap_or("see the log")
        )),
        _ => {}
    }
    for (key, value) in sys {
        let Some(rest) = key.strip_prefix("bridge/") else {
            continue;
        };
        let Some((name, figure)) = rest.split_once('/') else {
            continue;
        };
        let n = value.as_f64().unwrap_or(0.0);
        match figure {
            "state" if n == 0.0 => out.push(format!("bridge {name}: link down")),
            "messages/rejected" if n > 0.0 => {
                out.push(format!("bridge {name}: the cloud rejected {n} messages"))
            }
            "messages/expired" if n > 0.0 => {
                out.push(format!("bridge {name}: {n} messages expired before upload"))
            }
            _ => {}
        }
    }
    if let Some(n) = sys.get("publish/messages/dropped").and_then(Value::as_f64) {
        if n > 0.0 {
            out.push(format!("{n} messages dropped (queues full)"));
        }
    }
    out
}

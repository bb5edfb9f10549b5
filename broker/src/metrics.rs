//! Prometheus metrics over HTTP, and `/healthz`.
//!
//! The same figures as `$SYS` (core counters, store, bridges), renamed to
//! Prometheus conventions: `$SYS/broker/messages/received` becomes
//! `edgemq_messages_received`. The HTTP side is deliberately tiny: one
//! request per connection, bounded request size, GET only; a scraper is the
//! only client. `/healthz` answers 200 once the server runs, which is after
//! the store was recovered and the listeners were bound, and 503 with the
//! reason while the store is full or has failed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;
use crate::sys::{all_values, ExtraTopics};

pub use crate::config::metrics::MetricsConfig;

/// Extra exposition text appended to `/metrics` (histograms, which the
/// flat `$SYS` values cannot express).
pub type Exposition = Arc<dyn Fn() -> String + Send + Sync>;

/// Largest request head we read.
const MAX_REQUEST: usize = 8192;
/// Requests served at once; further connections are closed (they would
/// share the file descriptors of the MQTT listeners).
const MAX_CONCURRENT: usize = 4;

/// Serves `/metrics` and `/healthz` until the broker shuts down.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    extra: ExtraTopics,
    exposition: Exposition,
) {
    let mut shutdown = broker.shutdown_signal();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let (broker, extra, exposition) =
                    (broker.clone(), extra.clone(), exposition.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        handle(stream, &broker, &extra, &exposition),
                    )
                    .await;
                    drop(permit);
                });
            }
            Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    broker: &Broker,
    extra: &ExtraTopics,
    exposition: &Exposition,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    // Only the new bytes (and the 3 before them) are scanned for the end
    // of the head: linear, not quadratic, in a slowly sent request.
    let mut scanned = 0;
    while !buf[scanned..].windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        scanned = buf.len().saturating_sub(3);
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match (head.starts_with("GET "), path) {
        (true, "/metrics") => ("200 OK", render(broker, extra) + &exposition()),
        (true, "/healthz") => health(extra),
        (true, _) => ("404 Not Found", "not found\n".to_string()),
        (false, _) => ("405 Method Not Allowed", "GET only\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// `/healthz`: 200 while the store (if any) is ok; 503 with the reason
/// while it is full or has failed.
fn health(extra: &ExtraTopics) -> (&'static str, String) {
    use crate::storage::{FAILURE_TOPIC, STATE_TOPIC};
    let topics = extra();
    let value = |name: &str| {
        topics
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.clone())
    };
    match value(STATE_TOPIC).as_deref() {
        Some("failed") => (
            "503 Service Unavailable",
            format!(
                "store failed: {}\n",
                value(FAILURE_TOPIC).unwrap_or_default()
            ),
        ),
        Some("full") => (
            "503 Service Unavailable",
            "store full: new messages are refused until stored ones are delivered\n".to_string(),
        ),
        _ => ("200 OK", "ok\n".to_string()),
    }
}

/// The Prometheus text exposition of every numeric `$SYS` value.
pub fn render(broker: &Broker, extra: &ExtraTopics) -> String {
    let mut out = String::new();
    for (topic, value) in all_values(broker, extra) {
        if value.parse::<f64>().is_err() {
            continue;
        }
        let name = metric_name(&topic);
        out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
    }
    out
}

/// `$SYS/broker/retained messages/count` -> `edgemq_retained_messages_count`.
pub fn metric_name(topic: &str) -> String {
    let rest = topic.strip_prefix("$SYS/broker/").unwrap_or(topic);
    let mut name = String::from("edgemq_");
    for c in rest.chars() {
        name.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    name
}

#[cfg(test)]
mod tests {
    use super::{health, metric_name};
    use crate::storage::StoreStats;
    use std::sync::Arc;

    fn health_of(stats: StoreStats) -> (&'static str, String) {
        let extra: crate::sys::ExtraTopics = Arc::new(move || stats.sys_topics());
        health(&extra)
    }

    #[test]
    fn healthz_reports_a_full_or_failed_store() {
        assert_eq!(health_of(StoreStats::default()).0, "200 OK");
        let (status, body) = health_of(StoreStats {
            full: true,
            ..StoreStats::default()
        });
        assert!(
            status.starts_with("503") && body.contains("store full"),
            "{body}"
        );
        let (status, body) = health_of(StoreStats {
            failure: Some("flash error: fdatasync: EIO".into()),
            ..StoreStats::default()
        });
        assert!(status.starts_with("503"), "{status}");
        assert!(
            body.contains("store failed") && body.contains("EIO"),
            "{body}"
        );
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert_eq!(
            metric_name("$SYS/broker/retained messages/count"),
            "edgemq_retained_messages_count"
        );
        assert_eq!(
            metric_name("$SYS/broker/bridge/cloud/lanes/depth"),
            "edgemq_bridge_cloud_lanes_depth"
        );
        assert_eq!(
            metric_name("$SYS/broker/store/erase_count/max"),
            "edgemq_store_erase_count_max"
        );
    }
}

//! Prometheus metrics (OpenMetrics, via `prometheus-client`) and `/healthz`.
//!
//! The same figures as `$SYS` (core counters, store, bridges), renamed to
//! Prometheus conventions: `$SYS/broker/messages/received` becomes
//! `edgemq_messages_received`. Every numeric `$SYS` value is a gauge (its
//! name does not change with the exposition format); the store's sync
//! latency is a histogram. The HTTP side lives in the `http` module.
//! `/healthz` answers 200 once the server runs, which is after the store
//! was recovered and the listeners were bound, and 503 with the reason
//! while the store is full or has failed.
//!
//! Invariants: rendering never panics (encoding errors give an empty body
//! plus `# EOF`), and it takes the same locks `$SYS` takes, briefly.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::storage::latency::LatencyHistogram;
use crate::sys::{all_values, ExtraTopics};

pub use crate::config::metrics::MetricsConfig;

/// The store's sync latency histogram, if there is a store.
pub type SyncHistogram = Arc<dyn Fn() -> Option<LatencyHistogram> + Send + Sync>;

/// The OpenMetrics content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Collects the `$SYS` values and the histogram at scrape time.
struct SysCollector {
    broker: Arc<Broker>,
    extra: ExtraTopics,
    histogram: SyncHistogram,
}

impl fmt::Debug for SysCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SysCollector")
    }
}

/// A `$SYS` value, integer when it is one.
enum Value {
    Int(i64),
    Float(f64),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        match self {
            Value::Int(v) => encoder.encode_gauge(v),
            Value::Float(v) => encoder.encode_gauge(v),
        }
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[derive(Debug)]
struct Histogram(LatencyHistogram);

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_seconds(),
            self.0.count(),
            &self.0.buckets_seconds(),
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for SysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for (topic, value) in all_values(&self.broker, &self.extra) {
            let value = match (value.parse::<i64>(), value.parse::<f64>()) {
                (Ok(v), _) => Value::Int(v),
                (_, Ok(v)) if v.is_finite() => Value::Float(v),
                _ => continue,
            };
            let name = metric_name(&topic);
            let help = format!("$SYS value {topic}");
            let metric = encoder.encode_descriptor(&name, &help, None, MetricType::Gauge)?;
            value.encode(metric)?;
        }
        if let Some(h) = (self.histogram)() {
            let metric = encoder.encode_descriptor(
                "edgemq_store_sync_seconds",
                "Time the store's syncs (fdatasync) took; PUBACKs in sync mode wait for them.",
                None,
                MetricType::Histogram,
            )?;
            Histogram(h).encode(metric)?;
        }
        Ok(())
    }
}

/// The OpenMetrics exposition of every numeric `$SYS` value and the
/// store's sync latency histogram.
pub fn render(broker: &Arc<Broker>, extra: &ExtraTopics, histogram: &SyncHistogram) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SysCollector {
        broker: broker.clone(),
        extra: extra.clone(),
        histogram: histogram.clone(),
    }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// `/healthz`: 200 while the store (if any) is ok; 503 with the reason
/// while it is full or has failed.
pub fn health(extra: &ExtraTopics) -> (&'static str, String) {
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

//! The `$SYS` publisher (observability layer, above the broker).
//!
//! It reads the counters of [`crate::counters`] (re-exported here for
//! existing callers) and publishes them periodically. Topic layout follows Mosquitto
//! (`$SYS/broker/...`), so existing dashboards work; edgemq's own drop
//! counters live under `$SYS/broker/edgemq/dropped/...`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::Broker;
use crate::counters::get;
pub use crate::counters::{add, inc, Metrics};
use crate::message::Message;
use crate::protocol::{PublishProperties, QoS};

/// `$SYS` topics of the per-QoS PUBLISH counters, indexed like them.
const PUBLISH_RECEIVED_BY_QOS: [&str; 3] = [
    "$SYS/broker/edgemq/publish/received/qos0",
    "$SYS/broker/edgemq/publish/received/qos1",
    "$SYS/broker/edgemq/publish/received/qos2",
];
const PUBLISH_SENT_BY_QOS: [&str; 3] = [
    "$SYS/broker/edgemq/publish/sent/qos0",
    "$SYS/broker/edgemq/publish/sent/qos1",
    "$SYS/broker/edgemq/publish/sent/qos2",
];

/// The `$SYS` topics and their current values.
pub fn sys_values(broker: &Broker) -> Vec<(&'static str, String)> {
    let m = &broker.metrics;
    let mut values = client_values(broker);
    values.extend(traffic_values(broker));
    values.extend(drop_values(m));
    for (topics, counters) in [
        (PUBLISH_RECEIVED_BY_QOS, &m.publish_received),
        (PUBLISH_SENT_BY_QOS, &m.publish_sent),
    ] {
        values.extend(
            topics
                .into_iter()
                .zip(counters.iter().map(|c| get(c).to_string())),
        );
    }
    values
}

/// The broker's identity and its clients.
fn client_values(broker: &Broker) -> Vec<(&'static str, String)> {
    let m = &broker.metrics;
    let sessions = broker.session_count();
    vec![
        (
            "$SYS/broker/version",
            format!("edgemq {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.uptime().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            get(&m.clients_connected).to_string(),
        ),
        ("$SYS/broker/clients/total", sessions.to_string()),
        (
            "$SYS/broker/clients/maximum",
            get(&m.clients_maximum).to_string(),
        ),
        (
            "$SYS/broker/clients/disconnected",
            sessions
                .saturating_sub(get(&m.clients_connected) as usize)
                .to_string(),
        ),
    ]
}

/// Messages, bytes, queues, subscriptions and retained messages.
fn traffic_values(broker: &Broker) -> Vec<(&'static str, String)> {
    let m = &broker.metrics;
    let (retained, _) = broker.router.retained_stats();
    vec![
        (
            "$SYS/broker/messages/received",
            get(&m.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            get(&m.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            m.publish_received.iter().map(get).sum::<u64>().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            m.publish_sent.iter().map(get).sum::<u64>().to_string(),
        ),
        (
            "$SYS/broker/edgemq/queued/messages",
            broker.queued_messages().to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            m.dropped_total().to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            get(&m.bytes_received).to_string(),
        ),
        ("$SYS/broker/bytes/sent", get(&m.bytes_sent).to_string()),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.subscription_count().to_string(),
        ),
        ("$SYS/broker/retained messages/count", retained.to_string()),
    ]
}

/// edgemq's drop and forced-disconnect counters.
fn drop_values(m: &Metrics) -> Vec<(&'static str, String)> {
    vec![
        (
            "$SYS/broker/edgemq/dropped/qos0_queue_full",
            get(&m.dropped_qos0_queue_full).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/queue_full",
            get(&m.dropped_queue_full).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/session_queue_full",
            get(&m.dropped_session_queue_full).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/offline_qos0",
            get(&m.dropped_offline_qos0).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/too_large",
            get(&m.dropped_too_large).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/expired",
            get(&m.dropped_expired).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/denied",
            get(&m.dropped_denied).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/retained_full",
            get(&m.dropped_retained_full).to_string(),
        ),
        (
            "$SYS/broker/edgemq/disconnects/write_timeout",
            get(&m.disconnects_write_timeout).to_string(),
        ),
        (
            "$SYS/broker/edgemq/dropped/slow_consumer",
            get(&m.dropped_slow_consumer).to_string(),
        ),
        (
            "$SYS/broker/edgemq/disconnects/slow_consumer",
            get(&m.disconnects_slow_consumer).to_string(),
        ),
    ]
}

/// `$SYS` topics contributed by other parts (the store, the bridges).
pub type ExtraTopics = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Every `$SYS` topic and value now: the core's plus the extras.
pub fn all_values(broker: &Broker, extra: &ExtraTopics) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = sys_values(broker)
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect();
    values.extend(extra());
    values
}

/// Publishes the `$SYS` topics as retained messages every `interval`.
pub async fn run(broker: Arc<Broker>, interval: Duration, extra: ExtraTopics) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        for (topic, value) in all_values(&broker, &extra) {
            let message = Message::new(
                topic.to_string(),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
                PublishProperties::default(),
                None,
            );
            // $SYS messages are regenerated each interval: no need to wait
            // for durability.
            drop(broker.publish(Arc::new(message)));
        }
    }
}

//! The read-only JSON API under `/api/v1/`.
//!
//! Resources: `clients`, `sessions`, `subscriptions`, `retained` (lists,
//! paged with `?offset=N&limit=M`), `bridges`, `store` and `overview`
//! (objects). A list answers `{"total", "offset", "limit", "items"}`;
//! `limit` defaults to and is capped at `[http] max_page_size`, and
//! `total` of subscriptions and retained topics is capped at
//! `offset + limit` (the walk stops there) with `"more": true` when the cap
//! was hit.
//!
//! Invariants: every answer is built from a snapshot (copies taken under
//! the broker's locks), never holds a lock while encoding, and is bounded
//! by the page size; a malformed query is treated as absent, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::HttpState;
use crate::protocol::ProtocolVersion;

/// The bridges' `$SYS` values (`$SYS/broker/bridge/<name>/...`).
pub type BridgeSource = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;
/// The store's `$SYS` values (`$SYS/broker/store/...`); empty without a store.
pub type StoreSource = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Paging parameters from a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Parses `offset` and `limit`; missing or malformed values give 0 and
    /// `max`; `limit` is capped at `max`.
    pub fn parse(query: Option<&str>, max: usize) -> Page {
        let mut page = Page {
            offset: 0,
            limit: max,
        };
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Ok(n) = value.parse::<usize>() else {
                continue;
            };
            match key {
                "offset" => page.offset = n,
                "limit" => page.limit = n.min(max),
                _ => {}
            }
        }
        page
    }

    /// How many items a bounded walk must collect to fill this page and
    /// tell whether there are more.
    fn walk_bound(&self) -> usize {
        self.offset.saturating_add(self.limit).saturating_add(1)
    }

    fn answer(&self, items: Vec<Value>, total: usize, more: bool) -> Value {
        let items: Vec<Value> = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        json!({
            "total": total,
            "offset": self.offset,
            "limit": self.limit,
            "more": more,
            "items": items,
        })
    }
}

/// The JSON for `resource` (the path after `/api/v1/`), or `None` if there
/// is no such resource.
pub fn answer(state: &HttpState, resource: &str, query: Option<&str>) -> Option<String> {
    let page = Page::parse(query, state.max_page_size);
    let value = match resource.trim_end_matches('/') {
        "clients" => clients(state, page),
        "sessions" => sessions(state, page),
        "subscriptions" => subscriptions(state, page),
        "retained" => retained(state, page),
        "bridges" => bridges(state),
        "store" => store(state),
        "overview" => overview(state),
        _ => return None,
    };
    Some(value.to_string())
}

fn protocol_name(p: ProtocolVersion) -> &'static str {
    match p {
        ProtocolVersion::V31 => "3.1",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn clients(state: &HttpState, page: Page) -> Value {
    let counts: BTreeMap<String, (usize, usize)> = state
        .broker
        .session_snapshot()
        .into_iter()
        .map(|s| (s.client_id, (s.queued, s.inflight)))
        .collect();
    let peers = state.broker.peers.snapshot();
    let total = peers.len();
    let items = peers
        .into_iter()
        .map(|p| {
            json!({
                "client_id": p.client_id,
                "address": p.address.to_string(),
                "protocol": protocol_name(p.protocol),
                "connected_since": p.connected_since,
                "queued": counts.get(&p.client_id).map_or(0, |c| c.0),
                "inflight": counts.get(&p.client_id).map_or(0, |c| c.1),
            })
        })
        .collect();
    page.answer(items, total, false)
}

fn sessions(state: &HttpState, page: Page) -> Value {
    // Offline persistent sessions; bridge lanes are internal.
    let offline: Vec<_> = state
        .broker
        .session_snapshot()
        .into_iter()
        .filter(|s| !s.online && !s.client_id.starts_with(crate::bridge::CLIENT_ID_PREFIX))
        .collect();
    let total = offline.len();
    let items = offline
        .into_iter()
        .map(|s| json!({ "client_id": s.client_id, "queued": s.queued }))
        .collect();
    page.answer(items, total, false)
}

fn subscriptions(state: &HttpState, page: Page) -> Value {
    let bound = page.walk_bound();
    let mut list = state.broker.router.list_subscriptions(bound);
    list.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
    let more = list.len() >= bound;
    let total = state.broker.router.subscription_count();
    let items = list
        .into_iter()
        .map(|s| {
            json!({
                "client_id": s.client_id,
                "filter": s.filter,
                "group": s.group,
                "qos": s.qos,
            })
        })
        .collect();
    page.answer(items, total, more)
}

fn retained(state: &HttpState, page: Page) -> Value {
    let (count, bytes) = state.broker.router.retained_stats();
    let mut messages = state.broker.router.retained_matching("#");
    messages.extend(state.broker.router.retained_matching("$SYS/#"));
    messages.sort_by(|a, b| a.topic.cmp(&b.topic));
    let items = messages
        .iter()
        .map(|m| json!({ "topic": m.topic, "bytes": m.payload.len(), "qos": m.qos as u8 }))
        .collect();
    let mut answer = page.answer(items, count, false);
    if let Some(object) = answer.as_object_mut() {
        object.insert("bytes".into(), json!(bytes));
    }
    answer
}

/// A `$SYS` value as a JSON number when it is one.
fn number_or_string(value: String) -> Value {
    if let Ok(n) = value.parse::<i64>() {
        return json!(n);
    }
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(value),
    }
}

/// Seconds since the oldest message waiting in the lanes of bridge `name`
/// arrived (`None`: nothing waits). Messages the link has taken for sending
/// (at most its in-flight window, held by the lane machine until acked) are
/// not counted.
fn oldest_age_secs(sessions: &[crate::broker::peers::SessionEntry], name: &str) -> Option<u64> {
    let prefix = format!("{}{name}/", crate::bridge::CLIENT_ID_PREFIX);
    let oldest = sessions
        .iter()
        .filter(|s| s.client_id.starts_with(&prefix))
        .filter_map(|s| s.oldest_id)
        .min()?;
    let now = crate::broker::durable::epoch_ms();
    crate::message_age::age_ms(oldest, now).map(|ms| ms / 1000)
}

fn bridges(state: &HttpState) -> Value {
    let values = (state.bridges)();
    let sessions = state.broker.session_snapshot();
    let items: Vec<Value> = state
        .broker
        .config
        .bridges
        .iter()
        .map(|b| {
            let prefix = format!("$SYS/broker/bridge/{}/", b.name);
            let figures: Map<String, Value> = values
                .iter()
                .filter_map(|(t, v)| {
                    t.strip_prefix(&prefix)
                        .map(|k| (k.to_string(), number_or_string(v.clone())))
                })
                .collect();
            let up = figures.get("state").and_then(Value::as_i64) == Some(1);
            json!({
                "name": b.name,
                "address": b.address,
                "link": if up { "up" } else { "down" },
                "backlog": figures.get("lanes/depth").cloned().unwrap_or(json!(0)),
                "oldest_message_age_secs": oldest_age_secs(&sessions, &b.name),
                "figures": figures,
            })
        })
        .collect();
    json!({ "total": items.len(), "items": items })
}

fn store(state: &HttpState) -> Value {
    let figures: Map<String, Value> = (state.store)()
        .into_iter()
        .filter_map(|(t, v)| {
            t.strip_prefix("$SYS/broker/store/")
                .map(|k| (k.to_string(), number_or_string(v)))
        })
        .collect();
    // Wear rate: bytes written since start, scaled to a day.
    let uptime = state.broker.uptime().as_secs().max(1);
    let written = figures
        .get("bytes_written")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let per_day = u128::from(written).saturating_mul(86_400) / u128::from(uptime);
    json!({
        "enabled": !figures.is_empty(),
        "bytes_written_per_day": u64::try_from(per_day).unwrap_or(u64::MAX),
        "state": figures.get("state").cloned().unwrap_or(json!("memory")),
        "capacity_bytes": figures.get("capacity_bytes").cloned().unwrap_or(json!(0)),
        "used_bytes": figures.get("live_bytes").cloned().unwrap_or(json!(0)),
        "figures": figures,
    })
}

/// The figures the status page charts: counters it turns into rates.
fn overview(state: &HttpState) -> Value {
    let broker = &state.broker;
    let sys: Map<String, Value> = crate::sys::all_values(broker, &state.extra)
        .into_iter()
        .filter_map(|(t, v)| {
            t.strip_prefix("$SYS/broker/")
                .map(|k| (k.to_string(), number_or_string(v)))
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": broker.uptime().as_secs(),
        "clients_connected": broker.peers.snapshot().len(),
        "sessions": broker.session_count(),
        "subscriptions": broker.router.subscription_count(),
        "messages_received": sys.get("messages/received").cloned().unwrap_or(json!(0)),
        "messages_sent": sys.get("messages/sent").cloned().unwrap_or(json!(0)),
        "warnings": super::page::recent_warnings(&sys),
    })
}

#[cfg(test)]
mod tests {
    use super::Page;

    #[test]
    fn paging_is_capped_and_tolerates_garbage() {
        assert_eq!(
            Page::parse(None, 50),
            Page {
                offset: 0,
                limit: 50
            }
        );
        assert_eq!(
            Page::parse(Some("offset=3&limit=1000"), 50),
            Page {
                offset: 3,
                limit: 50
            }
        );
        assert_eq!(
            Page::parse(Some("offset=-1&limit=x&&=&limit"), 7),
            Page {
                offset: 0,
                limit: 7
            }
        );
    }
}

//! The one publish, subscribe and delivery policy, applied on every path.
//!
//! Every way a message enters the broker (a client PUBLISH, a will when it
//! is accepted and again when it is published, a bridge downlink) asks
//! [`may_publish`]; every SUBSCRIBE filter asks [`may_subscribe`]; every
//! delivery (live, retained on subscribe, resent after a takeover) asks
//! [`may_deliver`]. The checks run in one fixed order, cheapest first:
//!
//! 1. the topic is a valid name (filter) within `max_topic_len` and
//!    `max_topic_levels`;
//! 2. `$SYS` (the topic `$SYS` and everything under `$SYS/`) belongs to the
//!    broker: no client, will or bridge may write there; a bridge downlink
//!    may not write any `$`-topic at all;
//! 3. the `[acl]` deny lists: a subscription filter is refused when it
//!    *overlaps* a `deny_subscribe` filter (some topic matches both, compared
//!    level by level, on the inner filter of `$share/...`), and a delivery
//!    whose topic matches `deny_subscribe` is dropped;
//! 4. the authenticator (the ACL file): write, subscribe or read access.
//!
//! Invariants: the broker's own publications (`$SYS`, restore) do not pass
//! through here; everything a client or the cloud can influence does. A
//! refusal is a reason code the caller sends (v5) or maps (3.1.1).

use crate::broker::Broker;
use crate::config::Limits;
use crate::hooks::ClientIdentity;
use crate::protocol::{reason, topic};
use crate::router;

pub use crate::protocol::topic::reserved_topic;

/// Who publishes.
#[derive(Debug, Clone, Copy)]
pub enum Publisher<'a> {
    /// A connected client (PUBLISH) or its will.
    Client(&'a ClientIdentity),
    /// A bridge downlink (cloud → local), by bridge name.
    Bridge(&'a str),
}

/// Topic length and level limits from config (names and filters alike).
pub fn within_limits(limits: &Limits, name: &str) -> bool {
    name.len() <= limits.max_topic_len
        && name.bytes().filter(|&b| b == b'/').count() < limits.max_topic_levels
}

/// May `publisher` publish to `topic_name`? `Err` is the reason code.
pub fn may_publish(broker: &Broker, publisher: Publisher<'_>, topic_name: &str) -> Result<(), u8> {
    if !topic::valid_topic_name(topic_name) || !within_limits(&broker.config.limits, topic_name) {
        return Err(reason::TOPIC_NAME_INVALID);
    }
    let reserved = match publisher {
        Publisher::Client(_) => reserved_topic(topic_name),
        Publisher::Bridge(_) => topic_name.starts_with('$'),
    };
    if reserved || denied(&broker.config.acl.deny_publish, topic_name) {
        return Err(reason::NOT_AUTHORIZED);
    }
    match publisher {
        Publisher::Client(who) if !broker.auth.authorize_publish(who, topic_name) => {
            Err(reason::NOT_AUTHORIZED)
        }
        _ => Ok(()),
    }
}

/// May bridge `bridge` publish a downlink message of `payload_len` bytes
/// on the mapped local `topic_name`? The local limits apply (the cloud link
/// accepts larger packets); a refusal is counted and logged, and the
/// message is acknowledged to the cloud and dropped.
pub fn may_publish_downlink(
    broker: &Broker,
    bridge: &str,
    topic_name: &str,
    payload_len: usize,
) -> bool {
    let too_large = payload_len > broker.config.limits.max_packet_size as usize;
    let refused = may_publish(broker, Publisher::Bridge(bridge), topic_name).is_err();
    if too_large || refused {
        crate::counters::inc(&broker.metrics.dropped_denied);
        tracing::warn!(bridge, topic = ?topic_name, too_large, "downlink message refused by the local policy");
        return false;
    }
    true
}

/// May `who` subscribe to `filter` (as sent, `$share/` included)? `Err` is
/// the v5 reason code.
pub fn may_subscribe(broker: &Broker, who: &ClientIdentity, filter: &str) -> Result<(), u8> {
    let (_, inner) = router::split_shared(filter);
    if !router::valid_filter(filter) || !within_limits(&broker.config.limits, inner) {
        return Err(reason::TOPIC_FILTER_INVALID);
    }
    let deny = &broker.config.acl.deny_subscribe;
    if deny.iter().any(|d| filters_overlap(d, inner)) {
        return Err(reason::NOT_AUTHORIZED);
    }
    if !broker.auth.authorize_subscribe(who, filter) {
        return Err(reason::NOT_AUTHORIZED);
    }
    Ok(())
}

/// May `who` receive a message on `topic_name` now?
pub fn may_deliver(broker: &Broker, who: &ClientIdentity, topic_name: &str) -> bool {
    !denied(&broker.config.acl.deny_subscribe, topic_name)
        && broker.auth.authorize_read(who, topic_name)
}

/// True when one of the deny `filters` matches `topic_name`.
pub fn denied(filters: &[String], topic_name: &str) -> bool {
    filters.iter().any(|f| topic::matches(f, topic_name))
}

/// True when some topic name matches both filters. Level by level: `#`
/// overlaps the rest (its parent level included), `+` any one level, other
/// levels only themselves. A `$` topic is never matched by a filter whose
/// first level is a wildcard, so such a filter does not overlap one whose
/// first level starts with `$`.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild_first = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (dollar(a) && wild_first(b)) || (dollar(b) && wild_first(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_level_by_level() {
        for f in [
            "#",
            "+/x",
            "+/+",
            "secret/#",
            "secret/+",
            "+/#",
            "secret",
            "secret/x/#",
        ] {
            assert!(filters_overlap("secret/#", f), "{f}");
        }
        for f in ["open/#", "+", "open/+/x", "$SYS/#", "+/y/z"] {
            assert!(!filters_overlap("secret/x", f), "{f}");
        }
        assert!(filters_overlap("a/+/c", "a/b/+"));
        assert!(!filters_overlap("a/+/c", "a/b/d"));
        assert!(!filters_overlap("$SYS/#", "#"));
        assert!(!filters_overlap("#", "$SYS/x"));
        assert!(filters_overlap("$SYS/#", "$SYS/+"));
    }

    fn broker(deny_publish: &[&str], deny_subscribe: &[&str]) -> std::sync::Arc<Broker> {
        let mut config = crate::config::Config::default();
        config.acl.deny_publish = deny_publish.iter().map(|s| s.to_string()).collect();
        config.acl.deny_subscribe = deny_subscribe.iter().map(|s| s.to_string()).collect();
        Broker::new(
            std::sync::Arc::new(config),
            std::sync::Arc::new(crate::hooks::MemoryOnly),
            std::sync::Arc::new(crate::hooks::ListenerPolicy),
        )
    }

    fn client() -> ClientIdentity {
        ClientIdentity {
            client_id: std::sync::Arc::from("c"),
            username: None,
            certificate: false,
        }
    }

    #[test]
    fn one_publish_policy_for_clients_wills_and_downlinks() {
        let b = broker(&["cmd/#"], &[]);
        let c = client();
        let who = Publisher::Client(&c);
        assert_eq!(may_publish(&b, who, "a/b"), Ok(()));
        assert_eq!(
            may_publish(&b, who, "$SYS/broker/version"),
            Err(reason::NOT_AUTHORIZED)
        );
        assert_eq!(may_publish(&b, who, "$SYS"), Err(reason::NOT_AUTHORIZED));
        assert_eq!(may_publish(&b, who, "cmd/x"), Err(reason::NOT_AUTHORIZED));
        assert_eq!(may_publish(&b, who, "a/+"), Err(reason::TOPIC_NAME_INVALID));
        let deep = "a/".repeat(200);
        assert_eq!(may_publish(&b, who, &deep), Err(reason::TOPIC_NAME_INVALID));
        // Downlinks: no `$` topic at all, the deny list, the local limits.
        assert!(may_publish_downlink(&b, "cloud", "cfg/x", 10));
        assert!(!may_publish_downlink(
            &b,
            "cloud",
            "$SYS/broker/version",
            10
        ));
        assert!(!may_publish_downlink(&b, "cloud", "$share/x", 10));
        assert!(!may_publish_downlink(&b, "cloud", "cmd/open", 10));
        assert!(!may_publish_downlink(&b, "cloud", &deep, 10));
        assert!(!may_publish_downlink(&b, "cloud", "cfg/x", 16 << 20));
    }

    #[test]
    fn deny_subscribe_holds_at_subscribe_and_at_delivery() {
        let b = broker(&[], &["secret/#"]);
        let c = client();
        for f in ["#", "+/x", "+/+", "$share/g/#", "secret/x"] {
            assert_eq!(may_subscribe(&b, &c, f), Err(reason::NOT_AUTHORIZED), "{f}");
        }
        assert_eq!(may_subscribe(&b, &c, "open/#"), Ok(()));
        assert_eq!(
            may_subscribe(&b, &c, "a/#/b"),
            Err(reason::TOPIC_FILTER_INVALID)
        );
        assert!(!may_deliver(&b, &c, "secret/x"));
        assert!(may_deliver(&b, &c, "open/x"));
    }

    #[test]
    fn sys_is_reserved_with_and_without_a_slash() {
        assert!(reserved_topic("$SYS"));
        assert!(reserved_topic("$SYS/broker/version"));
        assert!(!reserved_topic("$SYSX"));
        assert!(!reserved_topic("sys/$SYS"));
    }
}

//! The broker's subscription verbs: the one place that keeps the router,
//! a session's own subscription map and its stored copy in step. Used by
//! connections (SUBSCRIBE/UNSUBSCRIBE), bridge lanes and restore.
//!
//! Invariants:
//! - after [`Broker::subscribe`] or [`Broker::unsubscribe`] returns, the
//!   router and `session.subscriptions` agree on the filter;
//! - the router entry is the session's own mailbox, so an unsubscribe never
//!   removes the entry of a newer session with the same client id;
//! - the stored copy is written by [`Broker::save_subscriptions`], once per
//!   packet (not once per filter), and only for a persistent session.

use crate::message::SubscriptionOptions;
use crate::session::Session;

use super::Broker;

impl Broker {
    /// Subscribes `session` to `filter` (router and session). Returns true
    /// when the router already had this subscription (for v5 Retain
    /// Handling 1). Persist with [`Broker::save_subscriptions`].
    pub fn subscribe(
        &self,
        session: &mut Session,
        filter: &str,
        options: SubscriptionOptions,
    ) -> bool {
        let existed = self
            .router
            .subscribe(&session.mailbox, filter, options.clone());
        session.subscriptions.insert(filter.to_owned(), options);
        existed
    }

    /// Removes `session`'s subscription to `filter` (router and session).
    /// Returns true when the session had it. Persist with
    /// [`Broker::save_subscriptions`].
    pub fn unsubscribe(&self, session: &mut Session, filter: &str) -> bool {
        let existed = session.subscriptions.remove(filter).is_some();
        self.router.unsubscribe_mailbox(&session.mailbox, filter);
        existed
    }

    /// Writes a persistent session's subscriptions to the store (a no-op
    /// for a session that ends with its connection).
    pub fn save_subscriptions(&self, session: &Session) {
        if session.is_persistent() {
            self.persistence.save_session(&session.record());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::QoS;

    fn broker() -> Arc<Broker> {
        Broker::new(
            Arc::new(crate::config::Config::default()),
            Arc::new(crate::hooks::MemoryOnly),
            Arc::new(crate::hooks::ListenerPolicy),
        )
    }

    #[test]
    fn subscribe_and_unsubscribe_keep_router_and_session_in_step() {
        let b = broker();
        let mut s = Session::new(Arc::from("c"), 0, b.mailbox_limits());
        let q1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
        let q0 = SubscriptionOptions::qos(QoS::AtMostOnce);
        assert!(!b.subscribe(&mut s, "a/+", q1));
        assert!(b.subscribe(&mut s, "a/+", q0));
        assert_eq!(b.router.subscription_count(), 1);
        assert_eq!(
            s.subscriptions.get("a/+").map(|o| o.qos),
            Some(QoS::AtMostOnce)
        );
        assert!(b.unsubscribe(&mut s, "a/+"));
        assert!(!b.unsubscribe(&mut s, "a/+"));
        assert_eq!(b.router.subscription_count(), 0);
        assert!(s.subscriptions.is_empty());
    }

    #[test]
    fn unsubscribing_an_old_session_leaves_the_newer_sessions_entry() {
        let b = broker();
        let mut old = Session::new(Arc::from("c"), 0, b.mailbox_limits());
        let mut new = Session::new(Arc::from("c"), 0, b.mailbox_limits());
        b.subscribe(&mut old, "t", SubscriptionOptions::qos(QoS::AtLeastOnce));
        b.subscribe(&mut new, "t", SubscriptionOptions::qos(QoS::AtLeastOnce));
        assert!(b.unsubscribe(&mut old, "t"));
        assert_eq!(b.router.subscription_count(), 1);
        assert!(new.subscriptions.contains_key("t"));
    }
}

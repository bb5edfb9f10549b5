//! Revocation on reload (SIGHUP): a connection whose user was removed from
//! the password file, or whose subscriptions the ACL no longer allows, is
//! disconnected (v5 DISCONNECT 0x87 Not authorized).
//!
//! Invariants: the check runs in the connection's own task when the
//! authenticator's reload generation changes, never under a broker lock;
//! a connection of an authenticator that never reloads waits on nothing.

use tokio::sync::watch;

use super::Conn;
use crate::policy;

/// Completes when the credentials were reloaded; never without reloads.
pub async fn reloaded(reloads: &mut Option<watch::Receiver<u64>>) {
    match reloads {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The authenticator is gone: nothing will change any more.
                *reloads = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Conn {
    /// `Err(why)` when this connection may no longer stay connected.
    pub fn still_authorized(&self) -> Result<(), &'static str> {
        if !self.broker.auth.still_allowed(&self.identity) {
            tracing::info!(user = ?self.identity.username, "user removed: disconnecting");
            return Err("user no longer authorized");
        }
        let denied = self
            .session
            .subscriptions
            .keys()
            .find(|f| policy::may_subscribe(&self.broker, &self.identity, f).is_err());
        if let Some(filter) = denied {
            tracing::info!(filter = ?filter, "subscription no longer allowed: disconnecting");
            return Err("subscription no longer authorized");
        }
        Ok(())
    }
}

//! Who is connected: address, protocol and login time per connection, and
//! a snapshot of the session table, for the HTTP API and the status page.
//!
//! Invariants: an entry exists exactly while its [`PeerGuard`] lives (the
//! connection task holds it from login to close), so the table is bounded
//! by `max_connections`; snapshots copy under a short lock and never block
//! the broker's hot paths for longer than a copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{lock, Broker};
use crate::protocol::ProtocolVersion;

/// One connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub client_id: String,
    pub address: SocketAddr,
    pub protocol: ProtocolVersion,
    /// Login time, seconds since the Unix epoch.
    pub connected_since: u64,
}

/// The connected clients.
#[derive(Debug, Default)]
pub struct Peers {
    table: Mutex<HashMap<u64, Peer>>,
    next: AtomicU64,
}

/// Removes its entry when dropped.
#[derive(Debug)]
pub struct PeerGuard {
    peers: Arc<Peers>,
    key: u64,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        lock(&self.peers.table).remove(&self.key);
    }
}

impl Peers {
    /// Records a logged-in connection until the guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        client_id: &str,
        address: SocketAddr,
        protocol: ProtocolVersion,
    ) -> PeerGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let connected_since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        lock(&self.table).insert(
            key,
            Peer {
                client_id: client_id.to_string(),
                address,
                protocol,
                connected_since,
            },
        );
        PeerGuard {
            peers: self.clone(),
            key,
        }
    }

    /// The connected clients, by login time.
    pub fn snapshot(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = lock(&self.table).values().cloned().collect();
        peers.sort_by(|a, b| {
            (a.connected_since, &a.client_id).cmp(&(b.connected_since, &b.client_id))
        });
        peers
    }
}

/// One session of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub client_id: String,
    /// A connection serves it now.
    pub online: bool,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// Messages sent and not yet acknowledged.
    pub inflight: usize,
    /// The lowest message id waiting in its queue (or spilled to the store).
    pub oldest_id: Option<u64>,
}

impl Broker {
    /// Every session (online and parked), sorted by client id.
    pub fn session_snapshot(&self) -> Vec<SessionEntry> {
        let mut out: Vec<SessionEntry> = lock(&self.sessions)
            .iter()
            .map(|(id, slot)| SessionEntry {
                client_id: id.to_string(),
                online: slot.owner.is_some(),
                queued: slot.mailbox.as_ref().map(|m| m.len()).unwrap_or(0),
                inflight: slot
                    .inflight
                    .as_ref()
                    .map_or(0, |g| g.load(std::sync::atomic::Ordering::Relaxed)),
                oldest_id: slot.mailbox.as_ref().and_then(|m| m.oldest_id()),
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }
}

//! The two seams where other parts of edgemq plug into the broker core.
//!
//! * [`Persistence`]: everything the durable store must see goes through
//!   this one trait, so the store can be wired in without touching the
//!   connection or router code. The core awaits a [`Durability`] before it
//!   sends PUBACK/PUBREC to a publisher, which is how the durability
//!   contract (docs/ARCHITECTURE.md) is met. [`MemoryOnly`] is the
//!   implementation for `durability = "memory"` and for in-process tests;
//!   `broker::durable::DurableStore` is the one over the store.
//! * [`Authenticator`]: CONNECT authentication and publish/subscribe/read
//!   authorisation. [`ListenerPolicy`] implements the default policy
//!   (anonymous only where the listener allows it, no password database).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::Message;
pub use crate::message::PersistError;
use crate::session::SessionRecord;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Completion of a durable write.
pub enum Durability {
    /// Already durable (or nothing to persist): no allocation, no wait.
    Done,
    /// Completes when the write is on stable storage (group commit).
    Pending(BoxFuture<'static, Result<(), PersistError>>),
}

impl Durability {
    /// Waits until the write is durable.
    pub async fn wait(self) -> Result<(), PersistError> {
        match self {
            Durability::Done => Ok(()),
            Durability::Pending(f) => f.await,
        }
    }
}

/// Everything the durable store must record. Calls are made without any
/// broker lock held, from connection tasks; implementations queue the work
/// (e.g. to the store's task) and return quickly. A returned
/// `Durability::Pending` future is spawned by the caller, so it may do its
/// submission lazily; its order of completion does not matter (the
/// connection keeps acknowledgements in order itself).
pub trait Persistence: Send + Sync + 'static {
    /// A QoS 1/2 `message` was queued for the persistent sessions
    /// `client_ids`. The PUBACK/PUBREC to its publisher waits for the result.
    fn enqueue(&self, message: &Arc<Message>, client_ids: &[Arc<str>]) -> Durability;
    /// `client_id` acknowledged (PUBACK/PUBCOMP) or dropped the message
    /// `message_id` (`Message::id`, kept unique across restarts by
    /// [`crate::router::ensure_next_message_id`]).
    fn ack(&self, client_id: &str, message_id: u64);
    /// The retained message of `topic` was set (`Some`) or cleared (`None`).
    fn retain(&self, topic: &str, message: Option<&Arc<Message>>) -> Durability;
    /// A persistent session was created or changed (subscriptions, expiry).
    fn save_session(&self, record: &SessionRecord);
    /// A session ended: forget it and everything queued for it.
    fn remove_session(&self, client_id: &str);
    /// A session ended whose queued messages are being handed to other
    /// shared-group members and acknowledged one by one: forget its state
    /// (subscriptions, QoS 2 ids) but not its queue.
    fn forget_session(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A persistent session's QoS 1/2 delivery of `message_id` went out
    /// with packet id `pkid` and is now at `stage` (sent, or PUBREC
    /// received), so a restart can resend it with DUP and the same id.
    /// Fire and forget: a lost record costs a resend under a new id.
    fn inflight(&self, client_id: &str, message_id: u64, pkid: u16, stage: crate::session::Stage) {
        let _ = (client_id, message_id, pkid, stage);
    }
    /// Gives the persistent session `client_id` (a bridge lane) its own
    /// store quota and overflow policy; `None` goes back to the default.
    /// Not stored: the bridge sets it again at every start.
    fn set_store_quota(&self, client_id: &str, quota: Option<crate::storage::Quota>) {
        let _ = (client_id, quota);
    }
    /// True when QoS 1/2 overflow of persistent sessions can wait in the
    /// store instead of being dropped (see `session::mailbox`).
    fn spills(&self) -> bool {
        false
    }
    /// Up to `max` messages still owed to `client_id` with ids `>= from`,
    /// in order (pages a spilled backlog back in).
    fn fetch(
        &self,
        client_id: &str,
        from: u64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Message>, PersistError>> {
        let _ = (client_id, from, max);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    /// An incoming QoS 2 packet id of a persistent session is awaiting
    /// PUBREL (`true`, recorded once its message is durable) or released.
    /// The PUBREC (pending) or PUBCOMP (released) waits for the result, so
    /// a restart can neither lose the id of an acknowledged message nor
    /// bring a completed id back as pending.
    fn incoming_qos2(&self, client_id: &str, pkid: u16, pending: bool) -> Durability;
}

/// No persistence: state lives in memory only and every write is "durable"
/// at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryOnly;

impl Persistence for MemoryOnly {
    fn enqueue(&self, _: &Arc<Message>, _: &[Arc<str>]) -> Durability {
        Durability::Done
    }
    fn ack(&self, _: &str, _: u64) {}
    fn retain(&self, _: &str, _: Option<&Arc<Message>>) -> Durability {
        Durability::Done
    }
    fn save_session(&self, _: &SessionRecord) {}
    fn remove_session(&self, _: &str) {}
    fn incoming_qos2(&self, _: &str, _: u16, _: bool) -> Durability {
        Durability::Done
    }
}

/// What a client presented in CONNECT (credentials are never logged).
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub peer: SocketAddr,
    /// The listener's anonymous policy (`ListenerConfig::anonymous_allowed`).
    pub anonymous_allowed: bool,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// The outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accepted; the identity used for authorisation (usually the username).
    Allow { username: Option<String> },
    /// Refused with a v5 CONNACK reason code (0x86, 0x87, 0x8A, ...).
    Deny(u8),
}

/// Who is asking, for authorisation checks.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub client_id: Arc<str>,
    pub username: Option<String>,
    /// The user name comes from a verified TLS client certificate (not
    /// from CONNECT and the password database).
    pub certificate: bool,
}

/// Authentication and authorisation hooks.
pub trait Authenticator: Send + Sync + 'static {
    /// Decides on a CONNECT. Async so password hashing can run off the
    /// reactor (e.g. `spawn_blocking`).
    fn authenticate<'a>(&'a self, request: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision>;
    /// May `client` publish to `topic`?
    fn authorize_publish(&self, client: &ClientIdentity, topic: &str) -> bool;
    /// May `client` subscribe to `filter` (the filter as sent, `$share/` included)?
    fn authorize_subscribe(&self, client: &ClientIdentity, filter: &str) -> bool;
    /// May `client` receive a message on `topic` (ACL `read` at delivery)?
    fn authorize_read(&self, client: &ClientIdentity, topic: &str) -> bool {
        let _ = (client, topic);
        true
    }
    /// The known user (password database) whose client ids `client_id`
    /// belongs to under `[auth] client_id_binding`, if any: a client
    /// without a user name may not use it.
    fn id_owner(&self, client_id: &str) -> Option<String> {
        let _ = client_id;
        None
    }
    /// Is a connected `client` still allowed to be connected (after a
    /// reload of the credentials)?
    fn still_allowed(&self, client: &ClientIdentity) -> bool {
        let _ = client;
        true
    }
    /// Changes each time the credentials or ACLs are reloaded (SIGHUP), so
    /// connections re-check [`Authenticator::still_allowed`] and their
    /// subscriptions; `None` when they never change.
    fn reloads(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// The default policy without a password database: anonymous clients (and,
/// as in Mosquitto without a password file, clients presenting a username)
/// are accepted exactly where the listener allows anonymous access.
/// Publish and subscribe are allowed (the `[acl]` deny lists are applied by
/// the core on top of any authenticator).
#[derive(Debug, Default, Clone, Copy)]
pub struct ListenerPolicy;

impl Authenticator for ListenerPolicy {
    fn authenticate<'a>(&'a self, request: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        let decision = if request.anonymous_allowed {
            AuthDecision::Allow {
                username: request.username.map(str::to_string),
            }
        } else {
            AuthDecision::Deny(crate::protocol::reason::NOT_AUTHORIZED)
        };
        Box::pin(std::future::ready(decision))
    }
    fn authorize_publish(&self, _: &ClientIdentity, _: &str) -> bool {
        true
    }
    fn authorize_subscribe(&self, _: &ClientIdentity, _: &str) -> bool {
        true
    }
}

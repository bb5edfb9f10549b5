//! The request API of [`StoreHandle`]: every call queues one request to
//! the store thread over its bounded channel, in program order (a caller's
//! ack can never overtake its own append). `submit_*` calls are for
//! synchronous code and block on a full queue (back-pressure); the async
//! ones await room and their answer.
//!
//! Invariant: nothing here touches the store; the thread (`task.rs`) applies
//! the requests in the order they were queued.

use tokio::sync::oneshot;

use super::super::{StoreError, StoredMessage, StoredSession};
use super::{Reply, Request, StoreHandle};

impl StoreHandle {
    /// Gives `destination` its own store quota (`None`: back to the
    /// `[storage]` default). Not persisted: set it again after a restart,
    /// before traffic (the bridge does so when it starts its lanes).
    pub fn set_destination_quota(&self, destination: String, quota: Option<super::super::Quota>) {
        let _ = self.tx.send(Request::SetQuota(destination, quota));
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues a request from synchronous code, in program order. When the
    /// queue is full this blocks the calling thread until the store thread
    /// catches up: back-pressure on publishers, never an unbounded queue.
    /// The store thread needs no runtime, so this cannot deadlock.
    fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> oneshot::Receiver<Result<T, StoreError>> {
        let (reply, rx) = oneshot::channel();
        // A send error drops the request and its reply: the receiver then
        // reports `Stopped`.
        let _ = self.tx.send(make(reply));
        rx
    }

    /// Synchronous-submit variant of [`StoreHandle::append`]: queued at once,
    /// in order with other submissions; await the receiver for durability.
    pub fn submit_append(
        &self,
        msg: StoredMessage,
        destinations: Vec<String>,
    ) -> oneshot::Receiver<Result<u64, StoreError>> {
        self.submit(|r| Request::Append(msg, destinations, r))
    }

    /// Queues an ack (see [`StoreHandle::ack`]).
    pub fn submit_ack(&self, id: u64, destination: String) {
        let _ = self.tx.send(Request::Ack(id, destination));
    }

    /// Queues a retained set (`Some`) or clear (`None`).
    pub fn submit_retained(
        &self,
        topic: String,
        msg: Option<StoredMessage>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        match msg {
            Some(m) => self.submit(|r| Request::SetRetained(m, r)),
            None => self.submit(|r| Request::ClearRetained(topic, r)),
        }
    }

    /// Queues an incoming QoS 2 state change (fire and forget).
    pub fn submit_qos2(&self, client_id: String, pkid: u16, pending: bool) {
        let _ = self.tx.send(Request::Qos2(client_id, pkid, pending));
    }

    /// Pending incoming QoS 2 packet ids by client (for restore).
    pub async fn qos2_pending(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<u16>>, StoreError> {
        self.call(Request::Qos2Pending).await
    }

    /// Queues a session save.
    pub fn submit_session(
        &self,
        session: StoredSession,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        self.submit(|r| Request::SaveSession(session, r))
    }

    /// Queues the end of a session: its state and every message owed to
    /// `destination`.
    pub fn submit_session_end(&self, client_id: String, destination: String) {
        let _ = self.tx.send(Request::ClearDestination(destination));
        drop(self.submit(|r| Request::RemoveSession(client_id, r)));
    }

    /// Queues the removal of a session's state only (its queue stays).
    pub fn submit_session_remove(&self, client_id: String) {
        drop(self.submit(|r| Request::RemoveSession(client_id, r)));
    }

    /// Queues an outgoing packet id record (fire and forget; see
    /// `store::inflight`).
    pub fn submit_inflight(&self, destination: String, id: u64, pkid: u16, stage: u8) {
        let _ = self
            .tx
            .send(Request::Inflight(destination, id, pkid, stage));
    }

    /// (message id, packet id, stage) of `destination`'s in-flight messages.
    pub async fn inflight_of(&self, destination: &str) -> Result<Vec<(u64, u16, u8)>, StoreError> {
        let d = destination.to_string();
        self.call(|r| Request::InflightOf(d, r)).await
    }

    /// Appends a message for `destinations`; resolves once it is durable
    /// (in `sync` mode) with the message id.
    pub async fn append(
        &self,
        msg: StoredMessage,
        destinations: Vec<String>,
    ) -> Result<u64, StoreError> {
        self.call(|r| Request::Append(msg, destinations, r)).await
    }

    /// Acknowledges a (message, destination); fire and forget: a lost ack
    /// means a duplicate after a crash, never a loss.
    pub async fn ack(&self, id: u64, destination: String) -> Result<(), StoreError> {
        self.tx
            .send_async(Request::Ack(id, destination))
            .await
            .map_err(|_| StoreError::Stopped)
    }

    pub async fn read(
        &self,
        destination: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let d = destination.to_string();
        self.call(|r| Request::Read(d, after, max, r)).await
    }

    pub async fn set_retained(&self, msg: StoredMessage) -> Result<(), StoreError> {
        self.call(|r| Request::SetRetained(msg, r)).await
    }

    pub async fn clear_retained(&self, topic: String) -> Result<(), StoreError> {
        self.call(|r| Request::ClearRetained(topic, r)).await
    }

    pub async fn save_session(&self, session: StoredSession) -> Result<(), StoreError> {
        self.call(|r| Request::SaveSession(session, r)).await
    }

    pub async fn remove_session(&self, client_id: String) -> Result<(), StoreError> {
        self.call(|r| Request::RemoveSession(client_id, r)).await
    }

    pub async fn retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.call(Request::Retained).await
    }

    pub async fn sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        self.call(Request::Sessions).await
    }

    pub async fn destinations(&self) -> Result<Vec<String>, StoreError> {
        self.call(Request::Destinations).await
    }

    /// Resolves when everything sent before it is durable, messages held
    /// by write-behind included (they are written now).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Request::Flush).await
    }

    /// Resolves after a sync covering everything written before it;
    /// messages held by write-behind stay held (their publishers wait for
    /// them on their own).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.call(Request::Sync).await
    }
}

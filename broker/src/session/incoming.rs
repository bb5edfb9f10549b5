//! The incoming side of QoS 2: packet ids a client sent us that await its
//! PUBREL.
//!
//! Invariants (issue 11, review finding D2):
//! - an id is pending only while its message is stored or being stored: a
//!   refused or failed write makes the connection [`Incoming::forget`] it,
//!   so the client's retransmission is routed (and stored) again;
//! - a retransmission of a pending id is acknowledged only once the first
//!   copy is durable: while that write is in flight the retransmission
//!   waits for its outcome ([`Qos2Arrival::Wait`]), and if the first write
//!   failed where nobody could forget the id (its connection had closed),
//!   the retransmission is treated as new ([`Qos2Arrival::New`]).
//!
//! The outcome of a first write is published through a `watch` channel by
//! the task that awaits the write, which outlives the connection.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::message::PersistError;

/// Outcome of the first copy's durable write; `None` while in flight.
pub type WriteOutcome = Option<Result<(), PersistError>>;

#[derive(Debug)]
enum State {
    /// The message is durable (or needed no durable copy).
    Stored,
    /// The message's durable write is in flight.
    Storing(watch::Receiver<WriteOutcome>),
}

/// What to do with an incoming QoS 2 PUBLISH.
#[derive(Debug)]
pub enum Qos2Arrival {
    /// A new message (or one whose first copy was never stored): route it.
    New,
    /// A retransmission of a stored message: acknowledge, do not route.
    Duplicate,
    /// A retransmission whose first copy is still being stored: acknowledge
    /// when (and as) that write completes.
    Wait(watch::Receiver<WriteOutcome>),
}

/// QoS 2 packet ids received and not yet released.
#[derive(Debug, Default)]
pub struct Incoming {
    qos2: HashMap<u16, State>,
}

impl Incoming {
    /// A QoS 2 PUBLISH arrived. A new id becomes pending (as stored; call
    /// [`Incoming::storing`] when its write is still in flight).
    pub fn on_publish_qos2(&mut self, pkid: u16) -> Qos2Arrival {
        let outcome = match self.qos2.get(&pkid) {
            None => None,
            Some(State::Stored) => return Qos2Arrival::Duplicate,
            Some(State::Storing(rx)) => Some(rx.borrow().clone()),
        };
        match outcome {
            Some(None) => match self.qos2.get(&pkid) {
                Some(State::Storing(rx)) => Qos2Arrival::Wait(rx.clone()),
                _ => Qos2Arrival::Duplicate,
            },
            Some(Some(Ok(()))) => {
                self.qos2.insert(pkid, State::Stored);
                Qos2Arrival::Duplicate
            }
            // Never seen, or the first copy was not stored.
            None | Some(Some(Err(_))) => {
                self.qos2.insert(pkid, State::Stored);
                Qos2Arrival::New
            }
        }
    }

    /// The message of pending `pkid` is being stored: returns where the
    /// write's outcome must be published.
    pub fn storing(&mut self, pkid: u16) -> watch::Sender<WriteOutcome> {
        let (tx, rx) = watch::channel(None);
        self.qos2.insert(pkid, State::Storing(rx));
        tx
    }

    /// An id restored from the store (its message is durable).
    pub fn restore(&mut self, pkid: u16) {
        self.qos2.insert(pkid, State::Stored);
    }

    /// The message of `pkid` was not stored: forget the id. True when it
    /// was pending.
    pub fn forget(&mut self, pkid: u16) -> bool {
        self.qos2.remove(&pkid).is_some()
    }

    /// PUBREL arrived. True when the id was pending.
    pub fn on_pubrel(&mut self, pkid: u16) -> bool {
        self.qos2.remove(&pkid).is_some()
    }

    /// True when `pkid` was received and awaits PUBREL.
    pub fn is_pending(&self, pkid: u16) -> bool {
        self.qos2.contains_key(&pkid)
    }

    /// QoS 2 messages received and not yet released.
    pub fn pending(&self) -> usize {
        self.qos2.len()
    }
}

/// Completes with the outcome of a first copy's write (a retransmission's
/// acknowledgement waits for it).
pub async fn first_copy(mut rx: watch::Receiver<WriteOutcome>) -> Result<(), PersistError> {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
        Err(_) => Err(PersistError::Failed(
            "the first copy's write was abandoned".into(),
        )),
    }
}

//! Outgoing QoS 1/2 flows: packet ids and the inflight window.
//!
//! Invariants:
//! * at most `window` messages are unacknowledged (PUBLISH sent, PUBACK or
//!   PUBCOMP not received), where the window is the smaller of the client's
//!   Receive Maximum and our `max_inflight`; a QoS 2 message counts until
//!   its PUBCOMP (MQTT 5.0 section 4.9);
//! * a packet id is used by at most one inflight message;
//! * inflight messages are kept in send order, so a reconnect resends them
//!   in the order they were first sent (with DUP set), PUBREL for those
//!   already at the second stage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::message::Delivery;
use crate::protocol::QoS;

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitComp,
}

/// One unacknowledged outgoing message.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub pkid: u16,
    pub delivery: Delivery,
    pub stage: Stage,
}

/// An acknowledgement that does not match the state (a protocol error by
/// the client, answered with reason 0x92 where the protocol allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet identifier {0} not found")]
pub struct UnknownPacketId(pub u16);

/// What to do after a PUBREC.
#[derive(Debug)]
pub enum PubRecOutcome {
    /// Send PUBREL and wait for PUBCOMP.
    SendPubRel,
    /// v5 PUBREC with an error code: the message is done, nothing to send.
    Refused(Delivery),
}

/// The outgoing side of a session.
#[derive(Debug, Default)]
pub struct Outgoing {
    inflight: VecDeque<Inflight>,
    last_pkid: u16,
    /// `inflight.len()`, readable by others (the HTTP API) without the
    /// session: updated after every change.
    gauge: Arc<AtomicUsize>,
}

impl Outgoing {
    /// The shared count of unacknowledged messages.
    pub fn gauge(&self) -> Arc<AtomicUsize> {
        self.gauge.clone()
    }

    fn update_gauge(&self) {
        self.gauge.store(self.inflight.len(), Ordering::Relaxed);
    }

    /// Number of unacknowledged messages.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// True when nothing is inflight.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// True when another message fits in a window of `window`.
    pub fn has_room(&self, window: u16) -> bool {
        self.inflight.len() < usize::from(window)
    }

    /// Registers a QoS 1/2 delivery about to be sent and returns its packet
    /// id. The caller checks [`Outgoing::has_room`] first; `None` only when
    /// all 65535 ids are in use.
    pub fn start(&mut self, delivery: Delivery) -> Option<u16> {
        debug_assert!(delivery.qos != QoS::AtMostOnce);
        let pkid = self.next_free_pkid()?;
        let stage = match delivery.qos {
            QoS::ExactlyOnce => Stage::AwaitRec,
            _ => Stage::AwaitAck,
        };
        self.inflight.push_back(Inflight {
            pkid,
            delivery,
            stage,
        });
        self.update_gauge();
        Some(pkid)
    }

    /// Puts back a message that was in flight before a restart, with its
    /// packet id and stage (send order is restore order). False when the
    /// packet id is already in use (the caller queues it as new instead).
    pub fn restore(&mut self, pkid: u16, delivery: Delivery, stage: Stage) -> bool {
        if pkid == 0 || self.position(pkid).is_some() {
            return false;
        }
        self.inflight.push_back(Inflight {
            pkid,
            delivery,
            stage,
        });
        self.last_pkid = pkid;
        self.update_gauge();
        true
    }

    /// PUBACK received: the QoS 1 message is done.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Delivery, UnknownPacketId> {
        self.complete(pkid, Stage::AwaitAck)
    }

    /// PUBREC received with `reason_code`.
    pub fn on_pubrec(
        &mut self,
        pkid: u16,
        reason_code: u8,
    ) -> Result<PubRecOutcome, UnknownPacketId> {
        let idx = self.position(pkid).ok_or(UnknownPacketId(pkid))?;
        let entry = &mut self.inflight[idx];
        match entry.stage {
            Stage::AwaitAck => Err(UnknownPacketId(pkid)),
            _ if reason_code >= 0x80 => {
                let done = self.inflight.remove(idx).ok_or(UnknownPacketId(pkid))?;
                self.update_gauge();
                Ok(PubRecOutcome::Refused(done.delivery))
            }
            // A repeated PUBREC (after our PUBREL was lost) gets PUBREL again.
            Stage::AwaitRec | Stage::AwaitComp => {
                entry.stage = Stage::AwaitComp;
                Ok(PubRecOutcome::SendPubRel)
            }
        }
    }

    /// PUBCOMP received: the QoS 2 message is done.
    pub fn on_pubcomp(&mut self, pkid: u16) -> Result<Delivery, UnknownPacketId> {
        self.complete(pkid, Stage::AwaitComp)
    }

    /// Inflight messages in send order, for resending on reconnect.
    pub fn pending(&self) -> impl Iterator<Item = &Inflight> {
        self.inflight.iter()
    }

    /// Forgets everything (clean start); returns the dropped deliveries.
    pub fn clear(&mut self) -> Vec<Delivery> {
        let out = self.inflight.drain(..).map(|i| i.delivery).collect();
        self.update_gauge();
        out
    }

    fn complete(&mut self, pkid: u16, expected: Stage) -> Result<Delivery, UnknownPacketId> {
        let idx = self
            .inflight
            .iter()
            .position(|i| i.pkid == pkid && i.stage == expected)
            .ok_or(UnknownPacketId(pkid))?;
        let done = self.inflight.remove(idx).map(|i| i.delivery);
        self.update_gauge();
        done.ok_or(UnknownPacketId(pkid))
    }

    fn position(&self, pkid: u16) -> Option<usize> {
        self.inflight.iter().position(|i| i.pkid == pkid)
    }

    fn next_free_pkid(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if self.position(self.last_pkid).is_none() {
                return Some(self.last_pkid);
            }
        }
    }
}

//! What a publisher hears when its message's durable write is refused or
//! fails (issue 11, review findings W2 and D2).
//!
//! Invariants:
//! - no PUBACK/PUBREC 0x00 is ever sent for a message whose write failed;
//! - a v5 publisher whose message found no room (`PersistError::QuotaExceeded`)
//!   gets PUBACK/PUBREC 0x97 in its place and keeps its connection;
//! - otherwise (3.1.1, which has no way to say no, or a failed store) the
//!   acknowledgement is withheld, the connection stops reading, sends every
//!   acknowledgement queued behind it whose write succeeds, and then closes:
//!   the client retransmits only what was not acknowledged;
//! - a refused QoS 2 message's packet id is no longer pending (in RAM and,
//!   for a persistent session, in the store), so its retransmission is
//!   routed and stored again instead of being PUBRECed blindly.
//!
//! Routing happens before the write: online subscribers may already have
//! received a message that is then refused (the README says so).

use crate::hooks::PersistError;
use crate::protocol::{reason, Packet};

use super::Conn;

impl Conn {
    /// The first waiting acknowledgement's write did not happen.
    pub(super) fn on_write_refused(&mut self, error: PersistError) {
        let Some((_, packet)) = self.waiting_acks.pop_front() else {
            return;
        };
        if let Packet::PubRec(a) = &packet {
            self.forget_qos2(a.pkid);
        }
        let quota = matches!(error, PersistError::QuotaExceeded(_));
        if quota && self.version.is_v5() {
            let refused = match packet {
                Packet::PubAck(mut a) => Some(Packet::PubAck({
                    a.reason_code = reason::QUOTA_EXCEEDED;
                    a
                })),
                Packet::PubRec(mut a) => Some(Packet::PubRec({
                    a.reason_code = reason::QUOTA_EXCEEDED;
                    a
                })),
                _ => None,
            };
            if let Some(refused) = refused {
                tracing::warn!(error = %error, "durable write refused; answering 0x97");
                self.waiting_acks.push_front((None, refused));
                self.send_ready_acks();
                return;
            }
        }
        let why = match quota {
            true => {
                tracing::warn!(error = %error, "durable write refused; not acknowledging, closing once the ready acks are sent");
                (reason::QUOTA_EXCEEDED, "store full")
            }
            false => {
                tracing::error!(error = %error, "durable write failed; not acknowledging");
                (reason::UNSPECIFIED_ERROR, "persistence failure")
            }
        };
        self.closing.get_or_insert(why);
        self.send_ready_acks();
    }

    /// A QoS 2 id whose message was not stored stops being pending.
    fn forget_qos2(&mut self, pkid: u16) {
        if self.session.incoming.forget(pkid) && self.session.is_persistent() {
            // Queued at once, not awaited: it is lost only if the broker
            // crashes before the next sync, and the store refused the
            // message anyway.
            drop(
                self.broker
                    .persistence
                    .incoming_qos2(&self.session.client_id, pkid, false),
            );
        }
    }
}

//! The bridge's IO-free state machine: lanes, the in-flight window, packet
//! ids, batching, cloud limits and the reconnect/resend rules.
//!
//! The network task (`link`) feeds it events (messages queued, connected,
//! acknowledgement with its reason code, disconnected, tick) and carries out
//! the [`Action`]s it returns (send a packet, delete a lane entry from the
//! store, dead-letter, count an expired message, drop the link). It never
//! sleeps, reads a socket or touches the store, so every rule below is unit-
//! and property-tested (`machine_tests`).
//!
//! Invariants:
//! * a lane entry leaves the machine only through [`Action::Delete`] (a
//!   success acknowledgement, a QoS 0 send, or a downlink echo that is never
//!   forwarded), [`Action::DeadLetter`] (a refusal code >= 0x80 other than
//!   the transient 0x89/0x97, a message larger than the cloud's Maximum
//!   Packet Size, or the third consecutive disconnect with the same message
//!   at the head of the window) or [`Action::Expired`] (its v5 Message Expiry
//!   Interval passed while it waited);
//! * order within a lane is kept: on a disconnect the in-flight messages go
//!   back to the front of their lanes in send order, so every connection
//!   sends each lane's messages in the order they were queued;
//! * at most `min(max_inflight, cloud Receive Maximum)` PUBLISH packets are
//!   unacknowledged; packet ids come from the session module's [`Outgoing`];
//! * no PUBLISH larger than the cloud's Maximum Packet Size is sent, none
//!   above its Maximum QoS, none with RETAIN when Retain Available is 0, and
//!   no topic alias is ever used (so Topic Alias Maximum always holds);
//! * RAM is bounded: the task pulls at most [`LaneMachine::wants`] deliveries
//!   per lane, and the window bounds what is in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::bridge::BatchMode;
use crate::envelope::Format;
use crate::protocol::{reason, ConnAck, Packet, ProtocolVersion, PubAck, Publish, QoS};
use crate::router::Delivery;
use crate::session::{Outgoing, PubRecOutcome};

/// Building the PUBLISH packets (mirror and envelope) under the limits.
#[path = "lane_batch.rs"]
mod batch;

/// Consecutive disconnects with the same message at the head of the window
/// after which that message is dead-lettered.
pub const POISON_DISCONNECTS: u32 = 3;

/// What the machine needs from the bridge configuration.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub version: ProtocolVersion,
    pub mode: BatchMode,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub envelope_topic: String,
    pub format: Format,
    pub max_inflight: u16,
    /// The remote prefix of each lane, by lane index.
    pub prefixes: Vec<String>,
    /// Publisher id of downlink messages: never sent back up.
    pub own_publisher: std::sync::Arc<str>,
}

/// The limits the cloud announced in its CONNACK (MQTT 5.0 section 3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudLimits {
    pub receive_maximum: u16,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: u16,
    pub maximum_qos: QoS,
    pub retain_available: bool,
}

impl Default for CloudLimits {
    fn default() -> Self {
        CloudLimits {
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
        }
    }
}

impl CloudLimits {
    /// The limits of a CONNACK; absent properties take the spec's defaults.
    pub fn from_connack(a: &ConnAck) -> CloudLimits {
        let p = &a.properties;
        CloudLimits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX).max(1),
            maximum_packet_size: p.maximum_packet_size,
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            maximum_qos: QoS::from_u8(p.maximum_qos.unwrap_or(2)).unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available.unwrap_or(1) != 0,
        }
    }
}

/// Why a message was taken out of its lane without reaching the cloud.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterReason {
    #[error("cloud refused it with reason code {0:#04x}")]
    Refused(u8),
    #[error("{size} bytes is larger than the cloud's maximum packet size {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("cloud closed the connection")]
    CloudClosed,
}

/// What the network task must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write this PUBLISH to the cloud. `messages` lane entries travel in it
    /// (1 in mirror mode); `raw_bytes` is the envelope's uncompressed size.
    Publish {
        lane: usize,
        publish: Publish,
        messages: usize,
        raw_bytes: usize,
    },
    /// Write this packet (PUBREL) to the cloud.
    Send(Packet),
    /// Delete the entry from the lane's store destination.
    Delete { lane: usize, delivery: Delivery },
    /// Log, count, publish to the dead-letter topic, then delete the entry.
    DeadLetter {
        lane: usize,
        delivery: Delivery,
        reason: DeadLetterReason,
    },
    /// Its expiry passed in the lane: count, then delete the entry.
    Expired { lane: usize, delivery: Delivery },
    /// A transient refusal (0x89, 0x97): drop the link and reconnect after
    /// the backoff; the message is resent first.
    Disconnect { reason_code: u8 },
}

/// Which acknowledgement arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubComp,
}

/// The lane entries of one PUBLISH in flight.
#[derive(Debug)]
struct Batch {
    /// Send order.
    seq: u64,
    lane: usize,
    deliveries: Vec<Delivery>,
}

#[derive(Debug, Default)]
struct LaneQueue {
    /// Pulled from the lane's mailbox, not yet sent (or sent and requeued).
    pending: VecDeque<Delivery>,
    /// When `pending` last became non-empty (envelope linger).
    since: Option<Instant>,
    /// Requeued after a disconnect: send without lingering.
    flush: bool,
}

/// The bridge's lanes and in-flight window. See the module documentation.
#[derive(Debug)]
pub struct LaneMachine {
    cfg: MachineConfig,
    lanes: Vec<LaneQueue>,
    outgoing: Outgoing,
    /// Packet id to the lane entries in that PUBLISH.
    batches: HashMap<u16, Batch>,
    /// Batches refused with a transient code, waiting for the disconnect
    /// that requeues them (their packet ids are free again).
    held: Vec<Batch>,
    next_seq: u64,
    /// `None` while disconnected.
    limits: Option<CloudLimits>,
    /// (message id at the head of the window, consecutive disconnects).
    suspect: Option<(u64, u32)>,
    /// The link is closing because of a transient refusal: not a strike.
    transient_close: bool,
    /// Downlink QoS 2 packet ids received and not yet released.
    downlink_qos2: HashSet<u16>,
}

impl LaneMachine {
    pub fn new(cfg: MachineConfig) -> LaneMachine {
        let lanes = cfg.prefixes.iter().map(|_| LaneQueue::default()).collect();
        LaneMachine {
            cfg,
            lanes,
            outgoing: Outgoing::default(),
            batches: HashMap::new(),
            held: Vec::new(),
            next_seq: 0,
            limits: None,
            suspect: None,
            transient_close: false,
            downlink_qos2: HashSet::new(),
        }
    }

    /// The window of the current connection (0 while disconnected).
    pub fn window(&self) -> u16 {
        self.limits
            .map_or(0, |l| l.receive_maximum.min(self.cfg.max_inflight))
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.limits.is_some()
    }

    /// PUBLISH packets waiting for their acknowledgement.
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// Lane entries held here (pending and in flight).
    pub fn held(&self) -> usize {
        let pending: usize = self.lanes.iter().map(|l| l.pending.len()).sum();
        let flying = self.batches.values().chain(&self.held);
        pending + flying.map(|b| b.deliveries.len()).sum::<usize>()
    }

    /// True when lane `lane` has nothing pending or in flight.
    pub fn lane_idle(&self, lane: usize) -> bool {
        self.lanes.get(lane).is_none_or(|l| l.pending.is_empty())
            && !self
                .batches
                .values()
                .chain(&self.held)
                .any(|b| b.lane == lane)
    }

    /// How many deliveries the task should pull from lane `lane`'s mailbox
    /// now (0 while disconnected): enough to fill a batch or the window.
    pub fn wants(&self, lane: usize) -> usize {
        let Some(l) = self.lanes.get(lane) else {
            return 0;
        };
        if !self.is_connected() {
            return 0;
        }
        let target = match self.cfg.mode {
            BatchMode::Mirror => usize::from(self.cfg.max_inflight),
            BatchMode::Envelope => self.cfg.max_messages,
        };
        target.saturating_sub(l.pending.len())
    }

    /// Event: deliveries pulled from lane `lane`'s mailbox, in lane order.
    pub fn queued(&mut self, lane: usize, deliveries: Vec<Delivery>, now: Instant) {
        if let Some(l) = self.lanes.get_mut(lane) {
            if l.pending.is_empty() && !deliveries.is_empty() {
                l.since = Some(now);
            }
            l.pending.extend(deliveries);
        }
    }

    /// Event: CONNACK success. A new cloud session (`session_present` = 0)
    /// forgets the downlink QoS 2 state, so a reused packet id is a new
    /// message (W5).
    pub fn connected(&mut self, limits: CloudLimits, session_present: bool) {
        self.limits = Some(limits);
        self.transient_close = false;
        if !session_present {
            self.downlink_qos2.clear();
        }
    }

    /// Event: the link is gone. The in-flight messages go back to the front
    /// of their lanes in send order. `closed_by_cloud`: the cloud closed it
    /// (end of stream, reset, DISCONNECT), not a timeout or our shutdown;
    /// the third such close in a row with the same message at the head of
    /// the window dead-letters that message.
    pub fn disconnected(&mut self, closed_by_cloud: bool) -> Vec<Action> {
        let was_connected = self.limits.take().is_some();
        self.outgoing.clear();
        let mut flying: Vec<Batch> = self.batches.drain().map(|(_, b)| b).collect();
        flying.append(&mut self.held);
        flying.sort_by_key(|b| b.seq);
        let mut actions = Vec::new();
        let transient = std::mem::take(&mut self.transient_close);
        let strike = was_connected && closed_by_cloud && !transient;
        if strike {
            match flying.first().and_then(|b| b.deliveries.first()) {
                Some(d) => {
                    let id = d.message.id;
                    let count = match self.suspect {
                        Some((s, n)) if s == id => n.saturating_add(1),
                        _ => 1,
                    };
                    self.suspect = Some((id, count));
                    if count >= POISON_DISCONNECTS {
                        self.suspect = None;
                        let poison = flying.remove(0);
                        for delivery in poison.deliveries {
                            actions.push(Action::DeadLetter {
                                lane: poison.lane,
                                delivery,
                                reason: DeadLetterReason::CloudClosed,
                            });
                        }
                    }
                }
                None => self.suspect = None,
            }
        }
        // Newest first, each pushed to the front: the oldest ends up first.
        for b in flying.into_iter().rev() {
            if let Some(l) = self.lanes.get_mut(b.lane) {
                for d in b.deliveries.into_iter().rev() {
                    l.pending.push_front(d);
                }
                l.flush = true;
            }
        }
        actions
    }

    /// Event: PUBACK, PUBREC or PUBCOMP with `reason_code`.
    pub fn acked(&mut self, kind: AckKind, pkid: u16, reason_code: u8) -> Vec<Action> {
        let done = match kind {
            AckKind::PubAck => self.outgoing.on_puback(pkid).ok(),
            AckKind::PubComp => self.outgoing.on_pubcomp(pkid).ok(),
            AckKind::PubRec => match self.outgoing.on_pubrec(pkid, reason_code) {
                Ok(PubRecOutcome::SendPubRel) => {
                    return vec![Action::Send(Packet::PubRel(PubAck {
                        pkid,
                        ..PubAck::default()
                    }))]
                }
                Ok(PubRecOutcome::Refused(d)) => Some(d),
                Err(_) => None,
            },
        };
        if done.is_none() {
            tracing::debug!(pkid, "acknowledgement for an unknown packet id");
            return Vec::new();
        }
        if is_transient(reason_code) {
            // Requeued (in send order) by the disconnect that follows.
            if let Some(b) = self.batches.remove(&pkid) {
                self.held.push(b);
            }
            self.transient_close = true;
            return vec![Action::Disconnect { reason_code }];
        }
        let Some(Batch {
            lane, deliveries, ..
        }) = self.batches.remove(&pkid)
        else {
            return Vec::new();
        };
        if let Some((id, _)) = self.suspect {
            if deliveries.iter().any(|d| d.message.id == id) {
                self.suspect = None;
            }
        }
        deliveries
            .into_iter()
            .map(|delivery| {
                if reason_code >= 0x80 {
                    Action::DeadLetter {
                        lane,
                        delivery,
                        reason: DeadLetterReason::Refused(reason_code),
                    }
                } else {
                    Action::Delete { lane, delivery }
                }
            })
            .collect()
    }

    /// Event: a downlink QoS 2 PUBLISH; true when it is new (publish it).
    pub fn downlink_qos2(&mut self, pkid: u16) -> bool {
        self.downlink_qos2.insert(pkid)
    }

    /// Event: downlink PUBREL.
    pub fn downlink_released(&mut self, pkid: u16) {
        self.downlink_qos2.remove(&pkid);
    }

    /// When the next envelope linger runs out, if one is waiting.
    pub fn next_wakeup(&self) -> Option<Instant> {
        // With the window full nothing can go out: the next ack wakes us.
        if self.cfg.mode != BatchMode::Envelope || !self.outgoing.has_room(self.window()) {
            return None;
        }
        self.lanes
            .iter()
            .filter(|l| !l.pending.is_empty() && !l.flush)
            .filter_map(|l| l.since.map(|s| s + self.cfg.linger))
            .min()
    }

    /// Event: time passed or something was queued. Sends what the window
    /// and the cloud's limits allow, highest-priority lane (index 0) first.
    pub fn poll(&mut self, now: Instant, wall_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(limits) = self.limits else {
            return actions;
        };
        let window = self.window();
        for lane in 0..self.lanes.len() {
            while self.outgoing.has_room(window) {
                let before = actions.len();
                let sent = match self.cfg.mode {
                    BatchMode::Mirror => self.next_mirror(lane, limits, now, &mut actions),
                    BatchMode::Envelope => {
                        self.next_envelope(lane, limits, now, wall_ms, &mut actions)
                    }
                };
                if !sent && actions.len() == before {
                    break;
                }
            }
            if !self.outgoing.has_room(window) {
                break;
            }
        }
        actions
    }

    /// Everything held here, per lane in lane order (in flight first, in
    /// send order), to put back into the mailboxes at shutdown.
    pub fn take_all(&mut self) -> Vec<(usize, Vec<Delivery>)> {
        drop(self.disconnected(false));
        self.lanes
            .iter_mut()
            .enumerate()
            .map(|(i, l)| (i, l.pending.drain(..).collect()))
            .collect()
    }
}

/// 0x89 Server busy and 0x97 Quota exceeded: retried after a backoff.
pub fn is_transient(reason_code: u8) -> bool {
    matches!(reason_code, reason::SERVER_BUSY | reason::QUOTA_EXCEEDED)
}

/// Exponential reconnect backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    current_ms: u64,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        let min_ms = min_ms.max(1);
        Backoff {
            min_ms,
            max_ms: max_ms.max(min_ms),
            current_ms: min_ms,
        }
    }

    /// The delay before the next attempt; a link that lasted 30 s or more
    /// starts again from the minimum. `random` supplies the jitter.
    pub fn next_delay(&mut self, link_lasted: Duration, random: u64) -> Duration {
        if link_lasted > Duration::from_secs(30) {
            self.current_ms = self.min_ms;
        }
        let jitter = random % (self.current_ms / 2 + 1);
        let delay = Duration::from_millis(self.current_ms.saturating_add(jitter));
        self.current_ms = self.current_ms.saturating_mul(2).min(self.max_ms);
        delay
    }
}

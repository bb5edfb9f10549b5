//! Property tests of the bridge's lane machine over random event orders:
//! nothing leaves a lane except on a success acknowledgement or an explicit
//! dead letter, and each connection sends each lane in queue order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use proptest::prelude::*;

use super::lane_machine::{AckKind, Action, CloudLimits, DeadLetterReason, LaneMachine};
use super::machine_tests::{cfg, delivery};
use crate::config::bridge::BatchMode;
use crate::router::Delivery;

fn now() -> Instant {
    Instant::now()
}

#[derive(Debug, Clone)]
enum Ev {
    /// Lane, count, payload padding.
    Queue(usize, usize, usize),
    Connect(u16, bool),
    Disconnect(bool),
    Ack(usize, u8),
    Tick,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..3usize, 1..5usize, prop::sample::select(vec![0usize, 10, 300, 3000]))
            .prop_map(|(l, n, pad)| Ev::Queue(l, n, pad)),
        1 => (1..5u16, any::<bool>()).prop_map(|(r, p)| Ev::Connect(r, p)),
        1 => any::<bool>().prop_map(Ev::Disconnect),
        5 => (0..8usize, prop::sample::select(vec![0u8, 0x10, 0x80, 0x87, 0x89, 0x97]))
            .prop_map(|(i, c)| Ev::Ack(i, c)),
        1 => Just(Ev::Tick),
    ]
}

/// A model of the network task and the cloud around the machine.
struct World {
    m: LaneMachine,
    /// The lanes' mailboxes (message ids).
    mailboxes: Vec<VecDeque<Delivery>>,
    /// Packet id to message ids, on this connection.
    outstanding: Vec<(u16, Vec<u64>)>,
    /// Ids acknowledged with a success code / refused with `code`.
    succeeded: HashSet<u64>,
    refused: HashMap<u64, u8>,
    /// Ids that left the lanes, and how.
    deleted: HashSet<u64>,
    dead: HashSet<u64>,
    /// Last id sent per lane on this connection.
    last_sent: Vec<Option<u64>>,
    /// Ids queued and not yet deleted or dead-lettered, per lane.
    remaining: Vec<std::collections::BTreeSet<u64>>,
    /// Ids sent on this connection.
    sent_now: HashSet<u64>,
    lane_of: HashMap<u64, usize>,
    next: u64,
    mode: BatchMode,
    /// The cloud's Maximum Packet Size in this run.
    max_packet: Option<u32>,
}

impl World {
    fn new(mode: BatchMode, max_packet: Option<u32>) -> World {
        let mut c = cfg(mode, 3);
        c.max_messages = 5;
        World {
            m: LaneMachine::new(c),
            mode,
            max_packet,
            mailboxes: vec![VecDeque::new(); 3],
            outstanding: Vec::new(),
            succeeded: HashSet::new(),
            refused: HashMap::new(),
            deleted: HashSet::new(),
            dead: HashSet::new(),
            last_sent: vec![None; 3],
            remaining: vec![Default::default(); 3],
            sent_now: HashSet::new(),
            lane_of: HashMap::new(),
            next: 0,
        }
    }

    /// Payloads are "<id> <padding>".
    fn id_of(payload: &[u8]) -> u64 {
        let text = std::str::from_utf8(payload).unwrap();
        text.split(' ').next().unwrap().parse().unwrap()
    }

    fn id(d: &Delivery) -> u64 {
        Self::id_of(&d.message.payload)
    }

    /// The message ids in a PUBLISH, in order.
    fn ids(&self, payload: &[u8]) -> Vec<u64> {
        match self.mode {
            BatchMode::Mirror => vec![Self::id_of(payload)],
            BatchMode::Envelope => {
                let format = cfg(BatchMode::Envelope, 1).format;
                crate::envelope::decode(payload, format)
                    .unwrap()
                    .iter()
                    .map(|m| Self::id_of(&m.payload))
                    .collect()
            }
        }
    }

    fn pull(&mut self) {
        for lane in 0..3 {
            let want = self.m.wants(lane).min(self.mailboxes[lane].len());
            let batch: Vec<Delivery> = self.mailboxes[lane].drain(..want).collect();
            if !batch.is_empty() {
                self.m.queued(lane, batch, now());
            }
        }
    }

    fn apply(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
        let mut transient = false;
        for a in actions {
            match a {
                Action::Publish { lane, publish, .. } => {
                    if let Some(max) = self.max_packet {
                        let size = crate::protocol::encoded_len(
                            &crate::protocol::Packet::Publish(publish.clone()),
                            crate::protocol::ProtocolVersion::V5,
                        );
                        prop_assert!(size <= max as usize, "{} bytes sent", size);
                    }
                    let ids = self.ids(&publish.payload);
                    prop_assert!(!ids.is_empty());
                    for &id in &ids {
                        prop_assert_eq!(self.lane_of[&id], lane);
                        if let Some(last) = self.last_sent[lane] {
                            prop_assert!(last < id, "lane {} sent {} after {}", lane, id, last);
                        }
                        self.last_sent[lane] = Some(id);
                        // No older entry of the lane is skipped.
                        let older = self.remaining[lane].range(..id);
                        for o in older {
                            prop_assert!(self.sent_now.contains(o), "{} skipped for {}", o, id);
                        }
                        self.sent_now.insert(id);
                        prop_assert!(!self.deleted.contains(&id) && !self.dead.contains(&id));
                    }
                    self.outstanding.push((publish.pkid, ids));
                    prop_assert!(self.outstanding.len() <= usize::from(self.m.window()));
                }
                Action::Send(_) => {}
                Action::Delete { delivery, .. } => {
                    let id = Self::id(&delivery);
                    prop_assert!(
                        self.succeeded.contains(&id),
                        "{} deleted without a success ack",
                        id
                    );
                    prop_assert!(self.deleted.insert(id) && !self.dead.contains(&id));
                    self.remaining[self.lane_of[&id]].remove(&id);
                }
                Action::DeadLetter {
                    delivery, reason, ..
                } => {
                    let id = Self::id(&delivery);
                    match reason {
                        DeadLetterReason::Refused(code) => {
                            prop_assert_eq!(self.refused.get(&id), Some(&code));
                            prop_assert!(code >= 0x80 && code != 0x89 && code != 0x97);
                        }
                        DeadLetterReason::CloudClosed => {}
                        DeadLetterReason::TooLarge { max, .. } => {
                            prop_assert_eq!(Some(max), self.max_packet);
                            // Only a message that cannot fit on its own.
                            prop_assert!(delivery.message.payload.len() + 64 > max as usize);
                        }
                    }
                    prop_assert!(self.dead.insert(id) && !self.deleted.contains(&id));
                    self.remaining[self.lane_of[&id]].remove(&id);
                }
                Action::Expired { .. } => prop_assert!(false, "nothing expires here"),
                Action::Disconnect { .. } => transient = true,
            }
        }
        if transient {
            self.disconnect(true)?;
        }
        Ok(())
    }

    fn disconnect(&mut self, by_cloud: bool) -> Result<(), TestCaseError> {
        self.outstanding.clear();
        let actions = self.m.disconnected(by_cloud);
        self.apply(actions)
    }

    fn step(&mut self, e: Ev) -> Result<(), TestCaseError> {
        match e {
            Ev::Queue(lane, n, pad) => {
                for _ in 0..n {
                    let id = self.next;
                    self.next += 1;
                    self.lane_of.insert(id, lane);
                    self.remaining[lane].insert(id);
                    let payload = format!("{id} {}", "x".repeat(pad));
                    self.mailboxes[lane].push_back(delivery("t", &payload));
                }
            }
            Ev::Connect(rm, present) => {
                if !self.m.is_connected() {
                    let limits = CloudLimits {
                        receive_maximum: rm,
                        maximum_packet_size: self.max_packet,
                        ..CloudLimits::default()
                    };
                    self.m.connected(limits, present);
                    self.last_sent = vec![None; 3];
                    self.sent_now.clear();
                }
            }
            Ev::Disconnect(by_cloud) => {
                if self.m.is_connected() {
                    self.disconnect(by_cloud)?;
                }
            }
            Ev::Ack(i, code) => {
                if !self.outstanding.is_empty() {
                    let (pkid, ids) = self.outstanding.remove(i % self.outstanding.len());
                    for id in &ids {
                        if code < 0x80 {
                            self.succeeded.insert(*id);
                        } else {
                            self.refused.insert(*id, code);
                        }
                    }
                    let actions = self.m.acked(AckKind::PubAck, pkid, code);
                    self.apply(actions)?;
                }
            }
            Ev::Tick => {}
        }
        self.pull();
        let actions = self.m.poll(now(), 0);
        self.apply(actions)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Nothing leaves a lane except on a success ack or an explicit dead
    /// letter; each connection sends each lane in queue order; at the end,
    /// with a cloud that accepts everything, every message is accounted for
    /// exactly once.
    #[test]
    fn lanes_lose_nothing_and_keep_order(events in prop::collection::vec(ev(), 1..120)) {
        run(World::new(BatchMode::Mirror, None), events)?;
    }

    /// The same with the cloud's Maximum Packet Size and envelope batches:
    /// no PUBLISH over the limit is sent, and only a message that cannot fit
    /// alone is dead-lettered as too large.
    #[test]
    fn limits_and_batches_lose_nothing_and_keep_order(
        events in prop::collection::vec(ev(), 1..120),
        envelope in any::<bool>(),
    ) {
        let mode = if envelope { BatchMode::Envelope } else { BatchMode::Mirror };
        run(World::new(mode, Some(2000)), events)?;
    }
}

/// Runs `events`, then lets a cooperative cloud acknowledge everything:
/// every message must be accounted for exactly once.
fn run(mut w: World, events: Vec<Ev>) -> Result<(), TestCaseError> {
    for e in events {
        w.step(e)?;
    }
    if !w.m.is_connected() {
        w.step(Ev::Connect(4, false))?;
    }
    for _ in 0..10_000 {
        if w.outstanding.is_empty() && w.m.held() == 0 && w.mailboxes.iter().all(VecDeque::is_empty)
        {
            break;
        }
        w.step(Ev::Ack(0, 0))?;
    }
    prop_assert_eq!(w.m.held(), 0);
    let total = w.next as usize;
    prop_assert_eq!(w.deleted.len() + w.dead.len(), total);
    Ok(())
}

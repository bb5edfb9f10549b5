//! End-to-end message accounting: which messages the publishers had handed to
//! the broker (written to the socket at QoS 0, PUBACKed at QoS 1) and which
//! each subscriber received, so a report can say how many accepted messages
//! were never delivered ("lost") next to the rates.
//!
//! Invariants: a message is named by (publisher index, sequence number);
//! sequence numbers start at 1 and grow by one per publisher; payload bytes
//! 8..16 carry [`tag`]`(publisher, seq)`. Every subscriber subscribes to every
//! publisher's topic, so each subscriber is owed every accepted message once.
//! Nothing here trusts the broker: a tag that names no known publisher or an
//! absurd sequence is counted as `unknown`, never indexed.

/// Bits of the tag that hold the sequence number; the publisher index sits above.
const SEQ_BITS: u32 = 40;
/// Largest sequence number a [`SeqSet`] stores (keeps a corrupt tag from allocating).
const MAX_SEQ: u64 = 1 << 32;

/// The 8-byte tag of a message: publisher index and sequence number.
pub fn tag(publisher: usize, seq: u64) -> u64 {
    ((publisher as u64) << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// Splits a tag into publisher index and sequence number.
pub fn untag(tag: u64) -> (usize, u64) {
    ((tag >> SEQ_BITS) as usize, tag & ((1 << SEQ_BITS) - 1))
}

/// A growable set of sequence numbers (a bitmap).
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// All of `1..=n`.
    pub fn up_to(n: u64) -> SeqSet {
        let mut s = SeqSet::default();
        for seq in 1..=n.min(MAX_SEQ) {
            s.insert(seq);
        }
        s
    }

    /// Adds `seq`; false if it was already there or is out of range.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq > MAX_SEQ {
            return false;
        }
        let word = (seq / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        match self.words.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many members of `self` are not in `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// What one subscriber received, per publisher.
#[derive(Debug, Default)]
pub struct Received {
    per_publisher: Vec<SeqSet>,
    /// Messages received more than once (allowed at QoS 1, counted apart).
    pub duplicates: u64,
    /// Messages whose tag names no publisher of this run.
    pub unknown: u64,
}

impl Received {
    pub fn new(publishers: usize) -> Received {
        Received {
            per_publisher: vec![SeqSet::default(); publishers],
            ..Received::default()
        }
    }

    /// Records one delivered message by its tag.
    pub fn record(&mut self, tag: u64) {
        let (publisher, seq) = untag(tag);
        match self.per_publisher.get_mut(publisher) {
            Some(set) if seq > 0 && seq <= MAX_SEQ => {
                if !set.insert(seq) {
                    self.duplicates += 1;
                }
            }
            _ => self.unknown += 1,
        }
    }

    /// Distinct messages received.
    #[cfg(test)]
    pub fn distinct(&self) -> u64 {
        self.per_publisher.iter().map(SeqSet::len).sum()
    }

    /// Accepted messages (per publisher) this subscriber never received.
    pub fn lost(&self, accepted: &[SeqSet]) -> u64 {
        let empty = SeqSet::default();
        accepted
            .iter()
            .enumerate()
            .map(|(i, a)| a.missing_from(self.per_publisher.get(i).unwrap_or(&empty)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips() {
        assert_eq!(untag(tag(19, 123_456)), (19, 123_456));
        assert_eq!(untag(tag(0, 1)), (0, 1));
    }

    #[test]
    fn lost_counts_accepted_but_not_received() {
        let accepted = vec![SeqSet::up_to(10), SeqSet::up_to(3)];
        let mut got = Received::new(2);
        for seq in 1..=8 {
            got.record(tag(0, seq));
        }
        got.record(tag(0, 8));
        got.record(tag(1, 2));
        got.record(tag(7, 1));
        assert_eq!(got.lost(&accepted), 2 + 2);
        assert_eq!(got.duplicates, 1);
        assert_eq!(got.unknown, 1);
        assert_eq!(got.distinct(), 9);
    }

    #[test]
    fn a_delivered_but_unacknowledged_message_is_not_lost() {
        let mut acked = SeqSet::default();
        acked.insert(1);
        acked.insert(3);
        let mut got = Received::new(1);
        got.record(tag(0, 1));
        got.record(tag(0, 2));
        assert_eq!(got.lost(&[acked]), 1);
    }

    #[test]
    fn a_corrupt_tag_does_not_allocate() {
        let mut got = Received::new(1);
        got.record(tag(0, (1 << SEQ_BITS) - 1));
        got.record(u64::MAX);
        assert_eq!(got.unknown, 2);
        assert_eq!(got.distinct(), 0);
    }
}

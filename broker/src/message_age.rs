//! How old a message is, from its id: a bounded timeline of
//! `(next message id, wall-clock ms)` samples.
//!
//! A `Message` carries no receipt time (adding one would grow every
//! message); ids are allocated in arrival order, so a sample "at `t` the next
//! id was `n`" says every message with an id `>= n` arrived after `t`. The
//! age of message `id` is then `now - t` of the last sample with `n <= id`:
//! an upper bound, off by at most the sampling period (one second, see
//! [`sample`]). Restored messages seed the timeline with their stored receipt
//! time. Ids older than every sample get the age of the oldest sample (a
//! lower bound).
//!
//! Invariants: at most [`MAX_SAMPLES`] samples (when full, every other one
//! is dropped, halving the resolution of the oldest part); one short lock
//! per sample or query, never taken on the publish path.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bound on the timeline's entries.
pub const MAX_SAMPLES: usize = 4096;

static TIMELINE: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

fn timeline() -> std::sync::MutexGuard<'static, BTreeMap<u64, u64>> {
    TIMELINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that at `now_ms` the next message id is `next_id` (call once a
/// second). With no message since the previous sample, that sample moves
/// forward instead, so an idle hour does not age the next message.
pub fn sample(next_id: u64, now_ms: u64) {
    let mut t = timeline();
    match t.last_key_value() {
        Some((&n, _)) if n == next_id => {
            t.insert(n, now_ms);
        }
        _ => insert(&mut t, next_id, now_ms),
    }
}

/// Records a restored message's id and stored receipt time.
pub fn seed(id: u64, received_at_ms: u64) {
    let mut t = timeline();
    // A later sample with a smaller time would contradict arrival order
    // (a clock step): keep the earlier time for the id.
    let earlier = t.get(&id).is_some_and(|&ms| ms <= received_at_ms);
    if !earlier {
        insert(&mut t, id, received_at_ms);
    }
}

fn insert(t: &mut BTreeMap<u64, u64>, id: u64, ms: u64) {
    t.insert(id, ms);
    if t.len() > MAX_SAMPLES {
        let keep: BTreeMap<u64, u64> = t
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1 || *i + 1 == t.len())
            .map(|(_, (&k, &v))| (k, v))
            .collect();
        *t = keep;
    }
}

/// Age in milliseconds at `now_ms` of the message with id `id`; `None`
/// before the first sample.
pub fn age_ms(id: u64, now_ms: u64) -> Option<u64> {
    let t = timeline();
    let since = match t.range(..=id).next_back() {
        Some((_, &ms)) => ms,
        None => *t.first_key_value()?.1,
    };
    Some(now_ms.saturating_sub(since))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the timeline is process-wide.
    #[test]
    fn ages_follow_samples_seeds_and_the_bound() {
        assert_eq!(age_ms(5, 1_000), None);
        sample(10, 100_000);
        sample(10, 101_000); // idle: the sample moves forward
        sample(20, 102_000);
        assert_eq!(age_ms(15, 110_000), Some(9_000));
        assert_eq!(age_ms(20, 110_000), Some(8_000));
        assert_eq!(age_ms(25, 110_000), Some(8_000));
        // Older than every sample: at least as old as the first one.
        assert_eq!(age_ms(3, 110_000), Some(9_000));
        // A restored message brings its own receipt time.
        seed(3, 50_000);
        assert_eq!(age_ms(3, 110_000), Some(60_000));
        assert_eq!(age_ms(2, 110_000), Some(60_000));
        for i in 0..(3 * MAX_SAMPLES as u64) {
            sample(100 + i, 200_000 + i);
        }
        assert!(timeline().len() <= MAX_SAMPLES);
        let last = 100 + 3 * MAX_SAMPLES as u64 - 1;
        assert_eq!(age_ms(last, 200_000 + last), Some(100));
    }
}

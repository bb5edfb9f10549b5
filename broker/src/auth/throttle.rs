//! Slows down password guessing.
//!
//! Every failed login from an IP address doubles the delay before that
//! address's next login is checked (100 ms after the first failure, capped
//! at 10 s); a success or ten quiet minutes clear it. The delay is spent
//! before the password is hashed, so a guesser costs us a sleeping task,
//! not CPU. The table is bounded: when it is full, the entry idle longest
//! is forgotten. Hashing itself runs on blocking threads behind a
//! semaphore (one permit per core), so a login flood queues instead of
//! occupying every blocking thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the first failure; doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at most.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Per-address failure counts.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// How long to wait before checking a login from `ip`.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some(f) if f.last.elapsed() < FORGET_AFTER => delay_for(f.count),
            _ => Duration::ZERO,
        }
    }

    /// Records a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ENTRIES && !failures.contains_key(&ip) {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failures.len() >= MAX_ENTRIES {
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(ip, _)| *ip)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// Records a successful login from `ip`.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&ip);
    }

    /// Addresses currently remembered.
    pub fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay after `count` consecutive failures.
fn delay_for(count: u32) -> Duration {
    match count {
        0 => Duration::ZERO,
        n => FIRST_DELAY
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_clear_on_success() {
        let t = LoginThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(t.delay(a), Duration::ZERO);
        t.failed(a);
        assert_eq!(t.delay(a), Duration::from_millis(100));
        t.failed(a);
        t.failed(a);
        assert_eq!(t.delay(a), Duration::from_millis(400));
        for _ in 0..40 {
            t.failed(a);
        }
        assert_eq!(t.delay(a), MAX_DELAY);
        assert_eq!(t.delay(b), Duration::ZERO, "other addresses are not slowed");
        t.succeeded(a);
        assert_eq!(t.delay(a), Duration::ZERO);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::default();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(t.len(), MAX_ENTRIES);
        let newest = IpAddr::from((MAX_ENTRIES as u32 + 99).to_be_bytes());
        assert_eq!(t.delay(newest), FIRST_DELAY);
    }
}

//! Slows down password guessing.
//!
//! Failed logins are counted per address (IPv6 addresses by their /64, the
//! smallest block a host is usually given). Each failure blocks the address
//! for a time that doubles with the count (100 ms after the first failure,
//! capped at 10 s); ten quiet minutes clear it. A success clears it only
//! when every failure from that address was for the same user name, so one
//! valid account cannot be used to reset the count while guessing another.
//!
//! Invariants:
//! * at most [`MAX_IN_PROGRESS`] logins per address are checked at once;
//!   further ones are refused at once (v5 0x9F), so parallel guesses gain
//!   nothing and hold no memory or hashing time;
//! * while an address is blocked, a login whose wait would exceed
//!   [`MAX_WAIT`] is refused at once; a shorter wait (a user who mistyped) is
//!   slept off, within the connect timeout;
//! * the table is bounded: when it is full, the entry idle longest is
//!   forgotten (an entry with logins in progress is kept);
//! * failed-login log lines are rate limited ([`LogLimit`]).
//!
//! Hashing itself runs on blocking threads behind a semaphore (one permit
//! per core), so a login flood queues instead of occupying every thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Block after the first failure; doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest block.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at most.
const MAX_ENTRIES: usize = 4096;
/// Logins checked at once per address.
pub const MAX_IN_PROGRESS: u32 = 2;
/// Longest block slept off instead of refused.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
struct Entry {
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    in_progress: u32,
    /// The user name of every failure so far, while they were all the same.
    failed_user: Option<String>,
    mixed_users: bool,
}

/// Per-address failure counts.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Arc<Mutex<HashMap<IpAddr, Entry>>>,
}

/// A login being checked; releases its in-progress slot when dropped.
#[derive(Debug)]
pub struct Attempt {
    entries: Arc<Mutex<HashMap<IpAddr, Entry>>>,
    key: IpAddr,
    /// Sleep this long before checking the password.
    pub wait: Duration,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.entries).get_mut(&self.key) {
            e.in_progress = e.in_progress.saturating_sub(1);
        }
    }
}

/// The address's key: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::from(s)
            }
        },
    }
}

impl LoginThrottle {
    /// Starts checking a login from `ip`; `None`: refuse it now.
    pub fn begin(&self, ip: IpAddr) -> Option<Attempt> {
        let now = Instant::now();
        let key = key(ip);
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            evict(&mut entries, now);
        }
        let e = entries.entry(key).or_default();
        if e.last_failure
            .is_some_and(|t| now.duration_since(t) >= FORGET_AFTER)
        {
            *e = Entry {
                in_progress: e.in_progress,
                ..Entry::default()
            };
        }
        let wait = e
            .blocked_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if e.in_progress >= MAX_IN_PROGRESS || wait > MAX_WAIT {
            return None;
        }
        e.in_progress += 1;
        Some(Attempt {
            entries: self.entries.clone(),
            key,
            wait,
        })
    }

    /// Records a failed login for `user` from `ip`.
    pub fn failed(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        let key = key(ip);
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            evict(&mut entries, now);
        }
        let e = entries.entry(key).or_default();
        e.failures = e.failures.saturating_add(1);
        e.last_failure = Some(now);
        e.blocked_until = Some(now + delay_for(e.failures));
        match &e.failed_user {
            None if !e.mixed_users => e.failed_user = Some(user.to_string()),
            Some(u) if u != user => {
                e.failed_user = None;
                e.mixed_users = true;
            }
            _ => {}
        }
    }

    /// Records a successful login for `user` from `ip`: clears the count
    /// only if every failure from the address was for `user`.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(&key(ip)) {
            if !e.mixed_users && e.failed_user.as_deref().is_none_or(|u| u == user) {
                *e = Entry {
                    in_progress: e.in_progress,
                    ..Entry::default()
                };
            }
        }
    }

    /// How long `ip` is blocked for now.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        lock(&self.entries)
            .get(&key(ip))
            .and_then(|e| e.blocked_until)
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Addresses currently remembered.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets stale entries, else the one idle longest (none in progress).
fn evict(entries: &mut HashMap<IpAddr, Entry>, now: Instant) {
    entries.retain(|_, e| {
        e.in_progress > 0
            || e.last_failure
                .is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
    });
    if entries.len() >= MAX_ENTRIES {
        let oldest = entries
            .iter()
            .filter(|(_, e)| e.in_progress == 0)
            .min_by_key(|(_, e)| e.last_failure)
            .map(|(ip, _)| *ip);
        if let Some(oldest) = oldest {
            entries.remove(&oldest);
        }
    }
}

/// The block after `count` consecutive failures.
fn delay_for(count: u32) -> Duration {
    match count {
        0 => Duration::ZERO,
        n => FIRST_DELAY
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_DELAY),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rate limit for failed-login log lines: at most `BURST` per `WINDOW`;
/// the rest are counted and reported with the next line allowed.
#[derive(Debug, Default)]
pub struct LogLimit {
    state: Mutex<(Option<Instant>, u32, u64)>,
}

const BURST: u32 = 10;
const WINDOW: Duration = Duration::from_secs(10);

impl LogLimit {
    /// `Some(suppressed so far)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut s = lock(&self.state);
        let (start, lines, suppressed) = &mut *s;
        if start.is_none_or(|t| now.duration_since(t) >= WINDOW) {
            *start = Some(now);
            *lines = 0;
        }
        if *lines < BURST {
            *lines += 1;
            return Some(std::mem::take(suppressed));
        }
        *suppressed += 1;
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_double_up_to_the_cap() {
        let t = LoginThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(t.delay(a), Duration::ZERO);
        t.failed(a, "alice");
        assert!(t.delay(a) <= FIRST_DELAY && t.delay(a) > Duration::ZERO);
        for _ in 0..40 {
            t.failed(a, "alice");
        }
        assert!(t.delay(a) > MAX_DELAY - Duration::from_secs(1));
        assert!(t.begin(a).is_none(), "a long block is refused at once");
        assert_eq!(t.delay(b), Duration::ZERO, "other addresses are not slowed");
        t.succeeded(a, "alice");
        assert_eq!(
            t.delay(a),
            Duration::ZERO,
            "the only user failing succeeded"
        );
    }

    #[test]
    fn another_accounts_success_does_not_reset_the_count() {
        let t = LoginThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..8 {
            t.failed(a, "alice");
        }
        t.succeeded(a, "bob");
        assert!(t.delay(a) > MAX_WAIT, "bob's login cleared alice's guesses");
        assert!(t.begin(a).is_none());
    }

    #[test]
    fn parallel_attempts_are_limited_per_address_and_per_ipv6_64() {
        let t = LoginThrottle::default();
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let first = t.begin(a).unwrap();
        let second = t.begin(same_64).unwrap();
        assert!(t.begin(a).is_none(), "a third login in parallel is refused");
        drop(first);
        assert!(t.begin(same_64).is_some());
        drop(second);
        let other: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        assert!(t.begin(other).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::default();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), "u");
        }
        assert_eq!(t.len(), MAX_ENTRIES);
        let newest = IpAddr::from((MAX_ENTRIES as u32 + 99).to_be_bytes());
        assert!(t.delay(newest) > Duration::ZERO);
    }

    #[test]
    fn log_lines_are_rate_limited() {
        let l = LogLimit::default();
        for _ in 0..BURST {
            assert_eq!(l.allow(), Some(0));
        }
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
    }
}

//! Brute-force protection for digest authentication, designed the way operators of shared
//! offices and proxies need it (sans-IO: time is an input).
//!
//! Two counters, both over a sliding window:
//! - **per (user, source)**: wrong passwords for one username from one address. Past
//!   `max_failures` that pair is refused; other users behind the same address (an office NAT,
//!   a proxy in front) keep working, and a success for another user resets nothing here.
//! - **per source across users**: distinct usernames that failed from one address. Past
//!   `max_users` the address is scanning (SIPVicious-style) and is refused for every user.
//!
//! Blocks grow: each new block of the same pair or source lasts twice the one before, from
//! `block` up to `block_max`; the strike count is forgotten after `block_max` without
//! failures. Only real guesses are counted ([`super::digest::Verdict::WrongPassword`]):
//! forged, stale or replayed nonces never lock anybody out. Both tables are bounded; when a
//! flood of sources fills them, entries that are neither blocked nor recent go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Entries per table before old ones are swept (a flood of spoofed sources cannot grow us).
const MAX_ENTRIES: usize = 100_000;

/// Usernames longer than this are counted by their first bytes (they are hostile anyway).
const MAX_USERNAME: usize = 64;

/// Limits, from `[sip]` settings.
#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    /// Wrong passwords for one (user, source) within `window` before the pair is refused.
    pub max_failures: u32,
    /// Distinct failing usernames from one source within `window` before the source is refused.
    pub max_users: u32,
    /// Counting window.
    pub window: Duration,
    /// First block; each repeat doubles it.
    pub block: Duration,
    /// Longest block (and how long strikes are remembered).
    pub block_max: Duration,
}

/// What is refused, for the log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// This username from this address.
    User,
    /// Every username from this address (it is scanning).
    Source,
}

#[derive(Debug, Default)]
struct Counter {
    window_start: Option<Instant>,
    failures: u32,
    strikes: u32,
    blocked_until: Option<Instant>,
    last_failure: Option<Instant>,
    /// Distinct usernames (hashed) that failed in this window (source counters only).
    users: Vec<u64>,
}

impl Counter {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|u| now < u)
    }

    /// Starts a new window when the old one is over; forgets strikes after a long quiet.
    fn roll(&mut self, now: Instant, limits: &GuardLimits) {
        if self
            .last_failure
            .is_some_and(|l| now.saturating_duration_since(l) >= limits.block_max)
        {
            self.strikes = 0;
        }
        let over = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= limits.window);
        if over {
            self.window_start = Some(now);
            self.failures = 0;
            self.users.clear();
        }
    }

    /// Starts a block that doubles with each strike.
    fn block(&mut self, now: Instant, limits: &GuardLimits) -> Duration {
        let factor = 1u32 << self.strikes.min(16);
        let d = limits.block.saturating_mul(factor).min(limits.block_max);
        self.strikes += 1;
        self.blocked_until = Some(now + d);
        self.failures = 0;
        self.users.clear();
        d
    }

    fn keep(&self, now: Instant, limits: &GuardLimits) -> bool {
        self.blocked(now)
            || self
                .last_failure
                .is_some_and(|l| now.saturating_duration_since(l) < limits.block_max)
    }
}

/// The failure counters. See the module docs.
pub struct AuthGuard {
    limits: GuardLimits,
    pairs: HashMap<(IpAddr, String), Counter>,
    sources: HashMap<IpAddr, Counter>,
    refused: u64,
}

fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USERNAME);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_string()
}

fn user_hash(user: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    h.finish()
}

impl AuthGuard {
    /// A guard with these limits.
    pub fn new(limits: GuardLimits) -> AuthGuard {
        AuthGuard {
            limits,
            pairs: HashMap::new(),
            sources: HashMap::new(),
            refused: 0,
        }
    }

    /// Whether requests for `user` from `ip` are refused now (counted in [`Self::refused`]).
    pub fn check(&mut self, ip: IpAddr, user: &str, now: Instant) -> Option<Blocked> {
        let verdict = if self.source_blocked(ip, now) {
            Some(Blocked::Source)
        } else if self
            .pairs
            .get(&(ip, user_key(user)))
            .is_some_and(|c| c.blocked(now))
        {
            Some(Blocked::User)
        } else {
            None
        };
        if verdict.is_some() {
            self.refused += 1;
        }
        verdict
    }

    /// Whether `ip` is refused for every user (scanning).
    pub fn source_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources.get(&ip).is_some_and(|c| c.blocked(now))
    }

    /// A wrong password for `user` from `ip`; returns the block this failure started, if any,
    /// with its length (log it once).
    pub fn failure(&mut self, ip: IpAddr, user: &str, now: Instant) -> Option<(Blocked, Duration)> {
        self.sweep(now);
        let limits = self.limits;
        let hash = user_hash(&user_key(user));
        let source = self.sources.entry(ip).or_default();
        source.roll(now, &limits);
        source.last_failure = Some(now);
        if !source.users.contains(&hash) {
            source.users.push(hash);
        }
        if source.users.len() as u32 > limits.max_users && !source.blocked(now) {
            return Some((Blocked::Source, source.block(now, &limits)));
        }
        let pair = self.pairs.entry((ip, user_key(user))).or_default();
        pair.roll(now, &limits);
        pair.last_failure = Some(now);
        pair.failures += 1;
        if pair.failures > limits.max_failures && !pair.blocked(now) {
            return Some((Blocked::User, pair.block(now, &limits)));
        }
        None
    }

    /// The right password for `user` from `ip`: that pair's count starts again. Nothing else
    /// changes (another user's success must not hide this address's guesses).
    pub fn success(&mut self, ip: IpAddr, user: &str) {
        if let Some(c) = self.pairs.get_mut(&(ip, user_key(user))) {
            c.failures = 0;
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Pairs and sources currently blocked.
    pub fn blocked_now(&self, now: Instant) -> usize {
        self.pairs.values().filter(|c| c.blocked(now)).count()
            + self.sources.values().filter(|c| c.blocked(now)).count()
    }

    fn sweep(&mut self, now: Instant) {
        let limits = self.limits;
        if self.pairs.len() >= MAX_ENTRIES {
            self.pairs.retain(|_, c| c.keep(now, &limits));
            if self.pairs.len() >= MAX_ENTRIES {
                self.pairs.retain(|_, c| c.blocked(now));
            }
        }
        if self.sources.len() >= MAX_ENTRIES {
            self.sources.retain(|_, c| c.keep(now, &limits));
            if self.sources.len() >= MAX_ENTRIES {
                self.sources.retain(|_, c| c.blocked(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GuardLimits {
        GuardLimits {
            max_failures: 3,
            max_users: 4,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
            block_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn guesses_for_one_user_block_that_user_only() {
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut g = AuthGuard::new(limits());
        for _ in 0..3 {
            assert_eq!(g.failure(ip, "101", t), None);
            // Valid logins of another user from the same office NAT reset nothing.
            g.success(ip, "100");
        }
        assert_eq!(
            g.failure(ip, "101", t),
            Some((Blocked::User, Duration::from_secs(300)))
        );
        assert_eq!(g.check(ip, "101", t), Some(Blocked::User));
        assert_eq!(
            g.check(ip, "100", t),
            None,
            "the office's other users still work"
        );
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(
            g.check(other, "101", t),
            None,
            "the real 101 elsewhere still works"
        );
        assert_eq!(g.check(ip, "101", t + Duration::from_secs(300)), None);
        assert_eq!(g.refused(), 1);
    }

    #[test]
    fn blocks_grow_with_each_repeat() {
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut g = AuthGuard::new(limits());
        let mut now = t;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let mut started = None;
            for _ in 0..4 {
                started = started.or(g.failure(ip, "101", now));
            }
            let (_, d) = started.expect("blocked");
            lengths.push(d.as_secs());
            now += d;
        }
        assert_eq!(lengths, [300, 600, 1200, 2400, 3600]);
    }

    #[test]
    fn a_scanner_trying_many_users_is_refused_for_all() {
        let t = Instant::now();
        let ip: IpAddr = "198.51.100.9".parse().expect("ip");
        let mut g = AuthGuard::new(limits());
        for (i, user) in ["100", "101", "102", "103"].iter().enumerate() {
            assert_eq!(g.failure(ip, user, t), None, "user {i}");
        }
        assert_eq!(g.failure(ip, "104", t).map(|b| b.0), Some(Blocked::Source));
        assert_eq!(g.check(ip, "100", t), Some(Blocked::Source));
        assert!(g.blocked_now(t) >= 1);
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_sources() {
        let t = Instant::now();
        let mut g = AuthGuard::new(limits());
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            g.failure(ip, "100", t);
        }
        // Every entry is recent, none blocked: the sweep drops them rather than grow.
        assert!(g.pairs.len() <= MAX_ENTRIES && g.sources.len() <= MAX_ENTRIES);
    }
}

//! Throttling of failed logins, per principal and per source address.
//!
//! Password guessing is made slow, not merely logged: after [`Policy::max_failures`] failures
//! within [`Policy::window`] a key is locked out, for [`Policy::base_lockout`] the first time
//! and twice as long each following time (up to [`Policy::max_lockout`]); a key that has not
//! failed for [`Policy::forget_after`] starts over. A principal's success clears its record;
//! a source's record is kept, so one valid account cannot be used to reset a source that is
//! guessing at others.
//!
//! State is in memory (a restart forgets it, which costs an attacker a restart of the control
//! plane) and each map holds at most [`MAX_ENTRIES`] keys, so a flood of made-up usernames or
//! addresses cannot exhaust memory: stale keys are dropped first, then the longest-quiet.
//! Time is passed in (unix seconds), so tests drive the clock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;

/// Most keys one map tracks.
pub const MAX_ENTRIES: usize = 10_000;

/// When failures lead to a lockout, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window` that lock the key out.
    pub max_failures: usize,
    /// Seconds over which failures are counted.
    pub window: i64,
    /// Seconds of the first lockout; each following one doubles.
    pub base_lockout: i64,
    /// Longest lockout, in seconds.
    pub max_lockout: i64,
    /// Seconds without a failure after which a key's history is forgotten.
    pub forget_after: i64,
}

impl Policy {
    /// For one user or connected app: 5 failures in 5 minutes, then 1 min, 2 min, ... 15 min.
    pub const PRINCIPAL: Policy = Policy {
        max_failures: 5,
        window: 300,
        base_lockout: 60,
        max_lockout: 900,
        forget_after: 3600,
    };
    /// For one source address, which may front many data planes (NAT): 20 failures in 5
    /// minutes, then the same growing lockout.
    pub const SOURCE: Policy = Policy {
        max_failures: 20,
        window: 300,
        base_lockout: 60,
        max_lockout: 900,
        forget_after: 3600,
    };

    fn lockout(&self, lockouts: u32) -> i64 {
        let doubling = 1i64 << lockouts.saturating_sub(1).min(20);
        self.base_lockout
            .saturating_mul(doubling)
            .min(self.max_lockout)
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// Times of the recent failures, oldest first (at most `max_failures`).
    failures: VecDeque<i64>,
    /// Lockouts so far; each one lasts twice the previous.
    lockouts: u32,
    locked_until: i64,
    last_failure: i64,
}

/// Failure history for one kind of key.
#[derive(Debug)]
pub struct Throttle<K> {
    policy: Policy,
    capacity: usize,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(policy: Policy) -> Self {
        Self::with_capacity(policy, MAX_ENTRIES)
    }

    /// A throttle tracking at most `capacity` keys.
    pub fn with_capacity(policy: Policy, capacity: usize) -> Self {
        Self {
            policy,
            capacity: capacity.max(1),
            entries: HashMap::new(),
        }
    }

    /// `Err(seconds)` while `key` is locked out: how long until it may try again.
    pub fn check(&self, key: &K, now: i64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(entry) if entry.locked_until > now => {
                Err(u64::try_from(entry.locked_until - now).unwrap_or(u64::MAX))
            }
            _ => Ok(()),
        }
    }

    /// Records a failure of `key`; `Some(seconds)` when it locked the key out.
    pub fn failed(&mut self, key: &K, now: i64) -> Option<u64> {
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let policy = self.policy;
        let entry = self.entries.entry(key.clone()).or_default();
        if now - entry.last_failure > policy.forget_after {
            *entry = Entry::default();
        }
        entry.last_failure = now;
        entry.failures.retain(|t| now - t < policy.window);
        entry.failures.push_back(now);
        if entry.failures.len() < policy.max_failures {
            return None;
        }
        entry.failures.clear();
        entry.lockouts = entry.lockouts.saturating_add(1);
        let lockout = policy.lockout(entry.lockouts);
        entry.locked_until = now.saturating_add(lockout);
        Some(u64::try_from(lockout).unwrap_or(0))
    }

    /// Forgets `key`'s history (a principal that logged in).
    pub fn succeeded(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frees one slot when full: stale keys first, else the unlocked key quiet for longest
    /// (a locked key goes only when every key is locked).
    fn make_room(&mut self, now: i64) {
        if self.entries.len() < self.capacity {
            return;
        }
        let forget_after = self.policy.forget_after;
        self.entries
            .retain(|_, e| e.locked_until > now || now - e.last_failure <= forget_after);
        if self.entries.len() < self.capacity {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.locked_until > now, e.last_failure))
            .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

/// Who a login attempt claims to be, as throttled and logged (never with a secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    User(String),
    App(String),
}

impl fmt::Display for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalKey::User(name) => write!(f, "user '{name}'"),
            PrincipalKey::App(id) => write!(f, "connected app '{id}'"),
        }
    }
}

/// A login refused without checking its secret, because of earlier failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins {who}; try again in {retry_after} s")]
pub struct Throttled {
    /// "for user 'alice'" or "from 10.0.0.7".
    pub who: String,
    pub retry_after: u64,
}

/// Both throttles a login passes.
#[derive(Debug)]
pub struct LoginThrottle {
    principals: Throttle<PrincipalKey>,
    sources: Throttle<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            principals: Throttle::new(Policy::PRINCIPAL),
            sources: Throttle::new(Policy::SOURCE),
        }
    }
}

/// Which lockouts a failure started, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lockouts {
    pub principal: Option<u64>,
    pub source: Option<u64>,
}

impl LoginThrottle {
    /// Refuses while the source or the principal is locked out (the source first: it says
    /// more about an attack).
    pub fn check(&self, key: &PrincipalKey, source: IpAddr, now: i64) -> Result<(), Throttled> {
        self.sources
            .check(&source, now)
            .map_err(|retry_after| Throttled {
                who: format!("from {source}"),
                retry_after,
            })?;
        self.principals
            .check(key, now)
            .map_err(|retry_after| Throttled {
                who: format!("for {key}"),
                retry_after,
            })
    }

    /// Counts a failed login against both.
    pub fn failed(&mut self, key: &PrincipalKey, source: IpAddr, now: i64) -> Lockouts {
        Lockouts {
            principal: self.principals.failed(key, now),
            source: self.sources.failed(&source, now),
        }
    }

    /// A successful login clears the principal's history, not the source's.
    pub fn succeeded(&mut self, key: &PrincipalKey) {
        self.principals.succeeded(key);
    }

    /// Refuses while `source` is locked out (for a credential that names no principal, such
    /// as a bearer token).
    pub fn check_source(&self, source: IpAddr, now: i64) -> Result<(), Throttled> {
        self.sources
            .check(&source, now)
            .map_err(|retry_after| Throttled {
                who: format!("from {source}"),
                retry_after,
            })
    }

    /// Counts a failure of such a credential against `source`; `Some(seconds)` when it locked
    /// the source out.
    pub fn source_failed(&mut self, source: IpAddr, now: i64) -> Option<u64> {
        self.sources.failed(&source, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy::PRINCIPAL;

    fn fail_n(t: &mut Throttle<&'static str>, key: &'static str, n: usize, now: i64) -> Vec<u64> {
        (0..n).filter_map(|_| t.failed(&key, now)).collect()
    }

    #[test]
    fn five_failures_in_the_window_lock_out_with_a_growing_lockout() {
        let mut t = Throttle::new(POLICY);
        assert_eq!(fail_n(&mut t, "alice", 4, 1000), Vec::<u64>::new());
        assert_eq!(t.check(&"alice", 1000), Ok(()));
        assert_eq!(t.failed(&"alice", 1001), Some(60));
        assert_eq!(t.check(&"alice", 1001), Err(60));
        assert_eq!(t.check(&"alice", 1060), Err(1));
        assert_eq!(t.check(&"alice", 1061), Ok(()));
        assert_eq!(t.check(&"bob", 1001), Ok(()), "other keys are not affected");

        // The next five failures lock out for twice as long, then four times, capped at 15 min.
        assert_eq!(fail_n(&mut t, "alice", 5, 1061), vec![120]);
        assert_eq!(t.check(&"alice", 1061), Err(120));
        assert_eq!(fail_n(&mut t, "alice", 5, 1200), vec![240]);
        assert_eq!(fail_n(&mut t, "alice", 5, 1500), vec![480]);
        assert_eq!(fail_n(&mut t, "alice", 5, 2000), vec![900]);
        assert_eq!(fail_n(&mut t, "alice", 5, 3000), vec![900]);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut t = Throttle::new(POLICY);
        for minute in 0..20 {
            // One failure every 2 minutes: never 5 within 5 minutes.
            assert_eq!(t.failed(&"alice", minute * 120), None, "minute {minute}");
        }
        assert_eq!(fail_n(&mut t, "alice", 2, 2400), Vec::<u64>::new());
        assert_eq!(
            t.failed(&"alice", 2401),
            Some(60),
            "two earlier, two at 2400 and this one: 5 within the window"
        );
    }

    #[test]
    fn a_long_quiet_spell_forgets_earlier_lockouts() {
        let mut t = Throttle::new(POLICY);
        assert_eq!(fail_n(&mut t, "alice", 5, 0), vec![60]);
        assert_eq!(fail_n(&mut t, "alice", 5, 100), vec![120]);
        let later = 100 + POLICY.forget_after + 1;
        assert_eq!(fail_n(&mut t, "alice", 5, later), vec![60]);
    }

    #[test]
    fn success_clears_the_history() {
        let mut t = Throttle::new(POLICY);
        fail_n(&mut t, "alice", 4, 0);
        t.succeeded(&"alice");
        assert_eq!(fail_n(&mut t, "alice", 4, 1), Vec::<u64>::new());
        assert_eq!(t.check(&"alice", 1), Ok(()));
    }

    #[test]
    fn the_map_is_bounded_and_evicts_stale_keys_first() {
        let mut t = Throttle::with_capacity(POLICY, 3);
        fail_n(&mut t, "old", 1, 0);
        fail_n(&mut t, "locked", 5, 5000);
        fail_n(&mut t, "recent", 1, 5000);
        // "old" is stale by now and goes first.
        fail_n(&mut t, "new", 1, 5001);
        assert_eq!(t.len(), 3);
        assert!(t.check(&"locked", 5001).is_err());
        // Nothing stale: the longest-quiet unlocked key goes, the map never grows past 3.
        for n in 0..100 {
            let key: &'static str = format!("flood{n}").leak();
            t.failed(&key, 5002);
        }
        assert_eq!(t.len(), 3);
        assert!(t.check(&"locked", 5002).is_err(), "locked keys are kept");
    }

    #[test]
    fn login_throttle_names_the_source_or_the_principal() {
        let mut t = LoginThrottle::default();
        let alice = PrincipalKey::User("alice".into());
        let source: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        for n in 0..4 {
            assert_eq!(t.failed(&alice, source, n), Lockouts::default());
        }
        let locked = t.failed(&alice, source, 4);
        assert_eq!(locked.principal, Some(60));
        assert_eq!(locked.source, None);
        let refused = t.check(&alice, other, 10).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many failed logins for user 'alice'; try again in 54 s"
        );

        // 20 failures from one address, spread over many usernames, lock the address out.
        for n in 0..15 {
            let key = PrincipalKey::User(format!("guess{n}"));
            t.failed(&key, source, 20);
        }
        let bob = PrincipalKey::User("bob".into());
        let refused = t.check(&bob, source, 21).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many failed logins from 10.0.0.7; try again in 59 s"
        );
        assert_eq!(t.check(&bob, other, 21), Ok(()));
        // A success clears the principal, not the source.
        t.succeeded(&bob);
        assert!(t.check(&bob, source, 21).is_err());
    }
}

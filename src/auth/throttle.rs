//! Failure throttling (logins and joins): after `limit` failures inside a window that starts with
//! the first failure, further attempts are refused until the window has passed.
//!
//! An attempt takes its failure slot *before* the check it guards (the password hash, the invite
//! lookup) and gives it back when the check succeeds or never ran ([`Attempt`]), so that 200
//! parallel wrong passwords for one login get at most `limit` answers and the rest 429. Each map
//! holds at most [`MAX_THROTTLE_KEYS`] keys; when it is full, new keys are refused (429) rather
//! than the map growing, and [`FailureThrottle::sweep`] (run every [`SWEEP_INTERVAL`]) forgets
//! windows that have passed.
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::error::ApiError;

/// Failed logins per login (case-folded) in [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed logins per client address in [`LOGIN_WINDOW`], across all logins: one address trying
/// one password on many logins (spraying) meets this long before any login's own limit.
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 100;
/// Failed joins per user in [`JOIN_WINDOW`].
pub const JOIN_FAILURES: u32 = 10;
pub const JOIN_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Failed joins per client address in [`JOIN_WINDOW`]: accounts are cheap, addresses less so.
pub const JOIN_FAILURES_PER_ADDRESS: u32 = 100;
/// Keys one throttle map holds at most (~100 bytes each). A full map refuses new keys with 429
/// until a sweep has made room: memory stays bounded whatever a client sends.
pub const MAX_THROTTLE_KEYS: usize = 100_000;
/// How often passed windows are forgotten.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

pub struct FailureThrottle<K: Eq + Hash> {
    limit: u32,
    window: Duration,
    max_keys: usize,
    failures: DashMap<K, Window>,
}

/// One attempt's failure slot. Dropping it gives the slot back (the check succeeded or never
/// ran); [`Attempt::failed`] keeps it.
pub struct Attempt<'a, K: Eq + Hash + Clone> {
    throttle: &'a FailureThrottle<K>,
    key: K,
    window_start: Instant,
    kept: bool,
}

impl<K: Eq + Hash + Clone> Attempt<'_, K> {
    /// The check failed: the slot stays taken until the window passes.
    pub fn failed(mut self) {
        self.kept = true;
    }

    /// The check succeeded and clears every failure of the key (a successful login forgives
    /// its earlier failures).
    pub fn clear(mut self) {
        self.kept = true;
        self.throttle.failures.remove(&self.key);
    }
}

impl<K: Eq + Hash + Clone> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Only a slot of the window it was taken in; a new window has not counted it.
        if let Some(mut window) = self.throttle.failures.get_mut(&self.key)
            && window.start == self.window_start
        {
            window.count = window.count.saturating_sub(1);
        }
    }
}

impl<K: Eq + Hash + Clone> FailureThrottle<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_THROTTLE_KEYS)
    }

    pub fn with_capacity(limit: u32, window: Duration, max_keys: usize) -> Self {
        FailureThrottle {
            limit,
            window,
            max_keys,
            failures: DashMap::new(),
        }
    }

    /// Takes a failure slot for `key`, or `Err(seconds to wait)` while the key is locked out or
    /// the map is full.
    pub fn attempt(&self, key: &K) -> Result<Attempt<'_, K>, u64> {
        let now = Instant::now();
        // `len` reads every shard, so it must not run while this key's shard is locked below.
        // Racing inserts may pass the cap by the number of requests in flight, no more.
        if !self.failures.contains_key(key) && self.failures.len() >= self.max_keys {
            return Err(SWEEP_INTERVAL.as_secs());
        }
        let mut window = self.failures.entry(key.clone()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now >= window.start + self.window {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        if window.count >= self.limit {
            let ends = window.start + self.window;
            return Err((ends - now).as_secs_f64().ceil() as u64);
        }
        window.count += 1;
        let window_start = window.start;
        drop(window);
        Ok(Attempt {
            throttle: self,
            key: key.clone(),
            window_start,
            kept: false,
        })
    }

    /// Forgets windows that have passed and keys whose slots were all given back.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.failures
            .retain(|_, w| w.count > 0 && now < w.start + self.window);
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The 429 for a throttled attempt.
pub fn too_many(retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests { retry_after_secs }
}

/// The key of a client address: IPv4 as it is, IPv6 by its /64 (one client usually holds a
/// whole /64, so single addresses would be free to rotate).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_reports_wait() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            throttle.attempt(&"a").expect("allowed").failed();
        }
        let wait = throttle.attempt(&"a").err().expect("locked");
        assert!((59..=60).contains(&wait));
        assert!(throttle.attempt(&"b").is_ok());
        // A slot given back (dropped) does not count.
        let attempt = throttle.attempt(&"c").expect("allowed");
        drop(attempt);
        for _ in 0..3 {
            throttle
                .attempt(&"c")
                .expect("refunded slots are free")
                .failed();
        }
        assert!(throttle.attempt(&"c").is_err());
    }

    #[test]
    fn slots_are_taken_before_the_check() {
        let throttle = FailureThrottle::new(10, Duration::from_secs(60));
        // 200 attempts in flight at once: only 10 get a slot.
        let held: Vec<_> = (0..200)
            .filter_map(|_| throttle.attempt(&"x").ok())
            .collect();
        assert_eq!(held.len(), 10);
        held.into_iter().for_each(Attempt::failed);
        assert!(throttle.attempt(&"x").is_err());
    }

    #[test]
    fn clear_forgives_and_sweep_forgets() {
        let throttle = FailureThrottle::new(2, Duration::from_millis(20));
        throttle.attempt(&1).expect("allowed").failed();
        throttle.attempt(&1).expect("allowed").clear();
        assert!(throttle.is_empty());
        throttle.attempt(&2).expect("allowed").failed();
        drop(throttle.attempt(&3).expect("allowed"));
        std::thread::sleep(Duration::from_millis(30));
        throttle.sweep();
        assert!(throttle.is_empty(), "passed and refunded windows are gone");
    }

    #[test]
    fn a_full_map_refuses_new_keys_only() {
        let throttle = FailureThrottle::with_capacity(5, Duration::from_secs(60), 3);
        for key in 0..3 {
            throttle.attempt(&key).expect("room").failed();
        }
        assert_eq!(throttle.attempt(&99).err(), Some(SWEEP_INTERVAL.as_secs()));
        assert!(throttle.attempt(&0).is_ok(), "known keys still count");
        assert_eq!(throttle.len(), 3);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}

//! Failure throttling (login and join): after `limit` failures inside a window that starts with the
//! first failure, further attempts are refused until the window has passed.
use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub struct FailureThrottle<K: Eq + Hash> {
    limit: u32,
    window: Duration,
    failures: DashMap<K, (Instant, u32)>,
}

impl<K: Eq + Hash + Clone> FailureThrottle<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureThrottle {
            limit,
            window,
            failures: DashMap::new(),
        }
    }

    /// `Err(seconds to wait)` while the key is locked out.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        if let Some(entry) = self.failures.get(key) {
            let (start, count) = *entry;
            let ends = start + self.window;
            if count >= self.limit && now < ends {
                return Err((ends - now).as_secs_f64().ceil() as u64);
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, key: &K) {
        let now = Instant::now();
        let mut entry = self.failures.entry(key.clone()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        drop(entry);
        // Keep memory bounded by forgetting windows that have passed.
        if self.failures.len() > 10_000 {
            self.failures
                .retain(|_, (start, _)| now < *start + self.window);
        }
    }

    pub fn clear(&self, key: &K) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_limit_and_reports_wait() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(throttle.check(&"a").is_ok());
            throttle.record_failure(&"a");
        }
        let wait = throttle.check(&"a").unwrap_err();
        assert!((59..=60).contains(&wait));
        assert!(throttle.check(&"b").is_ok());
        throttle.clear(&"a");
        assert!(throttle.check(&"a").is_ok());
    }
}

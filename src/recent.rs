//! A bounded map of the most recently used keys: what the FamilyBoard remembers of idempotency
//! keys and the ChatRoom of client ids. The oldest key is forgotten first; what is forgotten is
//! found in the database.
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct RecentKeys<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
    /// Whether a key was ever forgotten (so a miss may still be in the database).
    evicted: bool,
}

impl<K: Clone + Eq + Hash, V> RecentKeys<K, V> {
    pub fn new(capacity: usize) -> Self {
        RecentKeys {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            evicted: false,
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Remembers `value` for `key` (a known key keeps its place), forgetting the oldest keys
    /// past the capacity.
    pub fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
                self.evicted = true;
            }
        }
    }

    /// Whether a key was forgotten since this map was made.
    pub fn evicted(&self) -> bool {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::RecentKeys;

    #[test]
    fn forgets_the_oldest_first() {
        let mut keys = RecentKeys::new(2);
        keys.insert("a", 1);
        keys.insert("b", 2);
        keys.insert("a", 3);
        assert!(!keys.evicted());
        keys.insert("c", 4);
        assert_eq!(keys.get(&"a"), None);
        assert_eq!(keys.get(&"b"), Some(&2));
        assert_eq!(keys.get(&"c"), Some(&4));
        assert_eq!(keys.len(), 2);
        assert!(keys.evicted());
    }
}

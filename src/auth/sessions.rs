//! Long-lived sessions (SSE streams, chat sockets): at most `--max-sessions-per-user` of each
//! kind per user, and each ends when its token is revoked or expires.
//!
//! A session holds a [`SessionLease`] for as long as it is open: its slot and its registration
//! with its token (which closes it on revocation), so whatever ends the session (the client, the
//! server, the token) gives both back when it is dropped. Expiry is the session's own timer
//! (`revocation::token_ends_at`), the one it pings with.
use std::sync::Arc;

use actix_web::http::StatusCode;
use dashmap::DashMap;

use super::revocation::TokenWatch;
use crate::error::{ApiError, ErrorCode};

/// Open sessions of one kind, per user.
pub struct SessionSlots {
    max: usize,
    kind: &'static str,
    open: Arc<DashMap<i64, usize>>,
}

/// One open session's place among its user's; given back when dropped.
pub struct SessionSlot {
    open: Arc<DashMap<i64, usize>>,
    user_id: i64,
}

impl SessionSlots {
    pub fn new(kind: &'static str, max: usize) -> SessionSlots {
        SessionSlots {
            max,
            kind,
            open: Arc::default(),
        }
    }

    /// A slot for one more session of `user_id`, or 429 `too_many_sessions`.
    pub fn take(&self, user_id: i64) -> Result<SessionSlot, ApiError> {
        let mut open = self.open.entry(user_id).or_insert(0);
        if *open >= self.max {
            let none_open = *open == 0;
            drop(open);
            if none_open {
                self.open.remove_if(&user_id, |_, n| *n == 0);
            }
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManySessions,
                format!(
                    "at most {} {} may be open per user; close one first",
                    self.max, self.kind
                ),
            ));
        }
        *open += 1;
        Ok(SessionSlot {
            open: self.open.clone(),
            user_id,
        })
    }

    /// Sessions open for `user_id`.
    pub fn open(&self, user_id: i64) -> usize {
        self.open.get(&user_id).map_or(0, |n| *n)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let emptied = match self.open.get_mut(&self.user_id) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if emptied {
            self.open.remove_if(&self.user_id, |_, n| *n == 0);
        }
    }
}

/// An open session's slot and its registration with its token; both go back when it is dropped.
pub struct SessionLease {
    _slot: SessionSlot,
    _watch: TokenWatch,
}

impl SessionLease {
    pub fn new(slot: SessionSlot, watch: TokenWatch) -> SessionLease {
        SessionLease {
            _slot: slot,
            _watch: watch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_given_back() {
        let slots = SessionSlots::new("streams", 2);
        let a = slots.take(1).expect("first");
        let b = slots.take(1).expect("second");
        let refused = slots.take(1).err().map(|e| e.code());
        assert_eq!(refused, Some(crate::error::ErrorCode::TooManySessions));
        let other = slots.take(2).expect("another user");
        drop(a);
        let c = slots.take(1).expect("a freed slot");
        drop((b, c, other));
        assert_eq!(slots.open(1), 0);
        assert!(slots.open.is_empty(), "no entries left behind");
        let none = SessionSlots::new("streams", 0);
        assert!(none.take(3).is_err());
        assert!(none.open.is_empty());
    }
}

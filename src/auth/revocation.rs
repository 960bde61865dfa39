//! Revoked tokens: stored in `revoked_tokens` (so a logout holds after a restart and on every
//! server process of the database) and kept in memory, so that checking a request costs no query.
//!
//! Other processes' logouts are picked up by reading the rows added since the last look, at most
//! once per [`REFRESH_INTERVAL`] and only when a request asks (an idle server sends no
//! statements). Open streams and sockets register with their token: a revocation seen here,
//! whether by this process's logout or a refresh, ends them at once.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::error::ApiError;
use crate::model;
use crate::store::Db;
use crate::store::entities::revoked_token;

/// How stale this process's view of other processes' logouts may get.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Rows re-read below the newest id seen: on PostgreSQL a row with a smaller id can commit after
/// one with a larger id, and would otherwise be missed.
const REREAD_ROWS: i64 = 64;
/// How often expired rows are deleted (by whichever process refreshes).
const DB_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

struct Cursor {
    newest_id: i64,
    db_swept: Instant,
}

pub struct Revocations {
    db: Db,
    /// Token id → its `exp` (Unix seconds), until it expires.
    revoked: DashMap<String, i64>,
    /// Token id → its open sessions' closers; present only while some are open.
    live: Arc<Live>,
    started: Instant,
    /// Milliseconds after `started` of the last refresh.
    refreshed_ms: AtomicU64,
    cursor: tokio::sync::Mutex<Cursor>,
}

/// How long a request may wait for the refresh it triggered (a healthy one takes about a
/// millisecond; an unreachable database must not add its 5 s to every request).
const REFRESH_TIMEOUT: Duration = Duration::from_millis(250);

impl Revocations {
    /// Reads every revocation that has not expired yet.
    pub async fn load(db: Db) -> Result<Revocations, sea_orm::DbErr> {
        let now = model::now().timestamp();
        let rows = revoked_token::Entity::find()
            .filter(revoked_token::Column::ExpiresAt.gt(now))
            .all(&db.read)
            .await?;
        let newest = revoked_token::Entity::find()
            .order_by_desc(revoked_token::Column::Id)
            .one(&db.read)
            .await?
            .map_or(0, |r| r.id);
        let revoked = rows.into_iter().map(|r| (r.jti, r.expires_at)).collect();
        Ok(Revocations {
            db,
            revoked,
            live: Arc::default(),
            started: Instant::now(),
            refreshed_ms: AtomicU64::new(0),
            cursor: tokio::sync::Mutex::new(Cursor {
                newest_id: newest,
                db_swept: Instant::now(),
            }),
        })
    }

    /// Whether the token `id` was revoked here or (up to [`REFRESH_INTERVAL`] ago) anywhere.
    /// While the database is out of reach, what is known is used: every revocation made by this
    /// process, and those of other processes up to the last refresh that worked. (Refusing every
    /// request instead would turn a database outage into an outage of reads that need no
    /// database.)
    pub async fn is_revoked(&self, id: &str) -> Result<bool, ApiError> {
        if self.revoked.contains_key(id) {
            return Ok(true);
        }
        match tokio::time::timeout(REFRESH_TIMEOUT, self.refresh_if_stale()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                log::warn!("token revocations not refreshed ({err}); using what is known")
            }
            Err(_) => {
                self.refreshed_ms
                    .store(self.elapsed_ms(), Ordering::Release);
                log::warn!(
                    "token revocations not refreshed within {REFRESH_TIMEOUT:?}; using what is known"
                );
            }
        }
        Ok(self.revoked.contains_key(id))
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn refresh_if_stale(&self) -> Result<(), ApiError> {
        let interval = REFRESH_INTERVAL.as_millis() as u64;
        if self.elapsed_ms() < self.refreshed_ms.load(Ordering::Acquire) + interval {
            return Ok(());
        }
        // One refresh at a time; a request that finds one under way uses what is known rather
        // than wait for it (a refresh that hangs must not hold every request).
        let Ok(mut cursor) = self.cursor.try_lock() else {
            return Ok(());
        };
        if self.elapsed_ms() < self.refreshed_ms.load(Ordering::Acquire) + interval {
            return Ok(());
        }
        let read = revoked_token::Entity::find()
            .filter(revoked_token::Column::Id.gt(cursor.newest_id - REREAD_ROWS))
            .order_by_asc(revoked_token::Column::Id)
            .all(&self.db.read)
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(err) => {
                // Try again one interval later, not on every request.
                self.refreshed_ms
                    .store(self.elapsed_ms(), Ordering::Release);
                return Err(err.into());
            }
        };
        for row in rows {
            cursor.newest_id = cursor.newest_id.max(row.id);
            self.remember(row.jti, row.expires_at);
        }
        if cursor.db_swept.elapsed() >= DB_SWEEP_INTERVAL {
            cursor.db_swept = Instant::now();
            let expired = revoked_token::Entity::delete_many()
                .filter(revoked_token::Column::ExpiresAt.lt(model::now().timestamp()))
                .exec(&self.db.write)
                .await?;
            log::debug!(
                "deleted {} expired token revocations",
                expired.rows_affected
            );
        }
        self.refreshed_ms
            .store(self.elapsed_ms(), Ordering::Release);
        Ok(())
    }

    fn remember(&self, id: String, exp: i64) {
        if exp <= model::now().timestamp() {
            return;
        }
        // Stored before the sessions are told: a session registering meanwhile sees one or
        // the other (`watch`).
        self.revoked.insert(id.clone(), exp);
        if let Some((_, sessions)) = self.live.remove(&id) {
            for (_, close) in sessions {
                close();
            }
        }
    }

    /// Revokes the token `id` of `user_id` (valid until `exp`): stored first, then its open
    /// sessions end.
    pub async fn revoke(&self, id: &str, user_id: i64, exp: i64) -> Result<(), ApiError> {
        let row = revoked_token::ActiveModel {
            jti: Set(id.to_owned()),
            user_id: Set(user_id),
            expires_at: Set(exp),
            revoked_at: Set(model::now()),
            ..Default::default()
        };
        // A second logout of the token (racing, or from another process) stores nothing new.
        revoked_token::Entity::insert(row)
            .on_conflict_do_nothing_on([revoked_token::Column::Jti])
            .exec(&self.db.write)
            .await?;
        self.remember(id.to_owned(), exp);
        Ok(())
    }

    /// Forgets revocations of tokens that have expired (they fail verification anyway).
    pub fn sweep(&self) {
        let now = model::now().timestamp();
        self.revoked.retain(|_, exp| *exp > now);
        // Two last sessions of a token ending at the same instant may both leave the entry.
        self.live.retain(|_, sessions| !sessions.is_empty());
    }

    /// Registers an open stream or socket of the token `id`: `close` is called once, when the
    /// token is revoked (here, or by another process and seen at a refresh), or at once if it
    /// is revoked already. The registration ends when the returned [`TokenWatch`] is dropped.
    /// (Expiry is the session's own business: [`token_ends_at`].) A session costs this map one
    /// entry of its token and nothing that is polled: no channel, no future (issue #21).
    pub fn watch(&self, id: &str, close: impl FnOnce() + Send + Sync + 'static) -> TokenWatch {
        let key = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
        self.live
            .entry(id.to_owned())
            .or_default()
            .push((key, Box::new(close)));
        let watch = TokenWatch {
            id: id.to_owned(),
            key,
            live: self.live.clone(),
        };
        // A revocation between the request's check and the registration above is seen here;
        // whichever of the two takes the closer out of the map calls it.
        if self.revoked.contains_key(id)
            && let Some(close) = watch.take()
        {
            close();
        }
        watch
    }
}

/// When a token valid until `exp` (Unix seconds) ends: it is accepted through the whole second
/// `exp` (jsonwebtoken refuses `exp < now` in whole seconds), so it ends when the next second
/// begins.
pub fn token_ends_at(exp: i64) -> tokio::time::Instant {
    let ends_ms = exp.saturating_add(1).saturating_mul(1000);
    let left = Duration::from_millis(
        ends_ms
            .saturating_sub(model::now().timestamp_millis())
            .max(0) as u64,
    );
    tokio::time::Instant::now() + left
}

/// What ends a session when its token is revoked.
type Closer = Box<dyn FnOnce() + Send + Sync>;

/// Open sessions per token id, each with its closer.
type Live = DashMap<String, Vec<(u64, Closer)>>;

static NEXT_WATCH: AtomicU64 = AtomicU64::new(1);

/// An open session's registration with its token; dropping it unregisters the session (the
/// token's entry goes with its last session).
pub struct TokenWatch {
    id: String,
    key: u64,
    live: Arc<Live>,
}

impl TokenWatch {
    /// Takes this session's closer out of the map, if a revocation has not taken it already.
    fn take(&self) -> Option<Closer> {
        let mut sessions = self.live.get_mut(&self.id)?;
        let at = sessions.iter().position(|(key, _)| *key == self.key)?;
        let (_, close) = sessions.swap_remove(at);
        Some(close)
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        drop(self.take());
        self.live
            .remove_if(&self.id, |_, sessions| sessions.is_empty());
    }
}

//! Which database errors mean "the database is not available" rather than "this write is wrong",
//! and the health of the write path that `/healthz` reports.
//!
//! One place decides: [`fault_of`] is used by the API error conversion (`From<DbErr> for
//! ApiError`) and by the Persister, so a connection that was reset, a pool that timed out, a
//! statement the server cancelled or a full disk answer 503 `unavailable` (507 `storage_full`)
//! everywhere, never 500.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{DbErr, RuntimeErr};

/// How long one database operation may take before podo gives up on it: acquiring a
/// connection from the pool, a statement on PostgreSQL (`statement_timeout`), a transaction left
/// idle (`idle_in_transaction_session_timeout`), and a whole group commit of the Persister.
///
/// Why 5 s: a healthy commit takes well under 10 ms here (p99 of the chat benchmark 7–9 ms, WAL
/// restarts ~70 ms), so 5 s is far outside normal operation and only a database that hangs or a
/// network that black-holes gets there. It is also what the contract promises a client at most
/// waits for a 503 while the database is away (API.md "Errors"), and short enough that the
/// Persister (one commit at a time for the whole process) does not hold every writer for long.
pub const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure of the database rather than of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Unreachable, timed out, connection lost, or refusing work (503 `unavailable`).
    Unavailable,
    /// The disk (or the database's size limit) is full (507 `storage_full`).
    StorageFull,
}

/// Classifies a database error; `None` for errors of the write itself (constraints, bad SQL).
pub fn fault_of(err: &DbErr) -> Option<Fault> {
    match err {
        DbErr::ConnectionAcquire(_) => Some(Fault::Unavailable),
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => match runtime {
            RuntimeErr::SqlxError(sqlx) => sqlx_fault(sqlx),
            RuntimeErr::Internal(_) => None,
        },
        _ => None,
    }
}

fn sqlx_fault(err: &sea_orm::SqlxError) -> Option<Fault> {
    use sea_orm::SqlxError as E;
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => Some(Fault::Unavailable),
        E::Database(db) => {
            let code = db.code()?;
            if db
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some()
            {
                sqlite_fault(code.parse().ok()?)
            } else {
                postgres_fault(&code)
            }
        }
        _ => None,
    }
}

/// SQLite (extended) result codes: the primary code is the low byte.
fn sqlite_fault(code: i32) -> Option<Fault> {
    match code & 0xff {
        13 => Some(Fault::StorageFull), // SQLITE_FULL
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PROTOCOL
        5 | 6 | 10 | 14 | 15 => Some(Fault::Unavailable),
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs.
fn postgres_fault(code: &str) -> Option<Fault> {
    match code {
        "53100" => Some(Fault::StorageFull), // disk_full
        // connection exceptions, insufficient resources, operator intervention (shutdown,
        // statement_timeout's query_canceled), idle_in_transaction_session_timeout
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
            Some(Fault::Unavailable)
        }
        "25P03" => Some(Fault::Unavailable),
        _ => None,
    }
}

/// Seconds without a successful write, while writes wait, after which `/healthz` says 503.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);
/// After a failed write, `/healthz` tries a small write of its own at most this often, so it
/// notices the database is back even when no client writes. Not at once: right after a failure
/// it reports the failure.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);

/// What the Persister saw of its commits, for `/healthz`. Updated once per batch (atomics), not
/// per row.
#[derive(Default)]
pub struct WriteHealth {
    started: OnceInstant,
    /// The last write attempt failed because of the database ([`Fault`]), not of its rows.
    last_failed: AtomicBool,
    /// Milliseconds since `started` of the last successful commit (or of the start).
    last_success_ms: AtomicU64,
    /// Writes queued or committing in the Persister.
    waiting: AtomicUsize,
    /// Milliseconds since `started` when `waiting` last became non-zero.
    waiting_since_ms: AtomicU64,
    /// Milliseconds since `started` of the last failure, or of the last probe.
    last_try_ms: AtomicU64,
}

#[derive(Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

impl WriteHealth {
    pub fn new() -> Arc<Self> {
        let health = WriteHealth::default();
        health.started.get();
        Arc::new(health)
    }

    fn now_ms(&self) -> u64 {
        self.started.get().elapsed().as_millis() as u64
    }

    pub fn succeeded(&self) {
        self.last_success_ms.store(self.now_ms(), Ordering::Relaxed);
        self.last_failed.store(false, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.last_try_ms.store(self.now_ms(), Ordering::Relaxed);
        self.last_failed.store(true, Ordering::Relaxed);
    }

    /// Whether `/healthz` should probe with a write now (the last write failed at least
    /// [`PROBE_EVERY`] ago, and no other probe started since); claims the probe.
    pub fn claim_probe(&self) -> bool {
        if !self.last_failed.load(Ordering::Relaxed) {
            return false;
        }
        let now = self.now_ms();
        let last = self.last_try_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64
            && self
                .last_try_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn set_waiting(&self, writes: usize) {
        let before = self.waiting.swap(writes, Ordering::Relaxed);
        if before == 0 && writes > 0 {
            self.waiting_since_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Why writes are not healthy, if they are not.
    pub fn problem(&self) -> Option<&'static str> {
        if self.last_failed.load(Ordering::Relaxed) {
            return Some("the last write to the database failed");
        }
        // Since the later of the last success and the moment writes started waiting: an idle
        // server's first write is not a stall.
        let since = self.now_ms().saturating_sub(
            self.last_success_ms
                .load(Ordering::Relaxed)
                .max(self.waiting_since_ms.load(Ordering::Relaxed)),
        );
        if self.waiting.load(Ordering::Relaxed) > 0 && since >= STALLED_AFTER.as_millis() as u64 {
            return Some("no write succeeded for 10 s while writes were waiting");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes() {
        assert_eq!(sqlite_fault(13), Some(Fault::StorageFull));
        assert_eq!(sqlite_fault(10 | (4 << 8)), Some(Fault::Unavailable));
        assert_eq!(sqlite_fault(19), None); // SQLITE_CONSTRAINT
        assert_eq!(sqlite_fault(2067), None); // SQLITE_CONSTRAINT_UNIQUE
    }

    #[test]
    fn postgres_codes() {
        assert_eq!(postgres_fault("53100"), Some(Fault::StorageFull));
        assert_eq!(postgres_fault("08006"), Some(Fault::Unavailable));
        assert_eq!(postgres_fault("57014"), Some(Fault::Unavailable));
        assert_eq!(postgres_fault("57P01"), Some(Fault::Unavailable));
        assert_eq!(postgres_fault("25P03"), Some(Fault::Unavailable));
        assert_eq!(postgres_fault("23505"), None);
        assert_eq!(postgres_fault("40001"), None);
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let err = DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout);
        assert_eq!(fault_of(&err), Some(Fault::Unavailable));
    }

    #[test]
    fn health_turns_on_failure_and_back() {
        let health = WriteHealth::new();
        assert_eq!(health.problem(), None);
        health.failed();
        assert!(health.problem().is_some());
        health.succeeded();
        assert_eq!(health.problem(), None);
    }

    #[test]
    fn a_write_after_a_quiet_spell_is_no_stall() {
        // Pretend the server has been idle for a minute.
        let long_ago = WriteHealth {
            started: OnceInstant(std::sync::OnceLock::from(
                Instant::now() - Duration::from_secs(60),
            )),
            ..WriteHealth::default()
        };
        long_ago.set_waiting(1);
        assert_eq!(long_ago.problem(), None);
        long_ago
            .waiting_since_ms
            .store(long_ago.now_ms() - 11_000, Ordering::Relaxed);
        assert!(long_ago.problem().is_some());
        long_ago.set_waiting(0);
        assert_eq!(long_ago.problem(), None);
    }
}

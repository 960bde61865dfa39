//! SQLite specifics: the connection pragmas and the WAL checkpoint statements (the Checkpointer
//! and the Persister run them; see `store::checkpoint` for why checkpoints are off the write path).
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, DbBackend, DbErr, Statement};

use super::fault::DB_TIMEOUT;

/// Page cache of each connection that only reads (the read pool's and the Checkpointer's), in
/// KiB. Under WAL a connection drops its whole cache when it begins a read after another
/// connection committed, so while anything writes a reader's cache seldom serves a page twice;
/// at SQLite's default of 2 MiB each, the five readers kept ~6 MB of such pages resident after
/// a burst of reads (2,000 sockets connecting: ~3 KiB of every socket's share, issue #21). The
/// file's pages stay in the kernel's page cache either way. The writer keeps the default: its
/// own commits do not drop its cache.
pub const READER_CACHE_KIB: u32 = 256;

/// Who uses the connections: the writer turns SQLite's automatic WAL checkpoint off (the
/// Checkpointer does it); readers get a small page cache ([`READER_CACHE_KIB`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Write,
    Read,
}

pub fn options(url: &str, connections: u32, role: Role) -> ConnectOptions {
    let mut url = url.to_owned();
    if !url.contains("mode=") {
        url.push_str(if url.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(DB_TIMEOUT)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            let opts = opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // A multi-row statement inside a transaction keeps a statement journal (to undo
                // itself alone on a constraint error); past 64 KiB SQLite spills it to a temp
                // file, a write syscall per page. `perf` put ~6 % of the server's CPU there
                // under board load; in memory the Persister's batches commit ~15 % sooner.
                .pragma("temp_store", "memory")
                // Set when SQLite creates the file (an existing file keeps its own). Each commit
                // writes every page it changed to the WAL, and a chat message or board change
                // changes a leaf in each of two or three indexes, at random places in the file:
                // with 1 KiB pages a chat message at 10k msgs/s wrote ~4 KiB of WAL instead of
                // ~10.7 KiB with 4 KiB pages, checkpoints copy less, and commits got cheaper
                // (board benchmark 28.8–29.2k against 26.5–27.8k changes/s).
                .page_size(1024);
            match role {
                Role::Write => opts.pragma("wal_autocheckpoint", "0"),
                Role::Read => opts.pragma("cache_size", format!("-{READER_CACHE_KIB}")),
            }
        });
    options
}

/// The database's page size: the size of a WAL frame's page.
pub async fn page_size(conn: &impl ConnectionTrait) -> Result<i64, DbErr> {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Sqlite,
        "PRAGMA page_size",
    ))
    .await?
    .ok_or_else(|| DbErr::Custom("page_size returned no row".to_owned()))?
    .try_get_by_index(0)
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)`; returns the frames in the WAL and the frames copied.
pub async fn passive_checkpoint(conn: &impl ConnectionTrait) -> Result<(i64, i64), DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(PASSIVE)",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("wal_checkpoint returned no row".to_owned()))?;
    Ok((row.try_get_by_index(1)?, row.try_get_by_index(2)?))
}

//! SQLite specifics: the connection pragmas and the WAL checkpoint statements (the Checkpointer
//! and the Persister run them; see `store::checkpoint` for why checkpoints are off the write path).
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, DbBackend, DbErr, Statement};

use super::fault::DB_TIMEOUT;

/// `autocheckpoint: false` turns SQLite's automatic WAL checkpoint off on these connections.
pub fn options(url: &str, connections: u32, autocheckpoint: bool) -> ConnectOptions {
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
            if autocheckpoint {
                opts
            } else {
                opts.pragma("wal_autocheckpoint", "0")
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

//! Storage: connections, migrations, entities, the Persister (group commit) and read queries.
pub mod board_writes;
pub mod chat_writes;
pub mod checkpoint;
pub mod entities;
pub mod error;
pub mod fault;
pub mod persister;
pub mod seqs;
mod sql;
pub mod sqlite;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    Statement,
};

pub use error::StoreError;
pub use fault::{DB_TIMEOUT, Fault, WriteHealth, fault_of};
pub use sql::BatchSql;

use entities::setting;

/// Runs a database read as a task of its own; the caller awaits its result.
///
/// For the reads an actor runs beside its message handling (`ctx.spawn`): actix does not poll
/// an actor's spawned futures while it waits on another one (`ctx.wait`, `AtomicResponse`), so a
/// query inside one keeps its pooled connection checked out meanwhile. Enough such actors empty
/// the pool while the futures they wait on need a connection: a deadlock until the pool's
/// timeout (seen with two cluster nodes under load). A task of its own runs to the end and gives
/// the connection back; a task that panicked answers [`StoreError::Database`].
pub async fn detached<T: 'static>(
    read: impl std::future::Future<Output = Result<T, StoreError>> + 'static,
) -> Result<T, StoreError> {
    actix::spawn(read)
        .await
        .unwrap_or_else(|err| Err(StoreError::Database(format!("a read task ended: {err}"))))
}

/// PostgreSQL connections for writes (the Persister's group commits, the API's direct writes).
pub const PG_WRITE_CONNECTIONS: u32 = 4;
/// PostgreSQL connections for reads.
pub const PG_READ_CONNECTIONS: u32 = 16;

/// A PostgreSQL pool of at most `max` connections with the timeouts of [`DB_TIMEOUT`].
fn pg_options(url: &str, max: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max)
        .min_connections(1)
        // A pool that cannot hand out a connection (database down, network black-holed)
        // answers 503 after DB_TIMEOUT instead of holding the request.
        .acquire_timeout(DB_TIMEOUT)
        .connect_timeout(DB_TIMEOUT)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(|opts| {
            // The server side of the same bound: a statement that runs longer, or a transaction
            // whose client went silent, is ended by PostgreSQL itself and releases its locks,
            // even when podo's side of the connection is gone.
            let ms = DB_TIMEOUT.as_millis().to_string();
            opts.options([
                ("statement_timeout", ms.as_str()),
                ("idle_in_transaction_session_timeout", ms.as_str()),
            ])
        });
    options
}

/// The database: a writer and readers. On SQLite the writer is one connection (SQLite has one
/// writer anyway, and a single in-process writer never meets `SQLITE_BUSY` on lock upgrade) and
/// readers run beside it under WAL; on PostgreSQL they are two pools
/// ([`PG_WRITE_CONNECTIONS`], [`PG_READ_CONNECTIONS`]). SQLite also gets a
/// connection of its own for WAL checkpoints, which the writer leaves to it (see `checkpoint`).
#[derive(Clone)]
pub struct Db {
    pub write: DatabaseConnection,
    pub read: DatabaseConnection,
    pub checkpoint: Option<DatabaseConnection>,
    /// What the Persister saw of its last commits (`/healthz`).
    pub health: std::sync::Arc<WriteHealth>,
}

impl Db {
    /// Closes every connection (at shutdown, once nothing writes any more).
    pub async fn close(&self) {
        let pools = [
            Some(&self.write),
            Some(&self.read),
            self.checkpoint.as_ref(),
        ];
        for conn in pools.into_iter().flatten() {
            if let Err(err) = conn.close_by_ref().await {
                log::warn!("closing the database: {err}");
            }
        }
    }

    pub async fn connect(url: &str) -> Result<Db, DbErr> {
        if url.starts_with("sqlite:") {
            ensure_sqlite_dir(url);
            let write = Database::connect(sqlite::options(url, 1, sqlite::Role::Write)).await?;
            // Readers connect after the writer created the file and switched it to WAL.
            let read = Database::connect(sqlite::options(url, 4, sqlite::Role::Read)).await?;
            let checkpoint = Database::connect(sqlite::options(url, 1, sqlite::Role::Read)).await?;
            Ok(Db {
                write,
                read,
                checkpoint: Some(checkpoint),
                health: WriteHealth::new(),
            })
        } else {
            // Two pools, so that a burst of reads (a cluster's catch-ups, many requests) never
            // makes a commit wait for a connection, and the reverse.
            let write = Database::connect(pg_options(url, PG_WRITE_CONNECTIONS)).await?;
            let read = Database::connect(pg_options(url, PG_READ_CONNECTIONS)).await?;
            Ok(Db {
                write,
                read,
                checkpoint: None,
                health: WriteHealth::new(),
            })
        }
    }

    /// Counts every statement sent (reads and writes) in `metrics.db_statements`.
    pub fn count_statements(&mut self, metrics: &std::sync::Arc<crate::metrics::Metrics>) {
        for conn in [&mut self.write, &mut self.read] {
            let metrics = metrics.clone();
            conn.set_metric_callback(move |_| {
                metrics
                    .db_statements
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }

    pub fn backend(&self) -> DbBackend {
        self.write.get_database_backend()
    }

    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.write, None).await
    }

    /// Whether the database answers a read within [`HEALTH_TIMEOUT`].
    pub async fn ping(&self) -> Result<(), DbErr> {
        let ping = self
            .read
            .execute_raw(Statement::from_string(self.backend(), "SELECT 1"));
        match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(DbErr::ConnectionAcquire(
                sea_orm::error::ConnAcquireErr::Timeout,
            )),
        }
    }

    /// A small write on the writer (the `health_probe` setting), within [`HEALTH_TIMEOUT`]; a
    /// success counts as a successful write for [`WriteHealth`].
    pub async fn probe_write(&self) -> Result<(), DbErr> {
        let sql = BatchSql::new(self.backend());
        let upsert = format!(
            "INSERT INTO settings (key, value) VALUES ('health_probe', {}) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            sql.placeholder(1)
        );
        let write = self.write.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            upsert,
            [chrono::Utc::now().to_rfc3339().into()],
        ));
        match tokio::time::timeout(HEALTH_TIMEOUT, write).await {
            Ok(Ok(_)) => {
                self.health.succeeded();
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(DbErr::ConnectionAcquire(
                sea_orm::error::ConnAcquireErr::Timeout,
            )),
        }
    }

    /// Reads a setting, or stores `make()` under `key` if there is none yet. When two processes
    /// race on first start, both end up with the value that was stored first.
    pub async fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, DbErr> {
        if let Some(row) = setting::Entity::find_by_id(key.to_owned())
            .one(&self.write)
            .await?
        {
            return Ok(row.value);
        }
        let sql = BatchSql::new(self.backend());
        let insert = format!(
            "INSERT INTO settings (key, value) VALUES ({}, {}) ON CONFLICT (key) DO NOTHING",
            sql.placeholder(1),
            sql.placeholder(2)
        );
        self.write
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                insert,
                [key.into(), make().into()],
            ))
            .await?;
        setting::Entity::find_by_id(key.to_owned())
            .one(&self.write)
            .await?
            .map(|row| row.value)
            .ok_or_else(|| DbErr::RecordNotFound(format!("setting {key}")))
    }
}

/// How long `/healthz` waits for the database: well inside the 5 s in which it must answer.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates the directory of a `sqlite://path/to/file.db` URL so the first start just works.
fn ensure_sqlite_dir(url: &str) {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return;
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
        && let Err(err) = std::fs::create_dir_all(dir)
    {
        log::warn!("could not create {}: {err}", dir.display());
    }
}

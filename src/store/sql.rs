//! Raw SQL pieces that differ per backend: placeholders and typed casts.
use std::fmt::Write;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, Value};

use super::error::{PersistError, StoreError};
use super::fault::{Fault, fault_of};

/// Builds placeholders for hand-written statements (multi-row batches, conditional updates).
#[derive(Clone, Copy)]
pub struct BatchSql {
    backend: DbBackend,
}

impl BatchSql {
    pub fn new(backend: DbBackend) -> Self {
        BatchSql { backend }
    }

    /// The `n`th (1-based) parameter.
    pub fn placeholder(&self, n: usize) -> String {
        match self.backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }

    /// `(p1, p2, ...), (...)` for `rows` rows of the given column types, numbering from 1. On
    /// PostgreSQL each parameter carries its type (`$1::bigint`), which a `VALUES` list cannot
    /// infer; `types` are e.g. `bigint`, `integer`, `text`, `timestamptz`.
    pub fn values_rows(&self, rows: usize, types: &[&str]) -> String {
        let mut out = String::with_capacity(rows * types.len() * 8);
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            out.push('(');
            for (i, ty) in types.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                n += 1;
                match self.backend {
                    DbBackend::Postgres => {
                        let _ = write!(out, "${n}::{ty}");
                    }
                    _ => out.push('?'),
                }
            }
            out.push(')');
        }
        out
    }
}

/// Rows per multi-row statement, largest first: powers of two, so any batch takes at most one
/// statement of each size (300 rows: 256 + 32 + 8 + 4) and the prepared statements stay few.
/// The largest keeps the widest statement (11 columns) far below SQLite's 32,766 parameters.
pub const CHUNKS: [usize; 11] = [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Why a batch did not commit as a whole.
pub enum BatchFailure {
    Conflict,
    Database(DbErr),
    /// The commit did not finish within [`DB_TIMEOUT`].
    TimedOut,
}

impl BatchFailure {
    /// The error for every write of the batch when the database failed rather than a write.
    pub fn fault_error(&self) -> Option<PersistError> {
        match self {
            BatchFailure::Conflict => None,
            BatchFailure::TimedOut => Some(PersistError::Store(StoreError::Uncertain)),
            BatchFailure::Database(err) => match fault_of(err)? {
                Fault::StorageFull => Some(PersistError::Store(StoreError::StorageFull(
                    err.to_string(),
                ))),
                // No connection was had: nothing was sent, nothing applied.
                Fault::Unavailable if matches!(err, DbErr::ConnectionAcquire(_)) => Some(
                    PersistError::Store(StoreError::Unavailable(err.to_string())),
                ),
                // The connection failed on the way: perhaps during COMMIT.
                Fault::Unavailable => Some(PersistError::Store(StoreError::Uncertain)),
            },
        }
    }

    pub fn into_error(self) -> PersistError {
        if let Some(error) = self.fault_error() {
            return error;
        }
        match self {
            BatchFailure::Conflict => PersistError::Conflict,
            BatchFailure::Database(err) => {
                PersistError::Store(StoreError::Database(err.to_string()))
            }
            BatchFailure::TimedOut => PersistError::Store(StoreError::Uncertain),
        }
    }
}

impl From<DbErr> for BatchFailure {
    fn from(err: DbErr) -> Self {
        BatchFailure::Database(err)
    }
}

pub async fn exec(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    sql: String,
    values: Vec<Value>,
) -> Result<u64, DbErr> {
    Ok(txn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .rows_affected())
}

/// Runs `statement(n)` over `rows` in chunks of the sizes in [`CHUNKS`]; returns rows affected.
pub async fn exec_chunked(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    rows: Vec<Vec<Value>>,
    statement: impl Fn(usize) -> String,
) -> Result<u64, DbErr> {
    let mut affected = 0;
    let mut rows = rows.into_iter();
    while rows.len() > 0 {
        let n = CHUNKS.into_iter().find(|&n| n <= rows.len()).unwrap_or(1);
        let values: Vec<Value> = rows.by_ref().take(n).flatten().collect();
        affected += exec(txn, backend, statement(n), values).await?;
    }
    Ok(affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_and_types_placeholders() {
        let sql = BatchSql::new(DbBackend::Postgres);
        assert_eq!(
            sql.values_rows(2, &["bigint", "text"]),
            "($1::bigint, $2::text), ($3::bigint, $4::text)"
        );
    }

    #[test]
    fn sqlite_uses_question_marks() {
        let sql = BatchSql::new(DbBackend::Sqlite);
        assert_eq!(sql.values_rows(1, &["bigint", "text"]), "(?, ?)");
    }
}

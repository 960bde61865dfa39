//! The chat's statements: a batch of families' messages, all rows or a conflict.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use super::Db;
use super::sql::{BatchFailure, BatchSql, exec_chunked};

/// One chat message row; `seq` is assigned by the family's ChatRoom.
#[derive(Clone, Debug)]
pub struct MessageRow {
    pub seq: i64,
    pub sender_id: i64,
    pub client_id: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// Consecutive messages of one family. Either all of them commit or none does; a seq or
/// client id already in the database (another server, or a resend the room could not see) is a
/// [`PersistError::Conflict`] and nothing is written.
pub struct CommitMessages {
    pub family_id: i64,
    pub rows: Vec<MessageRow>,
}

/// Writes every message of `groups` in `txn`: a seq or client id already stored fails the batch.
pub async fn apply(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    sql: BatchSql,
    groups: &[&CommitMessages],
) -> Result<(), BatchFailure> {
    let rows = message_rows(groups);
    let expected = rows.len() as u64;
    let inserted = exec_chunked(txn, backend, rows, |n| {
        format!("{} ON CONFLICT DO NOTHING", insert_messages(sql, n))
    })
    .await?;
    if inserted != expected {
        return Err(BatchFailure::Conflict);
    }
    Ok(())
}

/// Chat-only batches up to this many rows are written by one statement without a transaction.
pub const SINGLE_STATEMENT_ROWS: usize = 128;

pub fn message_rows(groups: &[&CommitMessages]) -> Vec<Vec<Value>> {
    groups
        .iter()
        .flat_map(|g| {
            g.rows.iter().map(move |m| {
                vec![
                    g.family_id.into(),
                    m.seq.into(),
                    m.sender_id.into(),
                    m.client_id.clone().into(),
                    m.text.clone().into(),
                    m.created_at.into(),
                ]
            })
        })
        .collect()
}

fn insert_messages(sql: BatchSql, n: usize) -> String {
    format!(
        "INSERT INTO messages (family_id, seq, sender_id, client_id, text, created_at) VALUES {}",
        sql.values_rows(
            n,
            &["bigint", "bigint", "bigint", "text", "text", "timestamptz"]
        )
    )
}

/// A batch of chat messages alone: one multi-row INSERT is atomic by itself, so it needs no
/// BEGIN/COMMIT round trips to the database (on SQLite each is a hop to sqlx's worker thread). A
/// seq or client id already stored fails the statement as a whole: nothing is written, and the
/// rooms reload as after any conflict.
pub async fn commit_messages_alone(
    db: &Db,
    sql: BatchSql,
    rows: Vec<Vec<Value>>,
) -> Result<(), BatchFailure> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = Statement::from_sql_and_values(
        db.backend(),
        insert_messages(sql, rows.len()),
        rows.into_iter().flatten(),
    );
    match db.write.execute_raw(statement).await {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            Err(BatchFailure::Conflict)
        }
        Err(err) => Err(err.into()),
    }
}

//! The chat's statements: a batch of families' messages, all rows or a conflict.
//!
//! Where the seqs come from is the [`SeqSource`]: on one node the family's ChatRoom assigns them
//! (it is the family's only writer), in cluster mode the database hands them out in the statement
//! that inserts the rows (`seqs.rs`), since several nodes write one family.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, Value};

use super::Db;
use super::seqs::{self, NewMessage};
use super::sql::{BatchFailure, BatchSql, exec_chunked};

/// Where chat seqs are assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqSource {
    /// By the family's ChatRoom, from its memory (one node). The rows carry their seqs.
    Room,
    /// By the database, in the statement that inserts the rows (cluster mode: PostgreSQL's
    /// `chat_counters`). The rows' `seq` is ignored; the commit answers the first seq given.
    Database,
}

/// One chat message row; `seq` is assigned by the family's ChatRoom ([`SeqSource::Room`]) or
/// ignored ([`SeqSource::Database`]).
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
/// [`super::PersistError::Conflict`] and nothing is written. Answered with the seq of the first
/// row; the others follow it one by one.
pub struct CommitMessages {
    pub family_id: i64,
    pub rows: Vec<MessageRow>,
}

/// Writes every message of `groups` in `txn`: a seq or client id already stored fails the batch.
/// Returns each group's first seq.
pub async fn apply(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    sql: BatchSql,
    groups: &[&CommitMessages],
    source: SeqSource,
) -> Result<Vec<i64>, BatchFailure> {
    if source == SeqSource::Database {
        let mut firsts = Vec::with_capacity(groups.len());
        for part in parts(groups) {
            firsts.extend(insert_reserving(txn, part).await?);
        }
        return Ok(firsts);
    }
    let rows = message_rows(groups);
    let expected = rows.len() as u64;
    let inserted = exec_chunked(txn, backend, rows, |n| {
        format!("{} ON CONFLICT DO NOTHING", insert_messages(sql, n))
    })
    .await?;
    if inserted != expected {
        return Err(BatchFailure::Conflict);
    }
    Ok(room_firsts(groups))
}

/// Chat-only batches up to this many rows are written by one statement without a transaction.
pub const SINGLE_STATEMENT_ROWS: usize = 128;

/// A batch of chat messages alone: one multi-row INSERT is atomic by itself, so it needs no
/// BEGIN/COMMIT round trips to the database (on SQLite each is a hop to sqlx's worker thread). A
/// seq or client id already stored fails the statement as a whole: nothing is written, and the
/// rooms reload as after any conflict. At most [`SINGLE_STATEMENT_ROWS`] rows. Returns each
/// group's first seq.
pub async fn commit_messages_alone(
    db: &Db,
    sql: BatchSql,
    groups: &[&CommitMessages],
    source: SeqSource,
) -> Result<Vec<i64>, BatchFailure> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    if source == SeqSource::Database {
        return insert_reserving(&db.write, groups).await;
    }
    let rows = message_rows(groups);
    let statement = Statement::from_sql_and_values(
        db.backend(),
        insert_messages(sql, rows.len()),
        rows.into_iter().flatten(),
    );
    match db.write.execute_raw(statement).await {
        Ok(_) => Ok(room_firsts(groups)),
        Err(err) => Err(conflict_or_database(err)),
    }
}

/// The rows of a batch in one statement each, for [`SINGLE_STATEMENT_ROWS`].
pub fn row_count(groups: &[&CommitMessages]) -> usize {
    groups.iter().map(|g| g.rows.len()).sum()
}

fn room_firsts(groups: &[&CommitMessages]) -> Vec<i64> {
    groups
        .iter()
        .map(|g| g.rows.first().map_or(0, |row| row.seq))
        .collect()
}

/// A unique index violated (a seq or client id already stored) is a conflict; anything else is
/// the database's error.
fn conflict_or_database(err: DbErr) -> BatchFailure {
    if matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        BatchFailure::Conflict
    } else {
        BatchFailure::Database(err)
    }
}

/// Whole groups, at most [`seqs::MAX_INSERT_ROWS`] rows a part (a group is never split: a room
/// sends at most `MAX_ROOM_PENDING` rows at once, far fewer).
fn parts<'a, 'b>(groups: &'b [&'a CommitMessages]) -> Vec<&'b [&'a CommitMessages]> {
    let mut parts = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, group) in groups.iter().enumerate() {
        if rows > 0 && rows + group.rows.len() > seqs::MAX_INSERT_ROWS {
            parts.push(&groups[start..i]);
            (start, rows) = (i, 0);
        }
        rows += group.rows.len();
    }
    if start < groups.len() {
        parts.push(&groups[start..]);
    }
    parts
}

/// One statement that reserves the groups' seqs and inserts their rows (PostgreSQL); returns each
/// group's first seq.
async fn insert_reserving<C: ConnectionTrait>(
    conn: &C,
    groups: &[&CommitMessages],
) -> Result<Vec<i64>, BatchFailure> {
    let rows: Vec<NewMessage> = groups
        .iter()
        .flat_map(|g| {
            g.rows.iter().map(move |m| NewMessage {
                family_id: g.family_id,
                sender_id: m.sender_id,
                client_id: m.client_id.clone(),
                text: m.text.clone(),
                created_at: m.created_at,
            })
        })
        .collect();
    let seqs = seqs::insert_reserving(conn, &rows)
        .await
        .map_err(conflict_or_database)?;
    let mut firsts = Vec::with_capacity(groups.len());
    let mut at = 0;
    for group in groups {
        firsts.push(seqs.get(at).copied().unwrap_or(0));
        at += group.rows.len();
    }
    Ok(firsts)
}

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

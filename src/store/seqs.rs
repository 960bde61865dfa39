//! Chat seqs across nodes: one gapless, unique order per family, whichever node commits.
//!
//! A node cannot hand out seqs from memory once another node may write the same family, so each
//! family has a counter row, `chat_counters (family_id, last_seq)` (migration
//! `m20261203_000001_chat_counters`), and a transaction that inserts messages first reserves
//! their seqs with
//!
//! ```sql
//! INSERT INTO chat_counters (family_id, last_seq) VALUES ($1, $n)
//! ON CONFLICT (family_id) DO UPDATE SET last_seq = chat_counters.last_seq + excluded.last_seq
//! RETURNING family_id, last_seq
//! ```
//!
//! The row lock it takes orders the family's writers across nodes until COMMIT: a second writer
//! waits, then reads the first one's result. A transaction that rolls back also rolls back its
//! reservation, so no seq is skipped; none is handed out twice. The messages must be inserted in
//! the same transaction (the reservation alone would leave a gap if the insert were apart).
//!
//! Lock order: [`reserve_seqs_many`] takes its rows in family id order in one statement, so two
//! transactions reserving for overlapping families never deadlock each other. In a transaction
//! that also writes boards (which locks `families` rows), reserve after the board writes, so
//! every transaction locks `families` rows before `chat_counters` rows.
//!
//! Every writer of `messages` must take its seqs here, in single-node mode too: a counter that
//! fell behind the messages (rows written without it) would hand out stored seqs. The unique
//! `(family_id, seq)` index turns that into a conflict, and [`repair_counter`] brings the counter
//! up to the stored messages again.
use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DbErr, Statement, Value};

use super::BatchSql;

/// Families per reservation statement (two parameters each, far under PostgreSQL's 65,535 and
/// SQLite's 32,766).
pub const RESERVE_CHUNK: usize = 1024;

/// Reserves `n` consecutive seqs of the family inside the caller's transaction; returns the first
/// (the seqs are `first .. first + n`). `n` is at least 1.
pub async fn reserve_seqs<C: ConnectionTrait>(
    txn: &C,
    family_id: i64,
    n: i64,
) -> Result<i64, DbErr> {
    let firsts = reserve_seqs_many(txn, &[(family_id, n)]).await?;
    firsts
        .get(&family_id)
        .copied()
        .ok_or_else(|| DbErr::Custom(format!("no seq reserved for family {family_id}")))
}

/// Reserves seqs for several families in one statement per [`RESERVE_CHUNK`] families, their rows
/// locked in family id order; returns each family's first seq. Counts of one family given twice
/// are added up (a family's seqs are then one run). Counts below 1 are an error.
pub async fn reserve_seqs_many<C: ConnectionTrait>(
    txn: &C,
    counts: &[(i64, i64)],
) -> Result<BTreeMap<i64, i64>, DbErr> {
    let mut wanted: BTreeMap<i64, i64> = BTreeMap::new();
    for &(family_id, n) in counts {
        if n < 1 {
            return Err(DbErr::Custom(format!(
                "reserve_seqs: {n} seqs asked for family {family_id}"
            )));
        }
        *wanted.entry(family_id).or_default() += n;
    }
    let backend = txn.get_database_backend();
    let wanted: Vec<(i64, i64)> = wanted.into_iter().collect();
    let mut firsts = BTreeMap::new();
    for chunk in wanted.chunks(RESERVE_CHUNK) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
        for &(family_id, n) in chunk {
            values.push(family_id.into());
            values.push(n.into());
        }
        let sql = format!(
            "INSERT INTO chat_counters (family_id, last_seq) VALUES {} \
             ON CONFLICT (family_id) DO UPDATE SET last_seq = chat_counters.last_seq + excluded.last_seq \
             RETURNING family_id, last_seq",
            BatchSql::new(backend).values_rows(chunk.len(), &["bigint", "bigint"])
        );
        let returned = txn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let last: BTreeMap<i64, i64> = returned
            .iter()
            .map(|row| Ok((row.try_get("", "family_id")?, row.try_get("", "last_seq")?)))
            .collect::<Result<_, DbErr>>()?;
        for &(family_id, n) in chunk {
            let last = last.get(&family_id).ok_or_else(|| {
                DbErr::Custom(format!("no counter returned for family {family_id}"))
            })?;
            firsts.insert(family_id, last - n + 1);
        }
    }
    Ok(firsts)
}

/// Brings the family's counter up to its highest stored seq (after a conflict on
/// `(family_id, seq)`: rows were written without a reservation). Returns the counter's value.
pub async fn repair_counter<C: ConnectionTrait>(txn: &C, family_id: i64) -> Result<i64, DbErr> {
    let backend = txn.get_database_backend();
    let sql = BatchSql::new(backend);
    let p = |i: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("{}::bigint", sql.placeholder(i)),
        _ => sql.placeholder(i),
    };
    let greatest = match backend {
        sea_orm::DbBackend::Postgres => "GREATEST",
        _ => "MAX",
    };
    let statement = format!(
        "INSERT INTO chat_counters (family_id, last_seq) \
         VALUES ({f1}, (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE family_id = {f2})) \
         ON CONFLICT (family_id) DO UPDATE SET last_seq = {greatest}(chat_counters.last_seq, excluded.last_seq) \
         RETURNING last_seq",
        f1 = p(1),
        f2 = p(2),
    );
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            statement,
            [family_id.into(), family_id.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("repair_counter returned no row".into()))?;
    row.try_get("", "last_seq")
}

/// PostgreSQL: brings every family's counter up to its highest stored seq in one statement (a
/// node starting in cluster mode on a database that was written without counters). Counters
/// only move up: run beside nodes that reserve, it waits for their row locks and keeps the
/// greater value. Returns the families whose counter it wrote.
pub async fn sync_counters<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let statement = "INSERT INTO chat_counters (family_id, last_seq) \
         SELECT family_id, MAX(seq) FROM messages GROUP BY family_id \
         ON CONFLICT (family_id) DO UPDATE SET last_seq = GREATEST(chat_counters.last_seq, excluded.last_seq) \
         WHERE chat_counters.last_seq < excluded.last_seq";
    Ok(conn
        .execute_raw(Statement::from_string(backend, statement))
        .await?
        .rows_affected())
}

/// Rows per [`insert_reserving`] statement (7 parameters a row and 2 a family: under
/// PostgreSQL's 65,535).
pub const MAX_INSERT_ROWS: usize = 4096;

/// A chat message to insert with a seq the database hands out.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub family_id: i64,
    pub sender_id: i64,
    pub client_id: String,
    pub text: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// PostgreSQL only: reserves the seqs and inserts the messages in **one statement** (a
/// data-modifying CTE), so a batch without board changes needs no BEGIN/COMMIT, as today's
/// chat-only batches. Returns each row's seq, in the order given; a family's rows get
/// consecutive seqs in that order. The statement is atomic: a stored client id (unique index)
/// fails it whole and nothing is reserved. At most [`MAX_INSERT_ROWS`] rows.
pub async fn insert_reserving<C: ConnectionTrait>(
    conn: &C,
    rows: &[NewMessage],
) -> Result<Vec<i64>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if rows.len() > MAX_INSERT_ROWS {
        return Err(DbErr::Custom(format!(
            "insert_reserving: {} rows, at most {MAX_INSERT_ROWS}",
            rows.len()
        )));
    }
    let backend = conn.get_database_backend();
    if backend != sea_orm::DbBackend::Postgres {
        return Err(DbErr::Custom(
            "insert_reserving needs PostgreSQL (cluster mode)".into(),
        ));
    }
    // Each row's place in its family's run, and each family's count.
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    let places: Vec<i64> = rows
        .iter()
        .map(|row| {
            let n = counts.entry(row.family_id).or_default();
            *n += 1;
            *n
        })
        .collect();
    let sql = BatchSql::new(backend);
    let mut values: Vec<Value> = Vec::with_capacity(counts.len() * 2 + rows.len() * 7);
    for (&family_id, &n) in &counts {
        values.push(family_id.into());
        values.push(n.into());
    }
    let counters = sql.values_rows(counts.len(), &["bigint", "bigint"]);
    let mut messages = String::with_capacity(rows.len() * 96);
    let mut p = counts.len() * 2;
    for (i, (row, place)) in rows.iter().zip(&places).enumerate() {
        if i > 0 {
            messages.push_str(", ");
        }
        let types = [
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "text",
            "text",
            "timestamptz",
        ];
        messages.push('(');
        for (j, ty) in types.iter().enumerate() {
            if j > 0 {
                messages.push_str(", ");
            }
            p += 1;
            messages.push_str(&format!("{}::{ty}", sql.placeholder(p)));
        }
        messages.push(')');
        values.push(row.family_id.into());
        values.push((*place).into());
        values.push(counts[&row.family_id].into());
        values.push(row.sender_id.into());
        values.push(row.client_id.clone().into());
        values.push(row.text.clone().into());
        values.push(row.created_at.into());
    }
    // The inserted rows are not returned (less to send back): each family's last seq is, and a
    // row's seq is `last - n + place`. A data-modifying CTE runs whether or not it is read.
    let statement = format!(
        "WITH r AS (\
            INSERT INTO chat_counters (family_id, last_seq) VALUES {counters} \
            ON CONFLICT (family_id) DO UPDATE SET last_seq = chat_counters.last_seq + excluded.last_seq \
            RETURNING family_id, last_seq\
         ), m (family_id, place, n, sender_id, client_id, text, created_at) AS (VALUES {messages}), \
         i AS (\
            INSERT INTO messages (family_id, seq, sender_id, client_id, text, created_at) \
            SELECT m.family_id, r.last_seq - m.n + m.place, m.sender_id, m.client_id, m.text, m.created_at \
            FROM m JOIN r ON r.family_id = m.family_id\
         ) \
         SELECT family_id, last_seq FROM r"
    );
    let returned = conn
        .query_all_raw(Statement::from_sql_and_values(backend, statement, values))
        .await?;
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for row in &returned {
        last.insert(row.try_get("", "family_id")?, row.try_get("", "last_seq")?);
    }
    rows.iter()
        .zip(&places)
        .map(|(row, place)| {
            let last = last.get(&row.family_id).ok_or_else(|| {
                DbErr::Custom(format!(
                    "insert_reserving: no counter returned for family {}",
                    row.family_id
                ))
            })?;
            Ok(last - counts[&row.family_id] + place)
        })
        .collect()
}

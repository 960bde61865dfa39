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

use crate::store::BatchSql;

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

//! The board's statements in the Persister's transaction: a batch of families' board changes,
//! each guarded by its family's `board_version`, with their ledger rows.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, Value};

use super::error::PersistError;
use super::sql::{BatchFailure, BatchSql, exec, exec_chunked};
use crate::status::{BoardState, BoardStatus, HistoryKind, MissionStatus, WishStatus};

/// One grape ledger row.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub kind: HistoryKind,
    pub count: i32,
    pub by_user_id: i64,
    pub idem_key: Option<String>,
    /// The board's state after the change that wrote this event.
    pub granted: i32,
    pub attached: i32,
    pub status: BoardStatus,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub enum BoardOp {
    /// Insert a board on `wish_id` (which must still be `wished`; it becomes `picked`).
    Create {
        wish_id: i64,
        size: i32,
        at: DateTime<Utc>,
    },
    /// New counts; `completed` marks the board complete and its wish given.
    Update {
        board_id: i64,
        granted: i32,
        attached: i32,
        completed: Option<(DateTime<Utc>, i64)>,
    },
    /// The board is cancelled and its wish is `wished` again.
    Cancel {
        board_id: i64,
        wish_id: i64,
        at: DateTime<Utc>,
    },
}

/// A change to one family's board: the version it is based on (`version + 1` is written), what
/// happens to the board row, and the ledger rows.
#[derive(Clone, Debug)]
pub struct BoardChange {
    pub family_id: i64,
    pub base_version: i64,
    pub op: BoardOp,
    pub events: Vec<EventRow>,
    /// A mission approved by this change (its reward is the grant): it must still be
    /// `submitted`, and becomes `approved` in the same transaction.
    pub approves: Option<(i64, DateTime<Utc>)>,
}

/// The id of the board the change touched (new for `Create`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub board_id: i64,
}

/// Writes `changes` in `txn`. Per-change refusals (a wish taken in the meantime, a mission no
/// longer submitted) answer only that change; a version conflict fails the batch.
pub async fn apply(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    sql: BatchSql,
    changes: &[&BoardChange],
) -> Result<Vec<Result<Committed, PersistError>>, BatchFailure> {
    let mut results: Vec<Result<Committed, PersistError>> = changes
        .iter()
        .map(|c| match c.op {
            BoardOp::Create { .. } => Ok(Committed { board_id: 0 }),
            BoardOp::Update { board_id, .. } | BoardOp::Cancel { board_id, .. } => {
                Ok(Committed { board_id })
            }
        })
        .collect();

    // 1. Opening a board picks its wish, only if nobody changed the wish meanwhile.
    for (i, change) in changes.iter().enumerate() {
        if let BoardOp::Create { wish_id, at, .. } = change.op {
            let picked = exec(
                txn,
                backend,
                format!(
                    "UPDATE wishes SET status = {}, picked_at = {} WHERE id = {} AND status = {}",
                    sql.placeholder(1),
                    sql.placeholder(2),
                    sql.placeholder(3),
                    sql.placeholder(4)
                ),
                vec![
                    WishStatus::Picked.into(),
                    at.into(),
                    wish_id.into(),
                    WishStatus::Wished.into(),
                ],
            )
            .await?;
            if picked != 1 {
                results[i] = Err(PersistError::WishNotAvailable);
            }
        }
    }
    // 1b. Approving a mission, only if it is still submitted (two approves: one wins).
    for (i, change) in changes.iter().enumerate() {
        if let (Some((mission_id, at)), true) = (change.approves, results[i].is_ok()) {
            let approved = exec(
                txn,
                backend,
                format!(
                    "UPDATE missions SET status = {}, decided_at = {} WHERE id = {} AND status = {}",
                    sql.placeholder(1),
                    sql.placeholder(2),
                    sql.placeholder(3),
                    sql.placeholder(4)
                ),
                vec![
                    MissionStatus::Approved.into(),
                    at.into(),
                    mission_id.into(),
                    MissionStatus::Submitted.into(),
                ],
            )
            .await?;
            if approved != 1 {
                results[i] = Err(PersistError::MissionLocked);
            }
        }
    }
    let live: Vec<usize> = (0..changes.len()).filter(|&i| results[i].is_ok()).collect();

    // 2. The version guard: every live change's family must still be at its base version.
    let rows: Vec<Vec<Value>> = live
        .iter()
        .map(|&i| {
            let c = &changes[i];
            vec![
                c.family_id.into(),
                c.base_version.into(),
                (c.base_version + 1).into(),
            ]
        })
        .collect();
    let matched = exec_chunked(txn, backend, rows, |n| {
        format!(
            "UPDATE families AS f SET board_version = v.column3 FROM (VALUES {}) AS v \
             WHERE f.id = v.column1 AND f.board_version = v.column2",
            sql.values_rows(n, &["bigint", "bigint", "bigint"])
        )
    })
    .await?;
    if matched != live.len() as u64 {
        return Err(BatchFailure::Conflict);
    }

    // 3. Board rows.
    let mut updates = Vec::new();
    for &i in &live {
        let change = &changes[i];
        let version = change.base_version + 1;
        match &change.op {
            BoardOp::Create { wish_id, size, at } => {
                let row = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        backend,
                        format!(
                            "INSERT INTO boards (family_id, wish_id, size, granted, attached, status, version, created_at) \
                             VALUES ({}, {}, {}, 0, 0, {}, {}, {}) RETURNING id",
                            sql.placeholder(1),
                            sql.placeholder(2),
                            sql.placeholder(3),
                            sql.placeholder(4),
                            sql.placeholder(5),
                            sql.placeholder(6)
                        ),
                        vec![
                            change.family_id.into(),
                            (*wish_id).into(),
                            (*size).into(),
                            BoardState::Active.into(),
                            version.into(),
                            (*at).into(),
                        ],
                    ))
                    .await?
                    .ok_or_else(|| DbErr::RecordNotInserted)?;
                let board_id: i64 = row.try_get_by_index(0)?;
                results[i] = Ok(Committed { board_id });
            }
            BoardOp::Update {
                board_id,
                granted,
                attached,
                completed,
            } => {
                let (status, completed_at) = match completed {
                    Some((at, _)) => (BoardState::Complete, Some(*at)),
                    None => (BoardState::Active, None),
                };
                updates.push(vec![
                    (*board_id).into(),
                    (*granted).into(),
                    (*attached).into(),
                    status.into(),
                    version.into(),
                    completed_at.into(),
                ]);
                if let Some((at, wish_id)) = completed {
                    exec(
                        txn,
                        backend,
                        format!(
                            "UPDATE wishes SET status = {}, given_at = {} WHERE id = {}",
                            sql.placeholder(1),
                            sql.placeholder(2),
                            sql.placeholder(3)
                        ),
                        vec![WishStatus::Given.into(), (*at).into(), (*wish_id).into()],
                    )
                    .await?;
                }
            }
            BoardOp::Cancel {
                board_id,
                wish_id,
                at,
            } => {
                exec(
                    txn,
                    backend,
                    format!(
                        "UPDATE boards SET status = {}, cancelled_at = {}, version = {} WHERE id = {}",
                        sql.placeholder(1),
                        sql.placeholder(2),
                        sql.placeholder(3),
                        sql.placeholder(4)
                    ),
                    vec![
                        BoardState::Cancelled.into(),
                        (*at).into(),
                        version.into(),
                        (*board_id).into(),
                    ],
                )
                .await?;
                exec(
                    txn,
                    backend,
                    format!(
                        "UPDATE wishes SET status = {}, picked_at = NULL WHERE id = {}",
                        sql.placeholder(1),
                        sql.placeholder(2)
                    ),
                    vec![WishStatus::Wished.into(), (*wish_id).into()],
                )
                .await?;
            }
        }
    }
    exec_chunked(txn, backend, updates, |n| {
        format!(
            "UPDATE boards AS b SET granted = v.column2, attached = v.column3, status = v.column4, \
             version = v.column5, completed_at = v.column6 FROM (VALUES {}) AS v WHERE b.id = v.column1",
            sql.values_rows(
                n,
                &["bigint", "integer", "integer", "text", "bigint", "timestamptz"]
            )
        )
    })
    .await?;

    // 4. The ledger.
    let mut events = Vec::new();
    for &i in &live {
        let change = &changes[i];
        let board_id = results[i].as_ref().map_or(0, |c| c.board_id);
        for e in &change.events {
            events.push(vec![
                change.family_id.into(),
                board_id.into(),
                e.kind.into(),
                e.count.into(),
                e.by_user_id.into(),
                e.idem_key.clone().into(),
                (change.base_version + 1).into(),
                e.granted.into(),
                e.attached.into(),
                e.status.into(),
                e.at.into(),
            ]);
        }
    }
    exec_chunked(txn, backend, events, |n| {
        format!(
            "INSERT INTO grape_events (family_id, board_id, kind, count, by_user_id, idem_key, \
             version, granted, attached, status, at) VALUES {}",
            sql.values_rows(
                n,
                &[
                    "bigint",
                    "bigint",
                    "text",
                    "integer",
                    "bigint",
                    "text",
                    "bigint",
                    "integer",
                    "integer",
                    "text",
                    "timestamptz"
                ]
            )
        )
    })
    .await?;
    Ok(results)
}

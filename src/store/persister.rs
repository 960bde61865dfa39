//! The Persister: the one path to the database for board changes and chat messages.
//!
//! Group commit: while one transaction commits, new requests queue up; the next transaction takes
//! everything queued (up to [`MAX_BATCH`]) and writes it with multi-row statements of a few fixed
//! sizes (so prepared statements are reused). Every waiter is answered only after COMMIT; a failed
//! commit answers every waiter in the batch with an error and nothing of it is applied.
//!
//! Board rows are guarded by the family's `board_version`: a change applies only if the version in
//! the database is the one the FamilyBoard actor based it on, so a second server process on the
//! same database can never overwrite a change silently (both sides see [`PersistError::Conflict`]
//! and reload).
//!
//! Faults: a batch whose transaction fails because of the database ([`super::Fault`]: the
//! connection was lost, the pool timed out, the disk is full) is not committed again apart (each
//! part would only fail the same way, up to [`DB_TIMEOUT`] each); every waiter gets the fault. A
//! commit that does not finish within [`DB_TIMEOUT`] is abandoned, and its waiters get
//! [`PersistError::Store(StoreError::Uncertain)`]: the transaction may still land later (COMMIT may have reached the
//! server; PostgreSQL ends it by itself after `statement_timeout` /
//! `idle_in_transaction_session_timeout`), so it is neither acknowledged (only what is known to be
//! committed is) nor assumed lost. The FamilyBoard and the ChatRoom reload from the database
//! before they build on it; the board's version guard and the messages' unique (family, seq) and
//! (family, sender, client id) indexes turn a late landing into a conflict they already recover
//! from, never into a lost or doubled write. The next batch starts at once: one hung commit holds
//! the process's writes for at most [`DB_TIMEOUT`].
use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::checkpoint::FinishCheckpoint;
use super::error::StoreError;
use super::{BatchSql, DB_TIMEOUT, Db, Fault, fault_of};
use crate::metrics::Metrics;
use crate::status::{BoardStatus, HistoryKind};

/// The most changes one transaction takes.
pub const MAX_BATCH: usize = 4096;
/// Requests waiting in the mailbox before senders wait; the handler moves them to the queue at once.
const MAILBOX: usize = 1 << 16;
/// Rows per multi-row statement, largest first: powers of two, so any batch takes at most one
/// statement of each size (300 rows: 256 + 32 + 8 + 4) and the prepared statements stay few.
/// The largest keeps the widest statement (11 columns) far below SQLite's 32,766 parameters.
const CHUNKS: [usize; 11] = [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Why the Persister did not commit a write: the write-specific refusals, found by the guards in
/// its statements, or the database's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("the family's board changed underneath (another server?)")]
    Conflict,
    #[error("the wish is no longer available")]
    WishNotAvailable,
    #[error("the mission is no longer submitted")]
    MissionLocked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

pub struct CommitBoard(pub BoardChange);

impl Message for CommitBoard {
    type Result = Result<Committed, PersistError>;
}

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

impl Message for CommitMessages {
    type Result = Result<(), PersistError>;
}

enum Write {
    Board(
        BoardChange,
        oneshot::Sender<Result<Committed, PersistError>>,
    ),
    Chat(CommitMessages, oneshot::Sender<Result<(), PersistError>>),
}

impl Write {
    fn refuse(self, error: PersistError) {
        match self {
            Write::Board(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Write::Chat(_, reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// At most one write per (kind, family) in a batch: a family's next write is based on the
    /// previous one's result.
    fn slot(&self) -> (bool, i64) {
        match self {
            Write::Board(change, _) => (true, change.family_id),
            Write::Chat(group, _) => (false, group.family_id),
        }
    }
}

pub struct Persister {
    db: Db,
    metrics: Arc<Metrics>,
    /// Each write with its deadline: [`DB_TIMEOUT`] after it arrived.
    queue: Vec<(Instant, Write)>,
    committing: bool,
    /// Writes in the transaction that is running (for [`super::WriteHealth`]).
    in_flight: usize,
    /// A WAL checkpoint to run before the next batch (SQLite; see `store::checkpoint`).
    checkpoint: bool,
}

impl Persister {
    pub fn new(db: Db, metrics: Arc<Metrics>) -> Self {
        Persister {
            db,
            metrics,
            queue: Vec::new(),
            committing: false,
            in_flight: 0,
            checkpoint: false,
        }
    }

    /// Starts the next transaction if none is running and something is queued; a requested
    /// checkpoint goes first.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        if self.checkpoint {
            self.checkpoint = false;
            self.committing = true;
            let db = self.db.clone();
            let started = std::time::Instant::now();
            ctx.spawn(
                async move { super::sqlite::passive_checkpoint(&db.write).await }
                    .into_actor(self)
                    .map(move |result, act, ctx| {
                        match result {
                            // Everything copied: the next commit starts the WAL over.
                            Ok((frames, copied)) if frames == copied => {
                                act.metrics.record_wal_restart(started.elapsed())
                            }
                            Ok(_) => {}
                            Err(err) => log::warn!("WAL checkpoint on the writer failed: {err}"),
                        }
                        act.committing = false;
                        act.kick(ctx);
                    }),
            );
            return;
        }
        if self.queue.is_empty() {
            self.in_flight = 0;
            self.db.health.set_waiting(0);
            return;
        }
        let (batch, deadline) = match take_batch(&mut self.queue) {
            Ok(taken) => taken,
            Err(Expired) => {
                self.db.health.failed();
                return self.kick(ctx);
            }
        };
        self.in_flight = batch.len();
        self.db
            .health
            .set_waiting(self.in_flight + self.queue.len());
        self.committing = true;
        let db = self.db.clone();
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                let size = batch.len();
                let started = std::time::Instant::now();
                let ok = commit_and_reply(&db, &metrics, batch, deadline).await;
                metrics.record_batch(size, started.elapsed(), ok);
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.committing = false;
                act.kick(ctx);
            }),
        );
    }
}

/// Takes up to [`MAX_BATCH`] writes, at most one per kind and family (a family's second change is
/// based on the first's result and must see it committed), leaving the rest queued in order.
/// Writes that waited past their deadline (behind a commit that hung) are answered `Unavailable`
/// without being tried: each write is answered within [`DB_TIMEOUT`] of reaching the Persister,
/// not one timeout per batch ahead of it. Returns the batch and the earliest deadline in it, or
/// [`Expired`] when every write taken had expired.
fn take_batch(queue: &mut Vec<(Instant, Write)>) -> Result<(Vec<Write>, Instant), Expired> {
    let now = Instant::now();
    let mut families = HashSet::new();
    let mut batch = Vec::new();
    let mut deadline = None::<Instant>;
    let mut rest = Vec::new();
    for (due, pending) in queue.drain(..) {
        if batch.len() < MAX_BATCH && families.insert(pending.slot()) {
            if due <= now {
                pending.refuse(PersistError::Store(StoreError::Unavailable(format!(
                    "waited over {} s for the database",
                    DB_TIMEOUT.as_secs()
                ))));
                continue;
            }
            deadline = Some(deadline.map_or(due, |d| d.min(due)));
            batch.push(pending);
        } else {
            rest.push((due, pending));
        }
    }
    *queue = rest;
    deadline.map(|deadline| (batch, deadline)).ok_or(Expired)
}

/// Every write [`take_batch`] took had waited past its deadline.
struct Expired;

impl Actor for Persister {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<CommitBoard> for Persister {
    type Result = ResponseFuture<Result<Committed, PersistError>>;

    fn handle(
        &mut self,
        CommitBoard(change): CommitBoard,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.queue
            .push((Instant::now() + DB_TIMEOUT, Write::Board(change, reply)));
        self.db
            .health
            .set_waiting(self.in_flight + self.queue.len());
        self.kick(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or(Err(PersistError::Store(StoreError::Stopped)))
        })
    }
}

impl Handler<FinishCheckpoint> for Persister {
    type Result = ();

    fn handle(&mut self, _: FinishCheckpoint, ctx: &mut Context<Self>) {
        self.checkpoint = true;
        self.kick(ctx);
    }
}

impl Handler<CommitMessages> for Persister {
    type Result = ResponseFuture<Result<(), PersistError>>;

    fn handle(&mut self, group: CommitMessages, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.queue
            .push((Instant::now() + DB_TIMEOUT, Write::Chat(group, reply)));
        self.db
            .health
            .set_waiting(self.in_flight + self.queue.len());
        self.kick(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or(Err(PersistError::Store(StoreError::Stopped)))
        })
    }
}

/// Commits a batch and answers every waiter. Returns whether every write committed.
async fn commit_and_reply(
    db: &Db,
    metrics: &Metrics,
    batch: Vec<Write>,
    deadline: Instant,
) -> bool {
    let mut changes = Vec::new();
    let mut board_replies = Vec::new();
    let mut groups = Vec::new();
    let mut chat_replies = Vec::new();
    for write in batch {
        match write {
            Write::Board(change, reply) => {
                changes.push(change);
                board_replies.push(reply);
            }
            Write::Chat(group, reply) => {
                groups.push(group);
                chat_replies.push(reply);
            }
        }
    }
    let change_refs: Vec<&BoardChange> = changes.iter().collect();
    let group_refs: Vec<&CommitMessages> = groups.iter().collect();
    let (board_results, chat_results) =
        match timed_commit(db, &change_refs, &group_refs, deadline).await {
            Ok(results) => (results, vec![Ok(()); groups.len()]),
            Err(failure) => match failure.fault_error() {
                Some(error) => {
                    log::warn!(
                        "commit of {} board changes and {} message groups failed: {error}",
                        changes.len(),
                        groups.len()
                    );
                    (
                        vec![Err(error.clone()); changes.len()],
                        vec![Err(error); groups.len()],
                    )
                }
                None => commit_apart(db, &changes, &groups, failure, deadline).await,
            },
        };
    let faulted = board_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .chain(chat_results.iter().filter_map(|r| r.as_ref().err()))
        .any(PersistError::is_fault);
    if faulted {
        db.health.failed();
    } else {
        db.health.succeeded();
    }
    let ok = board_results.iter().all(|r| {
        !matches!(
            r,
            Err(PersistError::Conflict | PersistError::Store(StoreError::Database(_)))
        )
    }) && chat_results.iter().all(Result::is_ok)
        && !faulted;
    let messages: usize = groups
        .iter()
        .zip(&chat_results)
        .filter(|(_, result)| result.is_ok())
        .map(|(g, _)| g.rows.len())
        .sum();
    metrics
        .messages_committed
        .fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
    // A waiter that went away (client disconnected) does not undo a commit.
    for (reply, result) in board_replies.into_iter().zip(board_results) {
        let _ = reply.send(result);
    }
    for (reply, result) in chat_replies.into_iter().zip(chat_results) {
        let _ = reply.send(result);
    }
    ok
}

impl PersistError {
    /// A failure of the database, not of the write.
    pub fn is_fault(&self) -> bool {
        matches!(self, PersistError::Store(err) if err.is_fault())
    }
}

/// [`commit`] bounded by the batch's deadline (at most [`DB_TIMEOUT`]). On the timeout the transaction's future is dropped: its
/// connection goes back to the pool through sqlx's release check (a rollback and a ping), or is
/// closed.
async fn timed_commit(
    db: &Db,
    changes: &[&BoardChange],
    groups: &[&CommitMessages],
    deadline: Instant,
) -> Result<Vec<Result<Committed, PersistError>>, BatchFailure> {
    match tokio::time::timeout_at(deadline, commit(db, changes, groups)).await {
        Ok(result) => result,
        Err(_) => {
            log::error!(
                "commit of {} board changes and {} message groups timed out; outcome unknown",
                changes.len(),
                groups.len()
            );
            Err(BatchFailure::TimedOut)
        }
    }
}

/// One write of a batch: a board change or a family's group of messages.
#[derive(Clone, Copy)]
enum Unit {
    Board(usize),
    Chat(usize),
}

/// The failure path of group commit. The batch's transaction failed (a conflict or a database
/// error), most likely because of one family's row, and the batch holds many families: commit it
/// again in halves, and halves of the halves that fail, until each failure is down to one write.
/// So the family whose write broke the batch gets the error, and every other family's writes
/// commit and are acknowledged, in ~2·log2(n) transactions per bad write instead of n.
async fn commit_apart(
    db: &Db,
    changes: &[BoardChange],
    groups: &[CommitMessages],
    failure: BatchFailure,
    deadline: Instant,
) -> (
    Vec<Result<Committed, PersistError>>,
    Vec<Result<(), PersistError>>,
) {
    let first = failure.into_error();
    log::warn!(
        "commit of {} board changes and {} message groups failed ({first}); committing them apart",
        changes.len(),
        groups.len()
    );
    let mut board = vec![Err(PersistError::Store(StoreError::Stopped)); changes.len()];
    let mut chat = vec![Err(PersistError::Store(StoreError::Stopped)); groups.len()];
    let units: Vec<Unit> = (0..changes.len())
        .map(Unit::Board)
        .chain((0..groups.len()).map(Unit::Chat))
        .collect();
    // Units to commit together, and the failure they already met.
    let mut todo = vec![(units, Some(first))];
    while let Some((mut units, failed)) = todo.pop() {
        let error = match failed {
            Some(error) => error,
            None => {
                let mut board_part = Vec::new();
                let mut chat_part = Vec::new();
                for unit in &units {
                    match *unit {
                        Unit::Board(i) => board_part.push(i),
                        Unit::Chat(i) => chat_part.push(i),
                    }
                }
                let change_refs: Vec<&BoardChange> =
                    board_part.iter().map(|&i| &changes[i]).collect();
                let group_refs: Vec<&CommitMessages> =
                    chat_part.iter().map(|&i| &groups[i]).collect();
                match timed_commit(db, &change_refs, &group_refs, deadline).await {
                    Ok(results) => {
                        for (i, result) in board_part.into_iter().zip(results) {
                            board[i] = result;
                        }
                        for i in chat_part {
                            chat[i] = Ok(());
                        }
                        continue;
                    }
                    Err(failure) => match failure.fault_error() {
                        // The database itself failed meanwhile: splitting further would only
                        // fail the same way. Everything not yet committed gets the fault.
                        Some(error) => {
                            let rest = todo.drain(..).flat_map(|(units, _)| units);
                            for unit in units.iter().copied().chain(rest) {
                                match unit {
                                    Unit::Board(i) => board[i] = Err(error.clone()),
                                    Unit::Chat(i) => chat[i] = Err(error.clone()),
                                }
                            }
                            break;
                        }
                        None => failure.into_error(),
                    },
                }
            }
        };
        if let [unit] = units[..] {
            match unit {
                Unit::Board(i) => {
                    log::error!(
                        "board change of family {} not stored: {error}",
                        changes[i].family_id
                    );
                    board[i] = Err(error);
                }
                Unit::Chat(i) => {
                    log::error!(
                        "messages of family {} not stored: {error}",
                        groups[i].family_id
                    );
                    chat[i] = Err(error);
                }
            }
            continue;
        }
        let right = units.split_off(units.len() / 2);
        todo.push((right, None));
        todo.push((units, None));
    }
    (board, chat)
}

enum BatchFailure {
    Conflict,
    Database(DbErr),
    /// The commit did not finish within [`DB_TIMEOUT`].
    TimedOut,
}

impl BatchFailure {
    /// The error for every write of the batch when the database failed rather than a write.
    fn fault_error(&self) -> Option<PersistError> {
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

    fn into_error(self) -> PersistError {
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

/// One transaction for the whole batch. Per-change refusals (a wish taken in the meantime) answer
/// only that change; a version conflict or a database error rolls the transaction back (and the
/// caller commits the writes apart).
async fn commit(
    db: &Db,
    changes: &[&BoardChange],
    groups: &[&CommitMessages],
) -> Result<Vec<Result<Committed, PersistError>>, BatchFailure> {
    let backend = db.backend();
    let sql = BatchSql::new(backend);
    if changes.is_empty() {
        let rows = message_rows(groups);
        if rows.len() <= SINGLE_STATEMENT_ROWS {
            return commit_messages_alone(db, sql, rows)
                .await
                .map(|()| Vec::new());
        }
    }
    let txn = db.write.begin().await?;
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
                &txn,
                backend,
                format!(
                    "UPDATE wishes SET status = 'picked', picked_at = {} WHERE id = {} AND status = 'wished'",
                    sql.placeholder(1),
                    sql.placeholder(2)
                ),
                vec![at.into(), wish_id.into()],
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
                &txn,
                backend,
                format!(
                    "UPDATE missions SET status = 'approved', decided_at = {} WHERE id = {} AND status = 'submitted'",
                    sql.placeholder(1),
                    sql.placeholder(2)
                ),
                vec![at.into(), mission_id.into()],
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
    let matched = exec_chunked(&txn, backend, rows, |n| {
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
                             VALUES ({}, {}, {}, 0, 0, 'active', {}, {}) RETURNING id",
                            sql.placeholder(1),
                            sql.placeholder(2),
                            sql.placeholder(3),
                            sql.placeholder(4),
                            sql.placeholder(5)
                        ),
                        vec![
                            change.family_id.into(),
                            (*wish_id).into(),
                            (*size).into(),
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
                    Some((at, _)) => ("complete", Some(*at)),
                    None => ("active", None),
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
                        &txn,
                        backend,
                        format!(
                            "UPDATE wishes SET status = 'given', given_at = {} WHERE id = {}",
                            sql.placeholder(1),
                            sql.placeholder(2)
                        ),
                        vec![(*at).into(), (*wish_id).into()],
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
                    &txn,
                    backend,
                    format!(
                        "UPDATE boards SET status = 'cancelled', cancelled_at = {}, version = {} WHERE id = {}",
                        sql.placeholder(1),
                        sql.placeholder(2),
                        sql.placeholder(3)
                    ),
                    vec![(*at).into(), version.into(), (*board_id).into()],
                )
                .await?;
                exec(
                    &txn,
                    backend,
                    format!(
                        "UPDATE wishes SET status = 'wished', picked_at = NULL WHERE id = {}",
                        sql.placeholder(1)
                    ),
                    vec![(*wish_id).into()],
                )
                .await?;
            }
        }
    }
    exec_chunked(&txn, backend, updates, |n| {
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
    exec_chunked(&txn, backend, events, |n| {
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

    // 5. Chat messages: all rows or a conflict.
    let rows = message_rows(groups);
    let expected = rows.len() as u64;
    let inserted = exec_chunked(&txn, backend, rows, |n| {
        format!("{} ON CONFLICT DO NOTHING", insert_messages(sql, n))
    })
    .await?;
    if inserted != expected {
        return Err(BatchFailure::Conflict);
    }

    txn.commit().await?;
    Ok(results)
}

/// Chat-only batches up to this many rows are written by one statement without a transaction.
const SINGLE_STATEMENT_ROWS: usize = 128;

fn message_rows(groups: &[&CommitMessages]) -> Vec<Vec<Value>> {
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
async fn commit_messages_alone(
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

async fn exec(
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
async fn exec_chunked(
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

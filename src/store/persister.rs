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
//! [`StoreError::Uncertain`]: the transaction may still land later (COMMIT may have reached the
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
use sea_orm::TransactionTrait;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use super::board_writes::{BoardChange, BoardOp, Committed, EventRow};
pub use super::chat_writes::{CommitMessages, MessageRow, SeqSource};
use super::chat_writes::{SINGLE_STATEMENT_ROWS, commit_messages_alone, row_count};
use super::checkpoint::FinishCheckpoint;
pub use super::error::PersistError;
use super::error::StoreError;
use super::sql::BatchFailure;
use super::{BatchSql, DB_TIMEOUT, Db, board_writes, chat_writes};
use crate::metrics::Metrics;
use crate::supervise::InjectedPanics;

/// The most changes one transaction takes.
pub const MAX_BATCH: usize = 4096;
/// Requests waiting in the mailbox before senders wait; the handler moves them to the queue at once.
const MAILBOX: usize = 1 << 16;

/// A board change for the Persister to commit.
pub struct CommitBoard(pub BoardChange);

impl Message for CommitBoard {
    type Result = Result<Committed, PersistError>;
}

/// Answered with the group's first seq.
impl Message for CommitMessages {
    type Result = Result<i64, PersistError>;
}

enum Write {
    Board(
        BoardChange,
        oneshot::Sender<Result<Committed, PersistError>>,
    ),
    Chat(CommitMessages, oneshot::Sender<Result<i64, PersistError>>),
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
    /// Where chat seqs come from (the rooms on one node, the database in cluster mode).
    seqs: SeqSource,
    /// Panics injected by tests only.
    panics: Arc<InjectedPanics>,
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
    pub fn new(
        db: Db,
        seqs: SeqSource,
        metrics: Arc<Metrics>,
        panics: Arc<InjectedPanics>,
    ) -> Self {
        Persister {
            db,
            seqs,
            metrics,
            panics,
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
        let (db, seqs) = (self.db.clone(), self.seqs);
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                let size = batch.len();
                let started = std::time::Instant::now();
                let ok = commit_and_reply(&db, seqs, &metrics, batch, deadline).await;
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
        self.panics.check_persister();
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
    type Result = ResponseFuture<Result<i64, PersistError>>;

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
    seqs: SeqSource,
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
        match timed_commit(db, seqs, &change_refs, &group_refs, deadline).await {
            Ok((board, firsts)) => (board, firsts.into_iter().map(Ok).collect()),
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
                None => commit_apart(db, seqs, &changes, &groups, failure, deadline).await,
            },
        };
    if seqs == SeqSource::Database {
        repair_counters(db, &groups, &chat_results).await;
    }
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

/// [`commit`] bounded by the batch's deadline (at most [`DB_TIMEOUT`]). On the timeout the transaction's future is dropped: its
/// connection goes back to the pool through sqlx's release check (a rollback and a ping), or is
/// closed.
async fn timed_commit(
    db: &Db,
    seqs: SeqSource,
    changes: &[&BoardChange],
    groups: &[&CommitMessages],
    deadline: Instant,
) -> Result<Outcomes, BatchFailure> {
    match tokio::time::timeout_at(deadline, commit(db, seqs, changes, groups)).await {
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
    seqs: SeqSource,
    changes: &[BoardChange],
    groups: &[CommitMessages],
    failure: BatchFailure,
    deadline: Instant,
) -> (
    Vec<Result<Committed, PersistError>>,
    Vec<Result<i64, PersistError>>,
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
                match timed_commit(db, seqs, &change_refs, &group_refs, deadline).await {
                    Ok((results, firsts)) => {
                        for (i, result) in board_part.into_iter().zip(results) {
                            board[i] = result;
                        }
                        for (i, first) in chat_part.into_iter().zip(firsts) {
                            chat[i] = Ok(first);
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

/// One transaction for the whole batch. Per-change refusals (a wish taken in the meantime) answer
/// only that change; a version conflict or a database error rolls the transaction back (and the
/// caller commits the writes apart).
async fn commit(
    db: &Db,
    seqs: SeqSource,
    changes: &[&BoardChange],
    groups: &[&CommitMessages],
) -> Result<Outcomes, BatchFailure> {
    let backend = db.backend();
    let sql = BatchSql::new(backend);
    if changes.is_empty() && row_count(groups) <= SINGLE_STATEMENT_ROWS {
        let firsts = commit_messages_alone(db, sql, groups, seqs).await?;
        return Ok((Vec::new(), firsts));
    }
    let txn = db.write.begin().await?;
    let results = board_writes::apply(&txn, backend, sql, changes).await?;
    // After the board writes: a transaction locks `families` rows before `chat_counters` rows
    // (store/seqs.rs, lock order).
    let firsts = chat_writes::apply(&txn, backend, sql, groups, seqs).await?;
    txn.commit().await?;
    Ok((results, firsts))
}

/// What a committed batch answers: each board change's result, each message group's first seq.
type Outcomes = (Vec<Result<Committed, PersistError>>, Vec<i64>);

/// Cluster mode: a group that met a conflict may have met a counter behind the stored messages
/// (rows written by a node on one database without Redis, or before cluster mode): bring the
/// family's counter up to them, so the room's retry gets fresh seqs. Harmless when the conflict
/// was a resent client id.
async fn repair_counters(
    db: &Db,
    groups: &[CommitMessages],
    results: &[Result<i64, PersistError>],
) {
    for (group, result) in groups.iter().zip(results) {
        if matches!(result, Err(PersistError::Conflict)) {
            match super::seqs::repair_counter(&db.write, group.family_id).await {
                Ok(last) => log::warn!(
                    "family {}: chat seq conflict; the family's counter is at {last}",
                    group.family_id
                ),
                Err(err) => log::warn!(
                    "family {}: repairing the chat counter failed: {err}",
                    group.family_id
                ),
            }
        }
    }
}

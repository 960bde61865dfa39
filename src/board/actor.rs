//! The FamilyBoard actor: one per family, the only writer of its board on this node.
//!
//! It loads lazily, checks every rule in memory ([`super::rules`]), asks the Persister to commit,
//! and only after the commit updates its state, answers the caller and fans the new state out to
//! the family's SSE sessions. Commands are handled one at a time ([`AtomicResponse`]): the next
//! command of a family sees the previous one's committed result.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::rules::{self, Counts, Refusal, WishStatus};
use super::sse::{BoardEvent, CloseSession, SseSession};
use super::store::{self, Loaded};
use super::view::{Board, BoardRow, BoardStatus, Snapshot};
use crate::error::ApiError;
use crate::model::{self, Wish};
use crate::push::Notification;
use crate::store::Db;
use crate::store::persister::{
    BoardChange, BoardOp, CommitBoard, Committed, EventRow, PersistError,
};

/// How many recent idempotency keys each family remembers in memory; older ones are found in the
/// ledger.
const RECENT_KEYS: usize = 256;
/// Commands queued per family before senders wait (backpressure, not loss).
const MAILBOX: usize = 1024;
/// How often a family whose last commit had an unknown outcome tries to reload its state.
const SUSPECT_RELOAD_EVERY: Duration = Duration::from_millis(500);

/// What every FamilyBoard needs from the application.
pub type BoardDeps = crate::registry::FamilyDeps<FamilyBoard>;

/// A change to the board, on behalf of `by` (already authorized for the family and role).
#[derive(Clone, Debug)]
pub enum Command {
    Create {
        by: i64,
        wish_id: i64,
        size: i32,
    },
    Cancel {
        by: i64,
    },
    Grant {
        by: i64,
        count: i32,
        key: Option<String>,
    },
    Attach {
        by: i64,
        key: Option<String>,
    },
    /// Approve a submitted mission and grant its reward, in one transaction.
    Approve {
        by: i64,
        mission_id: i64,
    },
}

impl Message for Command {
    type Result = Result<Snapshot, ApiError>;
}

impl Command {
    fn key(&self) -> Option<(i64, String)> {
        match self {
            Command::Grant { by, key, .. } | Command::Attach { by, key } => {
                key.clone().map(|k| (*by, k))
            }
            _ => None,
        }
    }
}

/// Registers an SSE session; it gets the current state at once and every change after it. A
/// session that stopped is forgotten at the next broadcast or idle check.
#[derive(Clone)]
pub struct Subscribe {
    pub session: Addr<SseSession>,
}

impl Message for Subscribe {
    type Result = Result<(), ApiError>;
}

/// Ends every SSE session of the family (server shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSessions;

/// The current state, without changing it.
#[derive(Clone, Copy, Debug)]
pub struct GetBoard;

impl Message for GetBoard {
    type Result = Result<Snapshot, ApiError>;
}

pub struct FamilyBoard {
    family_id: i64,
    deps: BoardDeps,
    state: Option<Loaded>,
    sessions: Vec<Addr<SseSession>>,
    /// The current state encoded for the sessions, while there are any.
    event: Option<BoardEvent>,
    recent_keys: HashMap<(i64, String), Board>,
    key_order: VecDeque<(i64, String)>,
    last_active: Instant,
    /// A commit's outcome is unknown (it timed out or lost its connection; it may still land):
    /// the in-memory state may be behind the database. Reads keep being answered from memory
    /// (the last acknowledged state), the next command reloads first, and a background reload
    /// brings the state and the SSE sessions up to date once the database answers.
    suspect: bool,
    /// Counts unknown outcomes, so a background reload that started before a newer one does
    /// not clear `suspect`.
    suspect_epoch: u64,
    reload_scheduled: bool,
}

/// A failed command; `uncertain` when its commit's outcome is unknown.
struct Failure {
    error: ApiError,
    uncertain: bool,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            uncertain: false,
        }
    }
}

impl FamilyBoard {
    pub fn new(family_id: i64, deps: BoardDeps) -> Self {
        FamilyBoard {
            family_id,
            deps,
            state: None,
            sessions: Vec::new(),
            event: None,
            recent_keys: HashMap::new(),
            key_order: VecDeque::new(),
            last_active: Instant::now(),
            suspect: false,
            suspect_epoch: 0,
            reload_scheduled: false,
        }
    }

    /// After a commit with an unknown outcome: the database is the truth, reload from it (see
    /// `suspect`).
    fn mark_suspect(&mut self, ctx: &mut Context<Self>) {
        self.suspect = true;
        self.suspect_epoch += 1;
        self.schedule_reload(ctx);
    }

    fn schedule_reload(&mut self, ctx: &mut Context<Self>) {
        if self.reload_scheduled {
            return;
        }
        self.reload_scheduled = true;
        ctx.run_later(SUSPECT_RELOAD_EVERY, |act, ctx| {
            act.reload_scheduled = false;
            act.reload_suspect(ctx);
        });
    }

    /// Reloads a suspect state without holding the mailbox (reads and subscribes keep being
    /// answered while the database is slow); applied only if no command moved the state past
    /// what was read and no newer unknown outcome happened meanwhile.
    fn reload_suspect(&mut self, ctx: &mut Context<Self>) {
        if !self.suspect {
            return;
        }
        let (db, family_id, epoch) = (self.deps.db.clone(), self.family_id, self.suspect_epoch);
        ctx.spawn(
            async move { store::load(&db, family_id).await }
                .into_actor(self)
                .map(move |loaded, act, ctx| match loaded {
                    Ok(loaded) => {
                        if !act.suspect || act.suspect_epoch != epoch {
                            return act.schedule_reload(ctx);
                        }
                        let current = act.state.as_ref().map(|s| s.version);
                        // The same version in the database is the same state (version guard).
                        if current.is_none_or(|v| v <= loaded.version) {
                            let changed = current != Some(loaded.version);
                            act.state = Some(loaded);
                            act.suspect = false;
                            if changed {
                                log::info!(
                                    "family {family_id}: a commit of unknown outcome had landed"
                                );
                                act.broadcast();
                            }
                        } else {
                            act.suspect = false;
                        }
                    }
                    Err(err) => {
                        log::debug!("family {family_id}: reload after unknown outcome: {err}");
                        act.schedule_reload(ctx);
                    }
                }),
        );
    }

    fn snapshot(&self) -> Option<Snapshot> {
        self.state.as_ref().map(|s| Snapshot {
            version: s.version,
            board: s.board.as_ref().map(|b| b.to_board(s.version)),
        })
    }

    /// The current state as an SSE event, encoded once per version for all sessions.
    fn current_event(&mut self) -> Option<BoardEvent> {
        let version = self.state.as_ref()?.version;
        match &self.event {
            Some(event) if event.version == version => Some(event.clone()),
            _ => {
                let event = BoardEvent::encode(&self.snapshot()?);
                self.event = Some(event.clone());
                Some(event)
            }
        }
    }

    /// Forgets sessions that ended, and the encoded event once there are none.
    fn prune_sessions(&mut self) {
        self.sessions.retain(|session| session.connected());
        if self.sessions.is_empty() {
            self.sessions = Vec::new();
            self.event = None;
        }
    }

    /// Sends the current state to every SSE session.
    fn broadcast(&mut self) {
        self.prune_sessions();
        if self.sessions.is_empty() {
            return;
        }
        let Some(event) = self.current_event() else {
            return;
        };
        for session in &self.sessions {
            session.do_send(event.clone());
        }
    }

    fn remember_key(&mut self, key: (i64, String), board: Board) {
        if self.recent_keys.insert(key.clone(), board).is_none() {
            self.key_order.push_back(key);
        }
        while self.key_order.len() > RECENT_KEYS {
            if let Some(old) = self.key_order.pop_front() {
                self.recent_keys.remove(&old);
            }
        }
    }

    /// Stops when nothing has happened for the idle time, so memory stays proportional to active
    /// families. Queued messages of a stopped actor fail with `Closed` and the registry retries
    /// them on a fresh actor, which loads the committed state.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        self.prune_sessions();
        if self.sessions.is_empty() && self.last_active.elapsed() >= self.deps.timing.family_idle()
        {
            crate::registry::deregister(&self.deps.actors, self.family_id, &ctx.address());
            ctx.stop();
        }
    }
}

impl Actor for FamilyBoard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.deps
            .metrics
            .families_loaded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let every = (self.deps.timing.family_idle() / 4).max(Duration::from_millis(100));
        ctx.run_interval(every, Self::check_idle);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.deps
            .metrics
            .families_loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl FamilyBoard {
    /// Loads the family's state from the database unless the actor holds it already; resolves
    /// inside the actor, so what follows sees `state` set.
    fn ensure_loaded(&mut self) -> impl ActorFuture<Self, Output = Result<(), ApiError>> + use<> {
        self.last_active = Instant::now();
        let load = match self.state {
            Some(_) => None,
            None => Some((self.deps.db.clone(), self.family_id)),
        };
        async move {
            match load {
                Some((db, family_id)) => store::load(&db, family_id).await.map(Some),
                None => Ok(None),
            }
        }
        .into_actor(self)
        .map(|loaded, act: &mut Self, _| {
            if let Some(loaded) = loaded? {
                act.state = Some(loaded);
            }
            Ok(())
        })
    }
}

impl Handler<GetBoard> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<Snapshot, ApiError>>;

    fn handle(&mut self, _: GetBoard, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.ensure_loaded().map(|loaded, act, _| {
            loaded?;
            act.snapshot()
                .ok_or_else(|| ApiError::internal("state vanished"))
        })))
    }
}

impl Handler<Subscribe> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<(), ApiError>>;

    fn handle(&mut self, Subscribe { session }: Subscribe, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.ensure_loaded().map(move |loaded, act, _| {
            loaded?;
            // Pruned first: pruning the last session drops the cached event.
            act.prune_sessions();
            let event = act
                .current_event()
                .ok_or_else(|| ApiError::internal("state vanished"))?;
            session.do_send(event);
            act.sessions.push(session);
            Ok(())
        })))
    }
}

impl Handler<CloseSessions> for FamilyBoard {
    type Result = ();

    fn handle(&mut self, _: CloseSessions, _: &mut Context<Self>) {
        for session in self.sessions.drain(..) {
            session.do_send(CloseSession);
        }
        self.event = None;
    }
}

/// What a command turns into once the rules have spoken.
enum Plan {
    /// An idempotent retry: the first answer, nothing applied.
    Replay(Board),
    /// Commit `change`; afterwards the family shows `next`, and `notify` goes to the child.
    Change {
        change: BoardChange,
        next: Next,
        notify: Option<Notification>,
    },
}

/// The board shown after a change.
enum Next {
    Shown(Option<BoardRow>),
    /// A new board, whose id the database assigns on commit.
    Created(BoardRow),
}

enum Outcome {
    Replayed(Board),
    Changed(Loaded, Option<Notification>),
}

impl Handler<Command> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<Snapshot, ApiError>>;

    fn handle(&mut self, command: Command, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let key = command.key();
        if let Some(board) = key.as_ref().and_then(|k| self.recent_keys.get(k)) {
            let snapshot = Snapshot {
                version: board.version,
                board: Some(board.clone()),
            };
            return AtomicResponse::new(Box::pin(fut::ready(Ok(snapshot))));
        }
        // A suspect state is reloaded before the command is judged.
        let state = if self.suspect {
            None
        } else {
            self.state.clone()
        };
        let (deps, family_id) = (self.deps.clone(), self.family_id);
        let work = async move {
            let mut loaded = match state {
                Some(loaded) => loaded,
                None => store::load(&deps.db, family_id).await?,
            };
            // One retry after a version conflict: another process changed the board, so reload
            // and judge the command again against what it did.
            for attempt in 0..2 {
                let (change, next, notify) =
                    match plan(&deps.db, family_id, &loaded, &command).await? {
                        Plan::Replay(board) => return Ok(Outcome::Replayed(board)),
                        Plan::Change {
                            change,
                            next,
                            notify,
                        } => (change, next, notify),
                    };
                match deps.persister.send(CommitBoard(change)).await {
                    Ok(Ok(Committed { board_id })) => {
                        let next = match next {
                            Next::Shown(row) => row,
                            Next::Created(row) => Some(BoardRow {
                                id: board_id,
                                ..row
                            }),
                        };
                        let loaded = Loaded {
                            version: loaded.version + 1,
                            child_id: loaded.child_id,
                            board: next,
                        };
                        return Ok(Outcome::Changed(loaded, notify));
                    }
                    Ok(Err(PersistError::Conflict)) if attempt == 0 => {
                        log::warn!("family {family_id}: board version conflict, reloading");
                        loaded = store::load(&deps.db, family_id).await?;
                    }
                    Ok(Err(err)) => {
                        return Err(Failure {
                            uncertain: matches!(err, PersistError::Uncertain),
                            error: persist_error(err),
                        });
                    }
                    Err(err) => {
                        return Err(ApiError::internal(format!("persister: {err}")).into());
                    }
                }
            }
            Err(
                ApiError::conflict("conflict", "the board kept changing underneath; try again")
                    .into(),
            )
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(Outcome::Replayed(board)) => Ok(Snapshot {
                    version: board.version,
                    board: Some(board),
                }),
                Ok(Outcome::Changed(loaded, notify)) => {
                    // Built on a state read (or reloaded) before this command: current.
                    act.state = Some(loaded);
                    act.suspect = false;
                    act.deps
                        .metrics
                        .board_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let snapshot = act
                        .snapshot()
                        .ok_or_else(|| ApiError::internal("state vanished"))?;
                    if let (Some(key), Some(board)) = (key, &snapshot.board) {
                        act.remember_key(key, board.clone());
                    }
                    act.broadcast();
                    if let (Some(notification), Some(state)) = (notify, &act.state) {
                        act.deps.push.notify(state.child_id, notification);
                    }
                    Ok(snapshot)
                }
                Err(Failure { error, uncertain }) => {
                    if uncertain {
                        act.mark_suspect(ctx);
                    } else if matches!(error, ApiError::Internal(_)) {
                        // After a failure the database is the truth: reload on the next command.
                        act.state = None;
                    }
                    Err(error)
                }
            },
        )))
    }
}

fn persist_error(err: PersistError) -> ApiError {
    match err {
        PersistError::WishNotAvailable => wish_not_available(),
        PersistError::MissionLocked => mission_locked(),
        PersistError::Conflict => {
            ApiError::conflict("conflict", "the board changed underneath; try again")
        }
        // Database faults are 503/507, anything else 500 (one mapping: `From<PersistError>`).
        other => ApiError::from(other),
    }
}

pub fn mission_locked() -> ApiError {
    ApiError::conflict(
        "mission_locked",
        "the mission cannot change in its current state",
    )
}

fn wish_not_available() -> ApiError {
    ApiError::conflict(
        "wish_not_available",
        "this wish is not available for a board",
    )
}

fn no_board() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "no_board",
        "there is no active board",
    )
}

fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::BoardFull => {
            ApiError::conflict("board_full", "that many grapes do not fit on the board")
        }
        Refusal::NothingToAttach => {
            ApiError::conflict("nothing_to_attach", "there is no granted grape to attach")
        }
        Refusal::OutOfBounds => ApiError::invalid_field("count", "out of bounds"),
    }
}

fn event(
    kind: &'static str,
    count: i32,
    by: i64,
    key: Option<String>,
    after: Counts,
    status: BoardStatus,
) -> EventRow {
    EventRow {
        kind,
        count,
        by_user_id: by,
        idem_key: key,
        granted: after.granted,
        attached: after.attached,
        status: status.as_str(),
        at: model::now(),
    }
}

/// Judges a command against the loaded state: a refusal, a replay, or a change to commit.
async fn plan(
    db: &Db,
    family_id: i64,
    loaded: &Loaded,
    command: &Command,
) -> Result<Plan, ApiError> {
    let change = |op, events| BoardChange {
        family_id,
        base_version: loaded.version,
        op,
        events,
        approves: None,
    };
    if let Some((by, key)) = command.key()
        && let Some(board) = store::replay(db, by, &key).await?
    {
        return Ok(Plan::Replay(board));
    }
    match command {
        Command::Create { by, wish_id, size } => {
            let wish = store::family_wish(db, loaded.child_id, *wish_id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such wish"))?;
            if loaded.active().is_some() {
                return Err(ApiError::conflict(
                    "board_exists",
                    "a board is already active",
                ));
            }
            if !WishStatus::parse(&wish.status).is_some_and(rules::can_pick) {
                return Err(wish_not_available());
            }
            let counts =
                Counts::new(*size).map_err(|_| ApiError::invalid_field("size", "1-100"))?;
            let at = model::now();
            let mut wish = Wish::from(wish);
            wish.status = WishStatus::Picked.as_str().into();
            wish.picked_at = Some(at);
            let next = BoardRow {
                id: 0,
                wish,
                counts,
                status: BoardStatus::Active,
                created_at: at,
                completed_at: None,
            };
            let events = vec![event(
                "created",
                *size,
                *by,
                None,
                counts,
                BoardStatus::Active,
            )];
            Ok(Plan::Change {
                change: change(
                    BoardOp::Create {
                        wish_id: *wish_id,
                        size: *size,
                        at,
                    },
                    events,
                ),
                next: Next::Created(next),
                notify: None,
            })
        }
        Command::Cancel { by } => {
            let active = loaded.active().ok_or_else(no_board)?;
            let at = model::now();
            let events = vec![event(
                "cancelled",
                0,
                *by,
                None,
                active.counts,
                BoardStatus::Active,
            )];
            // Afterwards the family shows its latest completed board again, or none.
            let next = store::latest_completed(db, family_id).await?;
            Ok(Plan::Change {
                change: change(
                    BoardOp::Cancel {
                        board_id: active.id,
                        wish_id: active.wish.id,
                        at,
                    },
                    events,
                ),
                next: Next::Shown(next),
                notify: None,
            })
        }
        Command::Grant { by, count, key } => grant(
            family_id,
            loaded,
            Grant {
                by: *by,
                count: *count,
                key: key.clone(),
                approves: None,
                notify: Notification::grapes_granted(*count),
            },
        ),
        Command::Approve { by, mission_id } => {
            let mission = store::family_mission(db, family_id, *mission_id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such mission"))?;
            if mission.status != "submitted" {
                return Err(mission_locked());
            }
            // API.md: approving without a board is a conflict that changes nothing (409).
            if loaded.active().is_none() {
                return Err(ApiError::conflict(
                    "no_board",
                    "there is no active board for the reward",
                ));
            }
            grant(
                family_id,
                loaded,
                Grant {
                    by: *by,
                    count: mission.reward,
                    key: None,
                    approves: Some((mission.id, model::now())),
                    notify: Notification::mission_approved(&mission.title),
                },
            )
        }
        Command::Attach { by, key } => {
            let active = loaded.active().ok_or_else(no_board)?;
            let (counts, completes) = active.counts.attach().map_err(refusal)?;
            let mut next = BoardRow {
                counts,
                ..active.clone()
            };
            let mut events = Vec::with_capacity(2);
            let completed = if completes {
                let at = model::now();
                next.status = BoardStatus::Complete;
                next.completed_at = Some(at);
                next.wish.status = WishStatus::Given.as_str().into();
                next.wish.given_at = Some(at);
                events.push(event(
                    "attached",
                    1,
                    *by,
                    key.clone(),
                    counts,
                    BoardStatus::Complete,
                ));
                events.push(event(
                    "completed",
                    0,
                    *by,
                    None,
                    counts,
                    BoardStatus::Complete,
                ));
                Some((at, active.wish.id))
            } else {
                events.push(event(
                    "attached",
                    1,
                    *by,
                    key.clone(),
                    counts,
                    BoardStatus::Active,
                ));
                None
            };
            Ok(Plan::Change {
                change: change(
                    BoardOp::Update {
                        board_id: active.id,
                        granted: counts.granted,
                        attached: counts.attached,
                        completed,
                    },
                    events,
                ),
                next: Next::Shown(Some(next)),
                notify: None,
            })
        }
    }
}

/// Granting grapes, by hand or as a mission's reward.
struct Grant {
    by: i64,
    count: i32,
    key: Option<String>,
    approves: Option<(i64, chrono::DateTime<chrono::Utc>)>,
    notify: Notification,
}

fn grant(family_id: i64, loaded: &Loaded, grant: Grant) -> Result<Plan, ApiError> {
    let active = loaded.active().ok_or_else(no_board)?;
    let counts = active.counts.grant(grant.count).map_err(refusal)?;
    let events = vec![event(
        "granted",
        grant.count,
        grant.by,
        grant.key,
        counts,
        BoardStatus::Active,
    )];
    Ok(Plan::Change {
        change: BoardChange {
            family_id,
            base_version: loaded.version,
            op: BoardOp::Update {
                board_id: active.id,
                granted: counts.granted,
                attached: counts.attached,
                completed: None,
            },
            events,
            approves: grant.approves,
        },
        next: Next::Shown(Some(BoardRow {
            counts,
            ..active.clone()
        })),
        notify: Some(grant.notify),
    })
}

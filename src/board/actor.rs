//! The FamilyBoard actor: one per family, the only writer of its board on this node.
//!
//! It loads lazily, checks every rule in memory ([`super::rules`]), asks the Persister to commit,
//! and only after the commit updates its state, answers the caller and fans the new state out to
//! the family's SSE sessions. Commands are handled one at a time ([`AtomicResponse`]): the next
//! command of a family sees the previous one's committed result.
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::error::BoardError;
use super::messages::{BoardEvent, CloseSessions, Command, GetBoard, SseFrame, Subscribe};
use super::planner::{self, Facts, Next, Plan};
use super::store::{self, Loaded};
use super::view::{Board, BoardRow, Snapshot};
use crate::cluster::{ClusterEvent, Remote, Subscription};
use crate::coalesce::Coalesce;
use crate::fanout::{Event, Fanout};
use crate::model;
use crate::push::Notification;
use crate::recent::RecentKeys;
use crate::store::persister::{CommitBoard, Committed, PersistError};
use crate::store::{Db, StoreError};

/// How many recent idempotency keys each family remembers in memory; older ones are found in the
/// ledger.
const RECENT_KEYS: usize = 256;
/// Commands queued per family before senders wait (backpressure, not loss).
const MAILBOX: usize = 1024;
/// How often a family whose last commit had an unknown outcome tries to reload its state.
const SUSPECT_RELOAD_EVERY: Duration = Duration::from_millis(500);
/// How often one command is judged against a freshly reloaded board after losing a version
/// race to another node (cluster mode) before it answers 409 `conflict`: enough that parallel
/// grants on a few nodes meet `board_full`, not `conflict`, once the board is full.
const CONFLICT_ATTEMPTS: u32 = 5;

/// What every FamilyBoard needs from the application.
pub type BoardDeps = crate::registry::FamilyDeps<FamilyBoard>;

pub struct FamilyBoard {
    family_id: i64,
    deps: BoardDeps,
    state: Option<Loaded>,
    /// The family's SSE sessions on this node, and the other nodes.
    fanout: Fanout<SseFrame>,
    /// The current state encoded for the sessions, while there are any.
    event: Option<BoardEvent>,
    recent_keys: RecentKeys<(i64, String), Board>,
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
    /// Cluster mode: this family's events from the other nodes.
    subscription: Option<Subscription>,
    /// The newest version another node said it committed.
    heard: i64,
    /// Reloads after other nodes' changes, one at a time.
    catching_up: Coalesce,
}

/// A failed command; `uncertain` when its commit's outcome is unknown.
struct Failure {
    error: BoardError,
    uncertain: bool,
}

impl<E: Into<BoardError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            uncertain: false,
        }
    }
}

impl FamilyBoard {
    pub fn new(family_id: i64, deps: BoardDeps) -> Self {
        let fanout = Fanout::new(family_id, deps.bus());
        FamilyBoard {
            family_id,
            deps,
            state: None,
            fanout,
            event: None,
            recent_keys: RecentKeys::new(RECENT_KEYS),
            last_active: Instant::now(),
            suspect: false,
            suspect_epoch: 0,
            reload_scheduled: false,
            subscription: None,
            heard: 0,
            catching_up: Coalesce::default(),
        }
    }

    /// Another node committed `version` (`None`: events may have been missed), and sent the state
    /// it committed (`state`). One version past this node's own state, that state is taken as
    /// is: the version guard makes the state at a version one and the same on every node. Any
    /// other distance (a gap, a missed event) is never guessed across: the database is read, and
    /// the local sessions get the state read.
    fn remote_change(
        &mut self,
        version: Option<i64>,
        state: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(version) = version {
            self.heard = self.heard.max(version);
        }
        let Some(current) = self.state.as_ref().map(|s| s.version) else {
            // Nothing loaded: the next command or subscribe reads the database.
            return;
        };
        if let (Some(version), Some(state)) = (version, state)
            && version == current + 1
            && !self.suspect
        {
            match Loaded::from_event(state, version) {
                Some(loaded) => {
                    self.advance(loaded);
                    self.broadcast();
                    return;
                }
                None => log::warn!(
                    "family {}: another node's board state did not parse; reloading",
                    self.family_id
                ),
            }
        }
        if version.is_some_and(|v| v <= current) {
            return;
        }
        self.prune_sessions();
        if self.fanout.is_empty() {
            // Nobody watches here: load afresh at the next command or subscribe.
            self.state = None;
            return;
        }
        self.catch_up(ctx);
    }

    /// Reloads the state for the local sessions, one load at a time: a change heard of while a
    /// load runs gets one more load after it. Applied only if it moves the state forward, so the
    /// sessions see versions in order.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        if !self.catching_up.start() {
            return;
        }
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        ctx.spawn(
            crate::store::detached(async move { store::load(&db, family_id).await })
                .into_actor(self)
                .map(move |loaded, act, ctx| {
                    let again = act.catching_up.finish();
                    match loaded {
                        Ok(loaded) => {
                            if act.advance(loaded) {
                                act.broadcast();
                            }
                            let behind = act.state.as_ref().is_some_and(|s| s.version < act.heard);
                            if again || behind {
                                act.catch_up(ctx);
                            }
                        }
                        Err(err) => {
                            log::debug!("family {family_id}: reload after a remote change: {err}");
                            ctx.run_later(SUSPECT_RELOAD_EVERY, |act, ctx| act.catch_up(ctx));
                        }
                    }
                }),
        );
    }

    /// Takes `loaded` as the state if it is newer than the current one (or none is loaded).
    fn advance(&mut self, loaded: Loaded) -> bool {
        if self
            .state
            .as_ref()
            .is_some_and(|s| s.version >= loaded.version)
        {
            return false;
        }
        self.state = Some(loaded);
        true
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
            crate::store::detached(async move { store::load(&db, family_id).await })
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
        self.fanout.prune();
        if self.fanout.is_empty() {
            self.event = None;
        }
    }

    /// Sends the current state to every local SSE session.
    fn broadcast(&mut self) {
        self.prune_sessions();
        if self.fanout.is_empty() {
            return;
        }
        if let Some(event) = self.current_event() {
            self.fanout.local(SseFrame::Board(event));
        }
    }

    /// A committed change: the new state to every local SSE session, and the news to the other
    /// nodes (which reload it).
    fn publish(&mut self) {
        self.prune_sessions();
        let Some(version) = self.state.as_ref().map(|s| s.version) else {
            return;
        };
        let frame = if self.fanout.is_empty() {
            None
        } else {
            self.current_event()
        };
        // The other nodes take the state from the event (no read), so it is only built for them.
        let state = self
            .deps
            .cluster
            .as_ref()
            .and(self.state.as_ref())
            .and_then(|state| serde_json::to_string(state).ok());
        let news = Event::Board { version, state };
        match frame {
            Some(event) => self.fanout.committed(news, SseFrame::Board(event)),
            None => self.fanout.publish_only(news),
        }
    }

    /// Stops when nothing has happened for the idle time, so memory stays proportional to active
    /// families. Queued messages of a stopped actor fail with `Closed` and the registry retries
    /// them on a fresh actor, which loads the committed state.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        self.prune_sessions();
        if self.fanout.is_empty() && self.last_active.elapsed() >= self.deps.timing.family_idle() {
            crate::registry::deregister(&self.deps.actors, self.family_id, &ctx.address());
            ctx.stop();
        }
    }
}

/// A FamilyBoard that ends with sessions still open panicked (an idle stop has none, shutdown
/// closed them): end their streams, so the clients reconnect to a fresh FamilyBoard.
impl Drop for FamilyBoard {
    fn drop(&mut self) {
        for (_, session) in self.fanout.drain() {
            session.do_send(SseFrame::Close);
        }
    }
}

impl Actor for FamilyBoard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        if let Some(cluster) = &self.deps.cluster {
            self.subscription = Some(cluster.subscribe(self.family_id, ctx.address().recipient()));
        }
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
    fn ensure_loaded(&mut self) -> impl ActorFuture<Self, Output = Result<(), BoardError>> + use<> {
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
            if let Some(loaded) = loaded.map_err(BoardError::Store)? {
                act.state = Some(loaded);
            }
            Ok(())
        })
    }
}

impl Handler<GetBoard> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<Snapshot, BoardError>>;

    fn handle(&mut self, _: GetBoard, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.ensure_loaded().map(|loaded, act, _| {
            loaded?;
            act.snapshot().ok_or_else(state_vanished)
        })))
    }
}

impl Handler<Subscribe> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<(), BoardError>>;

    fn handle(&mut self, subscribe: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let Subscribe {
            session_id,
            session,
        } = subscribe;
        AtomicResponse::new(Box::pin(self.ensure_loaded().map(move |loaded, act, _| {
            loaded?;
            // Pruned first: pruning the last session drops the cached event.
            act.prune_sessions();
            let event = act.current_event().ok_or_else(state_vanished)?;
            session.do_send(SseFrame::Board(event));
            act.fanout.add(session_id, session);
            Ok(())
        })))
    }
}

impl Handler<CloseSessions> for FamilyBoard {
    type Result = ();

    fn handle(&mut self, _: CloseSessions, _: &mut Context<Self>) {
        for (_, session) in self.fanout.drain() {
            session.do_send(SseFrame::Close);
        }
        self.event = None;
    }
}

impl Handler<Remote> for FamilyBoard {
    type Result = ();

    /// Another node committed a version (or events may have been missed: `Resync`): reload
    /// unless this node is there already (a version gap is never guessed across: the database
    /// is read), then show it to the local sessions.
    fn handle(&mut self, remote: Remote, ctx: &mut Context<Self>) {
        match remote {
            Remote::Event(ClusterEvent::Board { version, state }) => {
                self.remote_change(Some(version), state.as_deref(), ctx)
            }
            Remote::Event(ClusterEvent::Chat { .. } | ClusterEvent::Presence { .. }) => {}
            Remote::Resync => self.remote_change(None, None, ctx),
        }
    }
}

enum Outcome {
    Replayed(Board),
    Changed(Loaded, Option<Notification>),
}

impl Handler<Command> for FamilyBoard {
    type Result = AtomicResponse<Self, Result<Snapshot, BoardError>>;

    fn handle(&mut self, command: Command, _: &mut Context<Self>) -> Self::Result {
        self.deps.panics.check_board(self.family_id);
        self.last_active = Instant::now();
        let key = command.key();
        if let Some(board) = key.as_ref().and_then(|k| self.recent_keys.get(k)) {
            let snapshot = Snapshot {
                version: board.version,
                board: Some(board.clone()),
            };
            return AtomicResponse::new(Box::pin(fut::ready(Ok(snapshot))));
        }
        // A suspect state is reloaded before the command is judged, and so is one behind a
        // version another node announced (judging it would only meet the version guard).
        let behind = self.state.as_ref().is_some_and(|s| s.version < self.heard);
        let state = if self.suspect || behind {
            None
        } else {
            self.state.clone()
        };
        let (deps, family_id) = (self.deps.clone(), self.family_id);
        let work = async move {
            // Whether `loaded` was just read: memory may be behind another node's commit.
            let mut fresh = state.is_none();
            let mut loaded = match state {
                Some(loaded) => loaded,
                None => store::load(&deps.db, family_id).await?,
            };
            // After a version conflict another node changed the board: reload and judge the
            // command again against what it did. Each conflict means another change committed,
            // so the family moves on; the bound only caps one request's work.
            for attempt in 1..=CONFLICT_ATTEMPTS {
                let facts = facts(&deps.db, family_id, &loaded, &command).await?;
                let (change, next, notify) =
                    match planner::plan(family_id, &loaded, &command, facts, model::now()) {
                        Ok(Plan::Replay(board)) => return Ok(Outcome::Replayed(board)),
                        Ok(Plan::Change {
                            change,
                            next,
                            notify,
                        }) => (change, next, notify),
                        // In cluster mode a refusal judged from memory is confirmed against the
                        // database: a grant on another node may not have reached this one yet,
                        // and "nothing to attach" must not answer a child who has grapes.
                        Err(refusal) if deps.cluster.is_some() && !fresh => {
                            let reloaded = store::load(&deps.db, family_id).await?;
                            if reloaded.version == loaded.version {
                                return Err(refusal.into());
                            }
                            (loaded, fresh) = (reloaded, true);
                            continue;
                        }
                        Err(refusal) => return Err(refusal.into()),
                    };
                match deps.persister.addr().send(CommitBoard(change)).await {
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
                    Ok(Err(PersistError::Conflict)) if attempt < CONFLICT_ATTEMPTS => {
                        log::warn!("family {family_id}: board version conflict, reloading");
                        loaded = store::load(&deps.db, family_id).await?;
                        fresh = true;
                    }
                    Ok(Err(err)) => {
                        return Err(Failure {
                            uncertain: matches!(err, PersistError::Store(StoreError::Uncertain)),
                            error: persist_error(err),
                        });
                    }
                    Err(err) => {
                        return Err(BoardError::Internal(format!("persister: {err}")).into());
                    }
                }
            }
            Err(BoardError::Conflict.into())
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(Outcome::Replayed(board)) => Ok(Snapshot {
                    version: board.version,
                    board: Some(board),
                }),
                Ok(Outcome::Changed(loaded, notify)) => {
                    // Built on a state read (or reloaded) before this command and committed
                    // under its version guard: newer than anything committed before it. (A
                    // reload after another node's later change may have moved past it already.)
                    let snapshot = Snapshot {
                        version: loaded.version,
                        board: loaded.board.as_ref().map(|b| b.to_board(loaded.version)),
                    };
                    let child_id = loaded.child_id;
                    let newest = act.advance(loaded);
                    act.suspect = false;
                    act.deps
                        .metrics
                        .board_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if act.state.as_ref().is_some_and(|s| s.version < act.heard) {
                        act.remote_change(None, None, ctx);
                    }
                    if let (Some(key), Some(board)) = (key, &snapshot.board) {
                        act.recent_keys.insert(key, board.clone());
                    }
                    if newest {
                        act.publish();
                    } else {
                        act.fanout.publish_only(Event::Board {
                            version: snapshot.version,
                            state: None,
                        });
                    }
                    if let Some(notification) = notify {
                        act.deps.push.notify(child_id, notification);
                    }
                    Ok(snapshot)
                }
                Err(Failure { error, uncertain }) => {
                    if uncertain {
                        act.mark_suspect(ctx);
                    } else if matches!(
                        error,
                        BoardError::Internal(_) | BoardError::Store(StoreError::Database(_))
                    ) {
                        // After a failure the database is the truth: reload on the next command.
                        act.state = None;
                    }
                    Err(error)
                }
            },
        )))
    }
}

fn persist_error(err: PersistError) -> BoardError {
    match err {
        PersistError::WishNotAvailable => BoardError::WishNotAvailable,
        PersistError::MissionLocked => BoardError::MissionLocked,
        PersistError::Conflict => BoardError::Conflict,
        PersistError::Store(err) => BoardError::Store(err),
    }
}

fn state_vanished() -> BoardError {
    BoardError::Internal("the board's state vanished".into())
}

/// Reads what the planner needs for `command` besides the loaded state.
async fn facts(
    db: &Db,
    family_id: i64,
    loaded: &Loaded,
    command: &Command,
) -> Result<Facts, StoreError> {
    let mut facts = Facts::default();
    if let Some((by, key)) = command.key() {
        facts.replay = store::replay(db, by, &key).await?;
        if facts.replay.is_some() {
            return Ok(facts);
        }
    }
    match command {
        Command::Create { wish_id, .. } => {
            facts.wish = store::family_wish(db, loaded.child_id, *wish_id).await?;
        }
        Command::Cancel { .. } if loaded.active().is_some() => {
            facts.latest_completed = store::latest_completed(db, family_id).await?;
        }
        Command::Approve { mission_id, .. } => {
            facts.mission = store::family_mission(db, family_id, *mission_id).await?;
        }
        _ => {}
    }
    Ok(facts)
}

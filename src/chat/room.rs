//! The ChatRoom actor: one per family. It holds the family's open sessions and who is present
//! (memory only), assigns `seq` and commits messages through the Persister in groups, and after
//! each commit acks the senders and fans the messages out, in seq order.
//!
//! Only one group of a room is in the Persister at a time: the next group is formed when the
//! previous one committed, so a failed commit never leaves a gap in the family's seqs.
//!
//! Cluster mode (docs/ARCHITECTURE.md "Cluster"): other nodes write the family too, so the
//! database hands out the seqs at commit (the room learns them from the Persister), messages
//! committed elsewhere arrive as [`Remote`] events, and the room's sequencer delivers the
//! family's messages to its sessions in seq order, filling a gap from the database when an
//! event is late or lost. Presence covers every node: the room tells the cluster who is in it
//! here and asks who is in it elsewhere.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;

use super::error::ChatError;
use super::frames::{ChatMessage, ServerFrame};
use super::messages::{CloseRoom, CloseSession, Deliver, Hello, Join, Leave, Post, SetVisible};
use super::store::{self, CLIENT_ID_WINDOW, Page, RoomStart};
use crate::cluster::{ClusterEvent, Remote, Subscription};
use crate::coalesce::Coalesce;
use crate::error::ErrorCode;
use crate::fanout::{Event, Fanout};
use crate::model;
use crate::push::Notification;
use crate::recent::RecentKeys;
use crate::registry::deregister;
use crate::store::StoreError;
use crate::store::persister::{CommitMessages, MessageRow, PersistError};

/// Messages a room holds accepted and not yet committed (pending plus the group in flight). A
/// `send` past it is answered with `too_many_pending` and nothing is stored: the family's
/// sessions (each with at most 256 unanswered sends) cannot make the room queue without bound
/// while the database is slow.
pub const MAX_ROOM_PENDING: usize = 1024;
/// Cluster mode: messages a room holds back behind a gap in seqs (a message of another node not
/// heard of yet). Past it they are dropped and read again from the database with the gap.
pub const MAX_AHEAD: usize = 4096;
/// How long a gap may wait for the other node's event before the room reads the database: an
/// event through Redis usually takes a millisecond or two. A gap that this room's own commit,
/// in flight when the gap showed, may fill waits for that commit instead (its seqs are known only
/// when it answers; a commit begun later takes seqs above the gap).
const GAP_WAIT: Duration = Duration::from_millis(100);
/// Messages per database read when the room catches up (a gap, a resync).
const CATCH_UP_PAGE: u64 = 500;
/// After a failed catch-up read, the next try.
const CATCH_UP_RETRY: Duration = Duration::from_millis(500);

/// What every ChatRoom (and its sessions) needs from the application.
pub type ChatDeps = crate::registry::FamilyDeps<ChatRoom>;

struct SessionEntry {
    user_id: i64,
    visible: bool,
    close: Recipient<CloseSession>,
}

/// An accepted message waiting for its group's commit.
struct Outgoing {
    sender_id: i64,
    client_id: String,
    text: String,
}

type Key = (i64, String);

struct RoomState {
    /// The highest seq known to be committed (on one node: the last the room handed out).
    last_seq: i64,
    members: HashMap<i64, String>,
    recent: RecentKeys<Key, i64>,
    /// The room started with every message in `recent`: while nothing was forgotten since, a
    /// miss there means a new client id.
    started_complete: bool,
}

impl RoomState {
    fn from_start(start: RoomStart) -> Self {
        let mut state = RoomState {
            last_seq: start.last_seq,
            members: start.members,
            recent: RecentKeys::new(CLIENT_ID_WINDOW),
            started_complete: start.complete,
        };
        for (key, seq) in start.recent {
            state.recent.insert(key, seq);
        }
        state
    }

    /// `recent` holds every message of the room.
    fn complete(&self) -> bool {
        self.started_complete && !self.recent.evicted()
    }
}

pub struct ChatRoom {
    family_id: i64,
    deps: Arc<ChatDeps>,
    state: Option<RoomState>,
    sessions: HashMap<u64, SessionEntry>,
    /// Where the sessions' frames go: this node's sessions (keyed like `sessions`) and the other
    /// nodes.
    fanout: Fanout<Deliver>,
    /// Accepted, not yet handed to the Persister.
    pending: Vec<Outgoing>,
    /// Sessions to ack per client id that is pending or being committed.
    waiting: HashMap<Key, Vec<u64>>,
    in_flight: bool,
    /// Groups handed to the Persister so far (which one is in flight).
    commits: u64,
    closing: bool,
    last_active: Instant,
    /// The highest seq delivered to the sessions (`hello.last_seq`); every seq up to it was
    /// delivered, in order. Set at the first load, kept across reloads.
    delivered: Option<i64>,
    /// Committed messages past a gap, held back until the gap is filled (cluster mode).
    ahead: BTreeMap<i64, ByteString>,
    gap_check: bool,
    /// Catch-up reads, one at a time.
    catching_up: Coalesce,
    /// Cluster mode: this family's events from the other nodes.
    subscription: Option<Subscription>,
    /// Members in the room on other nodes (cluster mode), as last asked.
    others: BTreeSet<i64>,
    /// Questions to the cluster about the other nodes, one at a time.
    asking_others: Coalesce,
    /// Members this room told the cluster are in it here.
    joined: BTreeSet<i64>,
}

/// Who is in the room: here, and anywhere.
struct PresenceView {
    local: BTreeSet<i64>,
    all: BTreeSet<i64>,
}

impl ChatRoom {
    pub fn new(family_id: i64, deps: Arc<ChatDeps>) -> Self {
        let fanout = Fanout::new(family_id, deps.bus());
        ChatRoom {
            family_id,
            deps,
            state: None,
            sessions: HashMap::new(),
            fanout,
            pending: Vec::new(),
            waiting: HashMap::new(),
            in_flight: false,
            commits: 0,
            closing: false,
            last_active: Instant::now(),
            delivered: None,
            ahead: BTreeMap::new(),
            gap_check: false,
            catching_up: Coalesce::default(),
            subscription: None,
            others: BTreeSet::new(),
            asking_others: Coalesce::default(),
            joined: BTreeSet::new(),
        }
    }

    /// Members with a visible session on this node.
    fn local_present(&self) -> BTreeSet<i64> {
        self.sessions
            .values()
            .filter(|s| s.visible)
            .map(|s| s.user_id)
            .collect()
    }

    /// Members in the room on any node.
    fn present(&self) -> BTreeSet<i64> {
        let mut all = self.local_present();
        all.extend(self.others.iter().copied());
        all
    }

    fn presence_view(&self) -> PresenceView {
        let local = self.local_present();
        let mut all = local.clone();
        all.extend(self.others.iter().copied());
        PresenceView { local, all }
    }

    /// Takes the room's state as loaded; the delivery cursor starts there the first time, and
    /// later loads that found messages past it catch up.
    fn loaded(&mut self, start: RoomStart, ctx: &mut Context<Self>) {
        let last_seq = start.last_seq;
        self.state = Some(RoomState::from_start(start));
        match self.delivered {
            None => self.delivered = Some(last_seq),
            Some(delivered) if delivered < last_seq => self.catch_up(ctx),
            Some(_) => {}
        }
    }

    /// A committed message (of this node or another): delivered now if it is the next seq,
    /// else held until the gap before it is filled.
    fn hold(&mut self, seq: i64, frame: ByteString, ctx: &mut Context<Self>) {
        let Some(delivered) = self.delivered else {
            return;
        };
        if seq <= delivered {
            return;
        }
        if self.fanout.is_empty() {
            // Nobody to deliver to: a session that joins later resumes from the database.
            self.delivered = Some(seq.max(delivered));
            self.ahead.clear();
            return;
        }
        if self.ahead.len() >= MAX_AHEAD {
            self.ahead.clear();
        }
        self.ahead.insert(seq, frame);
        self.drain_ahead(ctx);
    }

    /// Delivers the held messages that follow the cursor without a gap; a gap left is read from
    /// the database if it is still there after [`GAP_WAIT`].
    fn drain_ahead(&mut self, ctx: &mut Context<Self>) {
        let Some(mut delivered) = self.delivered else {
            return;
        };
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > delivered + 1 {
                break;
            }
            let (seq, frame) = entry.remove_entry();
            if seq == delivered + 1 {
                delivered = seq;
                self.fanout.local(Deliver::message(seq, frame));
            }
        }
        self.delivered = Some(delivered);
        if !self.ahead.is_empty() && !self.gap_check {
            self.gap_check = true;
            let own = self.in_flight.then_some(self.commits);
            ctx.run_later(GAP_WAIT, move |act, ctx| {
                act.gap_check = false;
                if act.ahead.is_empty() {
                    return;
                }
                if act.in_flight && own == Some(act.commits) {
                    // The gap may be this room's own group: wait for its answer rather than
                    // read the database (under load that is every family's gap at once).
                    act.drain_ahead(ctx);
                } else {
                    act.catch_up(ctx);
                }
            });
        }
    }

    /// Reads the messages after the delivery cursor from the database and delivers them in
    /// order (a gap, a resync, a reload that found more); one read at a time.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.delivered else {
            return;
        };
        if !self.catching_up.start() {
            return;
        }
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        ctx.spawn(
            crate::store::detached(async move {
                store::page(&db, family_id, Page::After(after), CATCH_UP_PAGE).await
            })
            .into_actor(self)
            .map(move |page, act, ctx| {
                let again = act.catching_up.finish();
                match page {
                    Ok(messages) => {
                        let full = messages.len() as u64 == CATCH_UP_PAGE;
                        for message in &messages {
                            let key = (message.sender_id, message.client_id.clone());
                            // This room's own message, committed while the read ran: its
                            // senders get the ack before the message (its commit's answer,
                            // still on its way, then finds nobody to ack).
                            if let Some(senders) = act.waiting.remove(&key) {
                                let ack = ServerFrame::Ack {
                                    client_id: &message.client_id,
                                    seq: message.seq,
                                }
                                .encode();
                                for session_id in senders {
                                    act.answer(session_id, ack.clone());
                                }
                            }
                            if let Some(state) = act.state.as_mut() {
                                state.last_seq = state.last_seq.max(message.seq);
                                state.recent.insert(key, message.seq);
                            }
                            let frame = ServerFrame::Message(message).encode();
                            act.hold(message.seq, frame, ctx);
                        }
                        if full || again {
                            act.catch_up(ctx);
                        }
                    }
                    Err(err) => {
                        log::warn!("family {family_id}: catching up the chat failed: {err}");
                        ctx.run_later(CATCH_UP_RETRY, |act, ctx| act.catch_up(ctx));
                    }
                }
            }),
        );
    }

    /// Asks the cluster who is in the room on other nodes (after a notice or a resync), then
    /// tells the sessions who came or went; one question at a time.
    fn ask_others(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.deps.cluster.clone() else {
            return;
        };
        if !self.asking_others.start() {
            return;
        }
        let family_id = self.family_id;
        ctx.spawn(
            async move { cluster.others_present(family_id).await }
                .into_actor(self)
                .map(move |others, act, ctx| {
                    let again = act.asking_others.finish();
                    match others {
                        Ok(others) => {
                            let before = act.presence_view();
                            act.others = others.into_iter().collect();
                            act.presence_moved(before, None);
                        }
                        // The last answer stands; the next notice or resync asks again.
                        Err(err) => log::debug!("family {family_id}: cluster presence: {err}"),
                    }
                    if again {
                        act.ask_others(ctx);
                    }
                }),
        );
    }

    /// Sends the ack or refusal of one of its `send`s to a session.
    fn answer(&self, session_id: u64, frame: ByteString) {
        if let Some(session) = self.fanout.get(session_id) {
            session.do_send(Deliver::answer(frame));
        }
    }

    /// After a change of who is in the room: tells the cluster who entered or left it here, and
    /// every session but `except` who entered or left it anywhere.
    fn presence_moved(&mut self, before: PresenceView, except: Option<u64>) {
        let after = self.presence_view();
        if let Some(cluster) = &self.deps.cluster {
            for &user_id in before.local.symmetric_difference(&after.local) {
                if after.local.contains(&user_id) {
                    cluster.join(self.family_id, user_id);
                    self.joined.insert(user_id);
                } else if self.joined.remove(&user_id) {
                    cluster.leave(self.family_id, user_id);
                }
            }
        }
        for (user_id, present) in before
            .all
            .symmetric_difference(&after.all)
            .map(|&u| (u, after.all.contains(&u)))
        {
            let frame = ServerFrame::Presence { user_id, present }.encode();
            for &id in self.sessions.keys() {
                if Some(id) != except
                    && let Some(session) = self.fanout.get(id)
                {
                    session.do_send(Deliver::notice(frame.clone()));
                }
            }
        }
    }

    fn accept(&mut self, post: Post, ctx: &mut Context<Self>) {
        let key = (post.sender_id, post.client_id);
        if let Some(seq) = self.state.as_ref().and_then(|s| s.recent.get(&key)) {
            let frame = ServerFrame::Ack {
                client_id: &key.1,
                seq: *seq,
            }
            .encode();
            return self.answer(post.session_id, frame);
        }
        if let Some(waiters) = self.waiting.get_mut(&key) {
            return waiters.push(post.session_id);
        }
        if self.waiting.len() >= MAX_ROOM_PENDING {
            let frame = ServerFrame::Error {
                code: ErrorCode::TooManyPending,
                message: "the family's room has too many messages waiting to be stored; send again after an ack",
            }
            .encode();
            return self.answer(post.session_id, frame);
        }
        self.waiting.insert(key.clone(), vec![post.session_id]);
        self.pending.push(Outgoing {
            sender_id: key.0,
            client_id: key.1,
            text: post.text,
        });
        self.flush(ctx);
    }

    /// Hands everything pending to the Persister as one group, unless a group is in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending.is_empty() {
            return self.finish_closing();
        }
        let Some(state) = self.state.as_ref() else {
            // After a failed reload: load again rather than leave the senders unanswered.
            return self.reload(ctx);
        };
        let created_at = model::now();
        // In cluster mode the database hands out the seqs (0 here is never stored).
        let first = if self.deps.cluster.is_some() {
            0
        } else {
            state.last_seq + 1
        };
        let assign = self.deps.cluster.is_none();
        let rows: Vec<MessageRow> = std::mem::take(&mut self.pending)
            .into_iter()
            .zip(first..)
            .map(|(m, seq)| MessageRow {
                seq,
                sender_id: m.sender_id,
                client_id: m.client_id,
                text: m.text,
                created_at,
            })
            .collect();
        self.in_flight = true;
        self.commits += 1;
        let commit = self.deps.persister.addr().send(CommitMessages {
            family_id: self.family_id,
            rows: rows.clone(),
        });
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.in_flight = false;
            match result {
                Ok(Ok(first)) => {
                    let mut rows = rows;
                    if !assign {
                        for (row, seq) in rows.iter_mut().zip(first..) {
                            row.seq = seq;
                        }
                    }
                    act.committed(rows, ctx)
                }
                Ok(Err(PersistError::Conflict)) => {
                    let group = rows
                        .into_iter()
                        .map(|r| Outgoing {
                            sender_id: r.sender_id,
                            client_id: r.client_id,
                            text: r.text,
                        })
                        .collect();
                    return act.recover(group, ctx);
                }
                Ok(Err(err)) => {
                    if matches!(err, PersistError::Store(StoreError::Uncertain)) {
                        // The group may still land with these seqs: never hand them out again
                        // from memory. The next flush (or join) reloads last_seq and the recent
                        // client ids from the database; a resend of a message that did land is
                        // then acked with its stored seq.
                        act.state = None;
                    }
                    act.refuse(keys_of(&rows), &err.to_string());
                }
                Err(err) => act.refuse(keys_of(&rows), &err.to_string()),
            }
            act.flush(ctx);
        }));
    }

    /// After commit: for each message in seq order, ack its senders, then deliver it everywhere,
    /// and push it to every other member who is not in the room at this moment.
    fn committed(&mut self, rows: Vec<MessageRow>, ctx: &mut Context<Self>) {
        let present = self.present();
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let mut frames = Vec::with_capacity(rows.len());
        for row in rows {
            state.last_seq = state.last_seq.max(row.seq);
            let key = (row.sender_id, row.client_id);
            state.recent.insert(key.clone(), row.seq);
            let message = ChatMessage {
                seq: row.seq,
                sender_id: row.sender_id,
                sender_name: state
                    .members
                    .get(&row.sender_id)
                    .cloned()
                    .unwrap_or_default(),
                text: row.text,
                client_id: key.1.clone(),
                created_at: row.created_at,
            };
            let ack = ServerFrame::Ack {
                client_id: &key.1,
                seq: row.seq,
            }
            .encode();
            for session_id in self.waiting.remove(&key).unwrap_or_default() {
                if let Some(session) = self.fanout.get(session_id) {
                    session.do_send(Deliver::answer(ack.clone()));
                }
            }
            let frame = ServerFrame::Message(&message).encode();
            self.fanout.publish_only(Event::Message {
                seq: row.seq,
                sender_id: row.sender_id,
                client_id: key.1,
                frame: frame.clone(),
            });
            frames.push((row.seq, frame));
            for &member in state.members.keys() {
                if member != row.sender_id && !present.contains(&member) {
                    self.deps
                        .push
                        .notify(member, Notification::chat(&message.text));
                }
            }
        }
        for (seq, frame) in frames {
            self.hold(seq, frame, ctx);
        }
    }

    /// These messages were not stored: their senders get an error frame and may send again.
    fn refuse(&mut self, keys: Vec<Key>, reason: &str) {
        log::error!(
            "family {}: {} messages not stored: {reason}",
            self.family_id,
            keys.len()
        );
        for key in keys {
            let frame = ServerFrame::Error {
                code: ErrorCode::NotStored,
                message: "the message could not be stored; send it again",
            }
            .encode();
            for session_id in self.waiting.remove(&key).unwrap_or_default() {
                self.answer(session_id, frame.clone());
            }
        }
    }

    /// Another writer got there first (another server, or a resend older than the room's memory):
    /// reload, ack what is already stored, and commit the rest again.
    fn recover(&mut self, group: Vec<Outgoing>, ctx: &mut Context<Self>) {
        log::warn!(
            "family {}: chat seq conflict, reloading the room",
            self.family_id
        );
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        ctx.wait(
            async move {
                let start = store::load_room(&db, family_id).await?;
                let mut stored = Vec::new();
                for m in &group {
                    stored.push(store::seq_of(&db, family_id, m.sender_id, &m.client_id).await?);
                }
                Ok::<_, StoreError>((start, group, stored))
            }
            .into_actor(self)
            .map(|loaded, act, ctx| match loaded {
                Ok((start, group, stored)) => {
                    act.loaded(start, ctx);
                    let mut retry = Vec::new();
                    for (m, seq) in group.into_iter().zip(stored) {
                        match seq {
                            Some(seq) => {
                                let key = (m.sender_id, m.client_id);
                                let ack = ServerFrame::Ack {
                                    client_id: &key.1,
                                    seq,
                                }
                                .encode();
                                for id in act.waiting.remove(&key).unwrap_or_default() {
                                    act.answer(id, ack.clone());
                                }
                            }
                            None => retry.push(m),
                        }
                    }
                    retry.append(&mut act.pending);
                    act.pending = retry;
                    act.flush(ctx);
                }
                Err(err) => {
                    // Without its state the room cannot assign seqs: refuse everything waiting
                    // and load afresh with the next session.
                    act.state = None;
                    act.pending.clear();
                    let keys = act.waiting.keys().cloned().collect();
                    act.refuse(keys, &err.to_string());
                }
            }),
        );
    }

    /// Loads the room's state (lost after a failed reload), then commits what is pending.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        ctx.wait(
            async move { store::load_room(&db, family_id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| match loaded {
                    Ok(start) => {
                        act.loaded(start, ctx);
                        act.flush(ctx);
                    }
                    Err(err) => {
                        act.pending.clear();
                        let keys = act.waiting.keys().cloned().collect();
                        act.refuse(keys, &err.to_string());
                        act.finish_closing();
                    }
                }),
        );
    }

    fn finish_closing(&mut self) {
        if self.closing && !self.in_flight && self.pending.is_empty() {
            for (_, session) in self.sessions.drain() {
                session.close.do_send(CloseSession { code: 1001 });
            }
            self.fanout.drain().for_each(drop);
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        self.fanout.prune();
        let fanout = &self.fanout;
        self.sessions.retain(|id, _| fanout.get(*id).is_some());
        let idle = self.last_active.elapsed() >= self.deps.timing.family_idle();
        if idle && self.sessions.is_empty() && self.pending.is_empty() && !self.in_flight {
            deregister(&self.deps.actors, self.family_id, &ctx.address());
            ctx.stop();
        }
    }
}

fn keys_of(rows: &[MessageRow]) -> Vec<Key> {
    rows.iter()
        .map(|m| (m.sender_id, m.client_id.clone()))
        .collect()
}

/// A ChatRoom that ends with sessions still in it panicked (an idle stop has none, shutdown
/// closed them): close them with 1011, so the clients reconnect to a fresh room and resume.
impl Drop for ChatRoom {
    fn drop(&mut self) {
        for session in self.sessions.values() {
            session.close.do_send(CloseSession { code: 1011 });
        }
        // The members it told the cluster about are no longer in the room through it.
        if let Some(cluster) = &self.deps.cluster {
            for &user_id in &self.joined {
                cluster.leave(self.family_id, user_id);
            }
        }
    }
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
        if let Some(cluster) = &self.deps.cluster {
            self.subscription = Some(cluster.subscribe(self.family_id, ctx.address().recipient()));
        }
        let every = (self.deps.timing.family_idle() / 4).max(Duration::from_millis(100));
        ctx.run_interval(every, Self::check_idle);
    }
}

impl Handler<Join> for ChatRoom {
    type Result = AtomicResponse<Self, Result<Hello, ChatError>>;

    fn handle(&mut self, join: Join, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let load = match self.state {
            Some(_) => None,
            None => Some((self.deps.db.clone(), self.family_id)),
        };
        // Cluster mode: who is in the room on other nodes, for the hello (bounded by the
        // cluster's present timeout; on an error the last answer stands).
        let (cluster, family_id) = (self.deps.cluster.clone(), self.family_id);
        AtomicResponse::new(Box::pin(
            async move {
                let others = match cluster {
                    Some(cluster) => cluster.others_present(family_id).await.ok(),
                    None => None,
                };
                let loaded = match load {
                    Some((db, family_id)) => store::load_room(&db, family_id).await.map(Some),
                    None => Ok(None),
                };
                (loaded, others)
            }
            .into_actor(self)
            .map(move |(loaded, others), act, ctx| {
                if let Some(start) = loaded? {
                    act.loaded(start, ctx);
                }
                let before = act.presence_view();
                if let Some(others) = others {
                    act.others = others.into_iter().collect();
                }
                act.sessions.insert(
                    join.session_id,
                    SessionEntry {
                        user_id: join.user_id,
                        visible: true,
                        close: join.close,
                    },
                );
                act.fanout.add(join.session_id, join.deliver);
                act.presence_moved(before, Some(join.session_id));
                Ok(Hello {
                    last_seq: act.delivered.unwrap_or(0),
                    present: act.present().into_iter().collect(),
                })
            }),
        ))
    }
}

impl Handler<Leave> for ChatRoom {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Context<Self>) {
        self.last_active = Instant::now();
        let before = self.presence_view();
        self.sessions.remove(&leave.session_id);
        self.fanout.remove(leave.session_id);
        for waiters in self.waiting.values_mut() {
            waiters.retain(|&id| id != leave.session_id);
        }
        self.presence_moved(before, None);
    }
}

impl Handler<SetVisible> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SetVisible, _: &mut Context<Self>) {
        self.last_active = Instant::now();
        let before = self.presence_view();
        if let Some(session) = self.sessions.get_mut(&msg.session_id) {
            session.visible = msg.visible;
        }
        self.presence_moved(before, Some(msg.session_id));
    }
}

impl Handler<Post> for ChatRoom {
    type Result = ();

    fn handle(&mut self, post: Post, ctx: &mut Context<Self>) {
        self.deps.panics.check_room(self.family_id);
        self.last_active = Instant::now();
        let complete = self.state.as_ref().is_some_and(RoomState::complete);
        let key_known = self.state.as_ref().is_some_and(|s| {
            s.recent
                .get(&(post.sender_id, post.client_id.clone()))
                .is_some()
        });
        if complete
            || key_known
            || self
                .waiting
                .contains_key(&(post.sender_id, post.client_id.clone()))
        {
            return self.accept(post, ctx);
        }
        // The room has more history than it remembers: ask the database whether this client id
        // was stored long ago, holding other work until it answers.
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        let (sender_id, client_id) = (post.sender_id, post.client_id.clone());
        ctx.wait(
            async move { store::seq_of(&db, family_id, sender_id, &client_id).await }
                .into_actor(self)
                .map(move |stored, act, ctx| match stored {
                    Ok(Some(seq)) => {
                        let frame = ServerFrame::Ack {
                            client_id: &post.client_id,
                            seq,
                        }
                        .encode();
                        act.answer(post.session_id, frame);
                    }
                    Ok(None) => act.accept(post, ctx),
                    Err(err) => {
                        log::error!("family {family_id}: client id lookup failed: {err}");
                        let frame = ServerFrame::Error {
                            code: ErrorCode::NotStored,
                            message: "the message could not be stored; send it again",
                        }
                        .encode();
                        act.answer(post.session_id, frame);
                    }
                }),
        );
    }
}

impl Handler<CloseRoom> for ChatRoom {
    type Result = ();

    fn handle(&mut self, _: CloseRoom, _: &mut Context<Self>) {
        self.closing = true;
        self.finish_closing();
    }
}

impl Handler<Remote> for ChatRoom {
    type Result = ();

    /// What another node committed or saw: its messages go through the sequencer (a resend of
    /// one of them here is acked with its seq), presence notices make the room ask again who
    /// is in it elsewhere, and a resync (events may have been missed) does both from the source.
    fn handle(&mut self, remote: Remote, ctx: &mut Context<Self>) {
        match remote {
            Remote::Event(ClusterEvent::Chat {
                seq,
                sender_id,
                client_id,
                frame,
            }) => {
                let Some(state) = self.state.as_mut() else {
                    // Not loaded: the next load reads the database.
                    return;
                };
                state.last_seq = state.last_seq.max(seq);
                state.recent.insert((sender_id, client_id), seq);
                self.hold(seq, ByteString::from(frame), ctx);
            }
            Remote::Event(ClusterEvent::Presence { .. }) => self.ask_others(ctx),
            Remote::Event(ClusterEvent::Board { .. }) => {}
            Remote::Resync => {
                self.catch_up(ctx);
                self.ask_others(ctx);
            }
        }
    }
}

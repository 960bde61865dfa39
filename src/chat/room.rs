//! The ChatRoom actor: one per family. It holds the family's open sessions and who is present
//! (memory only), assigns `seq` and commits messages through the Persister in groups, and after
//! each commit acks the senders and fans the messages out, in seq order.
//!
//! Only one group of a room is in the Persister at a time: the next group is formed when the
//! previous one committed, so a failed commit never leaves a gap in the family's seqs.
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;

use super::error::ChatError;
use super::frames::{ChatMessage, ServerFrame};
use super::messages::{CloseRoom, CloseSession, Deliver, Hello, Join, Leave, Post, SetVisible};
use super::store::{self, CLIENT_ID_WINDOW, RoomStart};
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
    deps: ChatDeps,
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
    closing: bool,
    last_active: Instant,
}

impl ChatRoom {
    pub fn new(family_id: i64, deps: ChatDeps) -> Self {
        let fanout = Fanout::new(family_id, deps.bus.clone());
        ChatRoom {
            family_id,
            deps,
            state: None,
            sessions: HashMap::new(),
            fanout,
            pending: Vec::new(),
            waiting: HashMap::new(),
            in_flight: false,
            closing: false,
            last_active: Instant::now(),
        }
    }

    fn present(&self) -> BTreeSet<i64> {
        self.sessions
            .values()
            .filter(|s| s.visible)
            .map(|s| s.user_id)
            .collect()
    }

    /// Sends the ack or refusal of one of its `send`s to a session.
    fn answer(&self, session_id: u64, frame: ByteString) {
        if let Some(session) = self.fanout.get(session_id) {
            session.do_send(Deliver::answer(frame));
        }
    }

    /// Tells every session but `except` about members who entered or left the room.
    fn announce_presence(&self, before: &BTreeSet<i64>, except: Option<u64>) {
        let after = self.present();
        for (user_id, present) in before
            .symmetric_difference(&after)
            .map(|&u| (u, after.contains(&u)))
        {
            self.fanout
                .publish_only(Event::Presence { user_id, present });
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
        let rows: Vec<MessageRow> = std::mem::take(&mut self.pending)
            .into_iter()
            .zip(state.last_seq + 1..)
            .map(|(m, seq)| MessageRow {
                seq,
                sender_id: m.sender_id,
                client_id: m.client_id,
                text: m.text,
                created_at,
            })
            .collect();
        self.in_flight = true;
        let commit = self.deps.persister.addr().send(CommitMessages {
            family_id: self.family_id,
            rows: rows.clone(),
        });
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.in_flight = false;
            match result {
                Ok(Ok(())) => act.committed(rows),
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
    fn committed(&mut self, rows: Vec<MessageRow>) {
        let present = self.present();
        let Some(state) = self.state.as_mut() else {
            return;
        };
        for row in rows {
            state.last_seq = row.seq;
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
            let event = Event::Message {
                seq: row.seq,
                frame: frame.clone(),
            };
            self.fanout
                .committed(event, Deliver::message(row.seq, frame));
            for &member in state.members.keys() {
                if member != row.sender_id && !present.contains(&member) {
                    self.deps
                        .push
                        .notify(member, Notification::chat(&message.text));
                }
            }
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
                    act.state = Some(RoomState::from_start(start));
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
                        act.state = Some(RoomState::from_start(start));
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
    }
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
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
        AtomicResponse::new(Box::pin(
            async move {
                match load {
                    Some((db, family_id)) => store::load_room(&db, family_id).await.map(Some),
                    None => Ok(None),
                }
            }
            .into_actor(self)
            .map(move |loaded, act, _| {
                if let Some(start) = loaded? {
                    act.state = Some(RoomState::from_start(start));
                }
                let before = act.present();
                act.sessions.insert(
                    join.session_id,
                    SessionEntry {
                        user_id: join.user_id,
                        visible: true,
                        close: join.close,
                    },
                );
                act.fanout.add(join.session_id, join.deliver);
                act.announce_presence(&before, Some(join.session_id));
                Ok(Hello {
                    last_seq: act.state.as_ref().map_or(0, |s| s.last_seq),
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
        let before = self.present();
        self.sessions.remove(&leave.session_id);
        self.fanout.remove(leave.session_id);
        for waiters in self.waiting.values_mut() {
            waiters.retain(|&id| id != leave.session_id);
        }
        self.announce_presence(&before, None);
    }
}

impl Handler<SetVisible> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SetVisible, _: &mut Context<Self>) {
        self.last_active = Instant::now();
        let before = self.present();
        if let Some(session) = self.sessions.get_mut(&msg.session_id) {
            session.visible = msg.visible;
        }
        self.announce_presence(&before, Some(msg.session_id));
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

//! The WS session actor: one per chat WebSocket, fed by actix-ws.
//!
//! Incoming frames arrive as an actor stream (actix-ws's `MessageStream`). Outgoing frames go
//! into the session's [`Outbox`], a queue that the connection's response body ([`Frames`])
//! empties whenever the socket has room: no channel and no writer task, so an idle socket holds
//! only the actor, its outbox and the connection (issue #21). Both run on the connection's worker
//! thread. Everything the session queues for the client counts against one budget,
//! [`MAX_QUEUED_BYTES`]: messages, acks, errors, presence, pongs, pings, resume pages, and the
//! live messages held back while a resume runs. A client that lets more pile up, or whose socket
//! takes no frame for `--ws-timeout-secs` (checked at each ping), does not read: what is queued
//! is dropped at once and the socket is closed with 1013 (the client may resume).
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::WeakAddr;
use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, MessageBody};
use actix_ws::{Message as WsMessage, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::sync::Notify;

use super::frames::{ClientFrame, MAX_PENDING_SENDS, ServerFrame, parse_client_frame};
use super::messages::{CloseSession, Deliver, Join, Leave, Post, SetVisible};
use super::room::ChatRoom;
use super::store::{self, Page};
use crate::auth::sessions::SessionLease;
use crate::config::Timing;
use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::store::Db;

/// The close code when the session's token was revoked (logout) or expired: log in again.
pub const CLOSE_TOKEN_ENDED: u16 = 4001;
/// Outgoing bytes a session may have queued (and held back) before it is closed with 1013.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// What a queued frame costs beyond its payload: its slot in the queue and the allocation's
/// bookkeeping. So a flood of empty pings (each answered by an empty pong) fills the budget too.
pub const FRAME_OVERHEAD_BYTES: usize = 64;
/// Resume reads history in pages of this many messages.
const RESUME_PAGE: u64 = 200;
/// Resume queues history while less than this is queued, then waits until the body has
/// drained the queue below [`RESUME_LOW_BYTES`]: a resume alone stays far below the budget, so a
/// reading client is never closed for resuming a long history.
const RESUME_HIGH_BYTES: usize = 512 * 1024;
const RESUME_LOW_BYTES: usize = 256 * 1024;
/// The body hands the socket at most this many bytes of frames at a time (then the next poll
/// takes more): one frame may be larger.
const BODY_CHUNK_BYTES: usize = 16 * 1024;
/// Control frames carry at most this much payload (RFC 6455); a pong echoes at most this much.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// After `hello`, live messages wait this long for the client's first `resume` or `send`.
/// A reconnecting client sends `resume` right after `hello`; without the hold, messages
/// committed in between would go out live and then again in the resume, out of order.
const JOIN_HOLD: Duration = Duration::from_secs(1);

/// What a session needs from the application: history reads for resume, its gauges, timing.
/// One for all sessions (`AppState::chat_session_deps`): a copy per session was ~300 bytes.
pub struct SessionDeps {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The response body is gone (the connection ended, or its last frame went out).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterStopped;

/// The session's token was revoked.
#[derive(Message)]
#[rtype(result = "()")]
struct TokenRevoked;

enum Out {
    Text(ByteString),
    Ping,
    Pong(Bytes),
    /// The last frame: a close frame with this code, or with 0 none (the connection just ends).
    Close(u16),
}

impl Out {
    /// What the frame counts against [`MAX_QUEUED_BYTES`] while queued.
    fn cost(&self) -> usize {
        FRAME_OVERHEAD_BYTES
            + match self {
                Out::Text(frame) => frame.len(),
                Out::Pong(payload) => payload.len(),
                Out::Ping | Out::Close(_) => 0,
            }
    }
}

/// The session's outgoing frames, shared by the session (and its resume) with the response body
/// that writes them: both on the connection's worker thread.
struct Outbox {
    queue: RefCell<VecDeque<Out>>,
    /// Bytes of the frames in the queue (with their overhead).
    queued: Cell<usize>,
    /// Bytes of the live messages held back (join hold, resume).
    held: Cell<usize>,
    /// When the socket last took a frame, or the queue last became non-empty.
    last_taken: Cell<Instant>,
    /// The body, waiting for frames.
    waker: Cell<Option<Waker>>,
    /// Woken when the body drained the queue below [`RESUME_LOW_BYTES`], or is gone.
    drained: Notify,
    /// A close is queued: nothing more goes in.
    closing: Cell<bool>,
    /// The body is gone.
    writer_gone: Cell<bool>,
    /// Told [`WriterStopped`] when the body goes.
    session: RefCell<Option<WeakAddr<WsSession>>>,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            held: Cell::new(0),
            last_taken: Cell::new(Instant::now()),
            waker: Cell::new(None),
            drained: Notify::new(),
            closing: Cell::new(false),
            writer_gone: Cell::new(false),
            session: RefCell::new(None),
        }
    }

    /// Counts `cost` more bytes; false (and nothing counted) if that would pass the budget.
    fn admit(&self, cost: usize) -> bool {
        let queued = self.queued.get() + cost;
        if queued + self.held.get() > MAX_QUEUED_BYTES {
            return false;
        }
        self.queued.set(queued);
        true
    }

    /// Queues an admitted frame for the body; false if the body is gone.
    fn push(&self, out: Out) -> bool {
        if self.writer_gone.get() || self.closing.get() {
            return !self.writer_gone.get();
        }
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            self.last_taken.set(Instant::now());
        }
        if matches!(out, Out::Close(_)) {
            self.closing.set(true);
        }
        queue.push_back(out);
        drop(queue);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    /// Drops everything queued; `code` is the last frame.
    fn abort(&self, code: u16) {
        if self.closing.get() {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        queue.clear();
        *queue = VecDeque::new();
        drop(queue);
        self.queued.set(0);
        self.push(Out::Close(code));
    }

    /// Frames are queued and the socket has taken none for `stall`.
    fn stalled(&self, stall: Duration) -> bool {
        !self.queue.borrow().is_empty() && self.last_taken.get().elapsed() >= stall
    }

    /// The body took frames worth `cost` bytes.
    fn taken(&self, cost: usize) {
        let before = self.queued.get();
        let after = before.saturating_sub(cost);
        self.queued.set(after);
        self.last_taken.set(Instant::now());
        if before > RESUME_LOW_BYTES && after <= RESUME_LOW_BYTES {
            self.drained.notify_one();
        }
    }

    /// Returns once the queue has room for more history (or the body is gone).
    async fn room_for_history(&self) {
        if self.queued.get() < RESUME_HIGH_BYTES {
            return;
        }
        while self.queued.get() > RESUME_LOW_BYTES && !self.writer_gone.get() {
            self.drained.notified().await;
        }
    }
}

/// The chat socket's response body: the frames of its [`Outbox`], encoded as the socket takes
/// them. Ends after the close frame (or, for `Out::Close(0)`, when the queue before it is out).
pub struct Frames {
    outbox: Rc<Outbox>,
    done: bool,
    /// The session's slot and token registration, given back when the connection ends.
    lease: Option<SessionLease>,
}

impl Frames {
    /// Keeps `lease` until the connection ends.
    pub fn hold(&mut self, lease: SessionLease) {
        self.lease = Some(lease);
    }
}

impl MessageBody for Frames {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::new();
        let mut cost = 0;
        let mut done = false;
        {
            let mut queue = self.outbox.queue.borrow_mut();
            while buf.len() < BODY_CHUNK_BYTES {
                let Some(out) = queue.pop_front() else { break };
                cost += out.cost();
                match out {
                    Out::Text(text) => {
                        Parser::write_message(&mut buf, text, OpCode::Text, true, false)
                    }
                    Out::Ping => Parser::write_message(&mut buf, b"", OpCode::Ping, true, false),
                    Out::Pong(payload) => {
                        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
                        Parser::write_message(&mut buf, payload, OpCode::Pong, true, false)
                    }
                    Out::Close(0) => done = true,
                    Out::Close(code) => {
                        let reason = CloseReason {
                            code: CloseCode::from(code),
                            description: None,
                        };
                        Parser::write_close(&mut buf, Some(reason), false);
                        done = true;
                    }
                }
                if done {
                    queue.clear();
                    break;
                }
            }
            // An idle socket keeps no queue.
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
        }
        if cost > 0 {
            self.outbox.taken(cost);
        }
        self.done = done;
        if !buf.is_empty() {
            return Poll::Ready(Some(Ok(buf.freeze())));
        }
        if done {
            return Poll::Ready(None);
        }
        self.outbox.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.outbox.writer_gone.set(true);
        self.outbox.drained.notify_one();
        let session = self.outbox.session.borrow_mut().take();
        if let Some(session) = session.and_then(|s| s.upgrade()) {
            session.do_send(WriterStopped);
        }
    }
}

pub struct WsSession {
    id: u64,
    user_id: i64,
    family_id: i64,
    room: Addr<ChatRoom>,
    deps: Arc<SessionDeps>,
    outbox: Rc<Outbox>,
    /// When the session's token expires: the session closes with [`CLOSE_TOKEN_ENDED`].
    token_ends: tokio::time::Instant,
    last_heard: Instant,
    /// The highest seq sent as a `message` frame.
    last_sent_seq: i64,
    /// Live messages held back: from `hello` until the client's first `resume` or `send` (or
    /// [`JOIN_HOLD`]), and while a resume sends the history before them. Their bytes count in
    /// `outbox.held`.
    held: Option<Vec<(i64, ByteString)>>,
    /// Between `hello` and the client's first `resume` or `send`.
    joining: bool,
    resume_running: bool,
    /// `send`s handed to the room and not yet answered (ack or refusal).
    pending_sends: usize,
    closed: bool,
}

impl WsSession {
    /// Starts the session for an upgraded connection; the returned body is the response's and
    /// writes the session's frames (give it the session's lease to hold: [`Frames::hold`]). The
    /// session closes with [`CLOSE_TOKEN_ENDED`] at `token_ends`, or when the closure that
    /// [`WsSession::revoked`] makes of the returned address is called.
    pub fn start(
        user_id: i64,
        family_id: i64,
        room: Addr<ChatRoom>,
        deps: Arc<SessionDeps>,
        incoming: actix_ws::MessageStream,
        token_ends: tokio::time::Instant,
    ) -> (Frames, WeakAddr<WsSession>) {
        let outbox = Rc::new(Outbox::new());
        let frames = Frames {
            outbox: outbox.clone(),
            done: false,
            lease: None,
        };
        let session = WsSession::create(|ctx| {
            ctx.add_stream(incoming);
            *outbox.session.borrow_mut() = Some(ctx.address().downgrade());
            WsSession {
                id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
                user_id,
                family_id,
                room,
                deps,
                outbox,
                token_ends,
                last_heard: Instant::now(),
                last_sent_seq: 0,
                held: None,
                joining: false,
                resume_running: false,
                pending_sends: 0,
                closed: false,
            }
        });
        (frames, session.downgrade())
    }

    /// What the session's token registration calls on revocation: the session closes with
    /// [`CLOSE_TOKEN_ENDED`].
    pub fn revoked(session: WeakAddr<WsSession>) -> impl FnOnce() + Send + Sync + 'static {
        move || {
            if let Some(session) = session.upgrade() {
                session.do_send(TokenRevoked);
            }
        }
    }

    /// Queues a frame for the body, or closes with 1013 if the client let too much pile up.
    fn enqueue(&mut self, out: Out, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        if !self.outbox.admit(out.cost()) {
            log::info!(
                "chat session {}: client does not read, closing with 1013",
                self.id
            );
            return self.abort(1013, ctx);
        }
        if !self.outbox.push(out) {
            ctx.stop();
        }
    }

    fn push(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.enqueue(Out::Text(frame), ctx);
    }

    fn error(&mut self, code: ErrorCode, message: &str, ctx: &mut Context<Self>) {
        self.push(ServerFrame::Error { code, message }.encode(), ctx);
    }

    /// Closes after everything queued has gone out.
    fn close(&mut self, code: u16, ctx: &mut Context<Self>) {
        if !self.closed {
            self.closed = true;
            self.outbox.push(Out::Close(code));
        }
        ctx.stop();
    }

    /// Closes at once: what is queued is dropped.
    fn abort(&mut self, code: u16, ctx: &mut Context<Self>) {
        if !self.closed {
            self.closed = true;
            self.outbox.abort(code);
        }
        ctx.stop();
    }

    /// Sends a live message unless the client has it already; holds it back while joining or
    /// resuming.
    fn deliver_message(&mut self, seq: i64, frame: ByteString, ctx: &mut Context<Self>) {
        if let Some(held) = self.held.as_mut() {
            let cost = FRAME_OVERHEAD_BYTES + frame.len();
            let held_bytes = self.outbox.held.get() + cost;
            self.outbox.held.set(held_bytes);
            if held_bytes + self.outbox.queued.get() > MAX_QUEUED_BYTES {
                log::info!(
                    "chat session {}: client does not read its resume, closing with 1013",
                    self.id
                );
                return self.abort(1013, ctx);
            }
            return held.push((seq, frame));
        }
        if seq > self.last_sent_seq {
            self.last_sent_seq = seq;
            self.push(frame, ctx);
        }
    }

    /// Takes the held live messages; their bytes count as queued again once they are pushed.
    fn take_held(&mut self) -> Vec<(i64, ByteString)> {
        self.outbox.held.set(0);
        self.held.take().unwrap_or_default()
    }

    /// Ends the join hold: held live messages go out in order (unless a resume is running,
    /// which sends them when it is done).
    fn release(&mut self, ctx: &mut Context<Self>) {
        if !self.joining {
            return;
        }
        self.joining = false;
        if !self.resume_running {
            for (seq, frame) in self.take_held() {
                self.deliver_message(seq, frame, ctx);
            }
        }
    }

    fn on_frame(&mut self, text: &str, ctx: &mut Context<Self>) {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err((code, message)) => {
                if code != ErrorCode::InvalidFrame {
                    // A well-formed send that was refused still ends the join hold.
                    self.release(ctx);
                }
                return self.error(code, &message, ctx);
            }
        };
        match &frame {
            // The resume takes over what was held since hello.
            ClientFrame::Resume { .. } => self.joining = false,
            ClientFrame::Send { .. } => self.release(ctx),
            ClientFrame::Visibility { .. } => {}
        }
        match frame {
            ClientFrame::Send { client_id, text } => {
                if self.pending_sends >= MAX_PENDING_SENDS {
                    return self.error(
                        ErrorCode::TooManyPending,
                        "256 sends are waiting for their ack; wait for one, then send again",
                        ctx,
                    );
                }
                self.pending_sends += 1;
                self.room.do_send(Post {
                    session_id: self.id,
                    sender_id: self.user_id,
                    client_id,
                    text,
                });
            }
            ClientFrame::Visibility { visible } => self.room.do_send(SetVisible {
                session_id: self.id,
                visible,
            }),
            ClientFrame::Resume { after_seq } => self.resume(after_seq.max(0), ctx),
        }
    }

    /// Sends every stored message after `after_seq` in pages, then the live ones that arrived
    /// meanwhile, then `resumed`. History goes into the queue only while it has room
    /// ([`RESUME_HIGH_BYTES`]); a client that stops reading is closed at a ping (nothing
    /// taken for `--ws-timeout-secs`) or by the budget (live messages held meanwhile).
    fn resume(&mut self, after_seq: i64, ctx: &mut Context<Self>) {
        if self.resume_running {
            return self.error(ErrorCode::InvalidFrame, "a resume is already running", ctx);
        }
        self.resume_running = true;
        self.held.get_or_insert_with(Vec::new);
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        let outbox = self.outbox.clone();
        let history = async move {
            let mut cursor = after_seq;
            loop {
                let page = store::page(&db, family_id, Page::After(cursor), RESUME_PAGE).await?;
                for message in &page {
                    outbox.room_for_history().await;
                    let frame = Out::Text(ServerFrame::Message(message).encode());
                    if !outbox.admit(frame.cost()) {
                        return Ok(Resume::Overflow);
                    }
                    if !outbox.push(frame) {
                        return Ok(Resume::WriterGone);
                    }
                    cursor = message.seq;
                }
                if (page.len() as u64) < RESUME_PAGE {
                    return Ok::<_, crate::store::StoreError>(Resume::SentUpTo(cursor));
                }
            }
        };
        ctx.spawn(crate::store::detached(history).into_actor(self).map(move |sent, act, ctx| {
            act.resume_running = false;
            match sent {
                Ok(Resume::SentUpTo(seq)) => act.last_sent_seq = act.last_sent_seq.max(seq),
                Ok(Resume::Overflow) => {
                    log::info!(
                        "chat session {}: client does not read its resume, closing with 1013",
                        act.id
                    );
                    return act.abort(1013, ctx);
                }
                Ok(Resume::WriterGone) => return ctx.stop(),
                Err(err) => {
                    log::error!("chat session {}: resume failed: {err}", act.id);
                    act.error(ErrorCode::Internal, "resume failed; try again", ctx);
                }
            }
            for (seq, frame) in act.take_held() {
                act.deliver_message(seq, frame, ctx);
            }
            let last_seq = act.last_sent_seq;
            act.push(ServerFrame::Resumed { last_seq }.encode(), ctx);
        }));
    }

    /// The session's one timer: a ping every `--ws-ping-secs`, and the token's expiry.
    fn schedule_tick(&mut self, ctx: &mut Context<Self>) {
        let now = tokio::time::Instant::now();
        let next = (now + self.deps.timing.ws_ping()).min(self.token_ends);
        ctx.run_later(next - now, |act, ctx| {
            if tokio::time::Instant::now() >= act.token_ends {
                log::info!("chat session {}: token expired, closing with 4001", act.id);
                return act.close(CLOSE_TOKEN_ENDED, ctx);
            }
            act.heartbeat(ctx);
            if !act.closed {
                act.schedule_tick(ctx);
            }
        });
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.outbox.stalled(self.deps.timing.ws_timeout()) {
            log::info!(
                "chat session {}: socket took nothing for {:?}, closing with 1013",
                self.id,
                self.deps.timing.ws_timeout()
            );
            return self.abort(1013, ctx);
        }
        if self.last_heard.elapsed() > self.deps.timing.ws_timeout() {
            log::info!("chat session {}: no pong, dropping it", self.id);
            return self.close(1001, ctx);
        }
        self.enqueue(Out::Ping, ctx);
    }
}

/// How a resume's history ended.
enum Resume {
    SentUpTo(i64),
    Overflow,
    WriterGone,
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.deps
            .metrics
            .ws_sessions
            .fetch_add(1, Ordering::Relaxed);
        self.schedule_tick(ctx);
        // Nothing else happens until the room has taken the session and the hello is out.
        let join = self.room.send(Join {
            session_id: self.id,
            user_id: self.user_id,
            deliver: ctx.address().recipient(),
            close: ctx.address().recipient(),
        });
        ctx.wait(join.into_actor(self).map(|joined, act, ctx| match joined {
            Ok(Ok(hello)) => {
                act.last_sent_seq = hello.last_seq;
                act.joining = true;
                act.held = Some(Vec::new());
                ctx.run_later(JOIN_HOLD, |act, ctx| act.release(ctx));
                let frame = ServerFrame::Hello {
                    family_id: act.family_id,
                    user_id: act.user_id,
                    last_seq: hello.last_seq,
                    present: hello.present,
                }
                .encode();
                act.push(frame, ctx);
            }
            Ok(Err(err)) => {
                log::error!("chat session {}: could not join: {err}", act.id);
                act.close(1011, ctx);
            }
            Err(err) => {
                log::error!("chat session {}: room unavailable: {err}", act.id);
                act.close(1011, ctx);
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if !self.closed {
            // What is queued still goes out, then the connection ends (no close frame).
            self.closed = true;
            self.outbox.push(Out::Close(0));
        }
        self.deps
            .metrics
            .ws_sessions
            .fetch_sub(1, Ordering::Relaxed);
        self.room.do_send(Leave {
            session_id: self.id,
        });
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<WsMessage, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(WsMessage::Text(text)) => self.on_frame(&text, ctx),
            Ok(WsMessage::Binary(_)) | Ok(WsMessage::Continuation(_)) => {
                self.error(ErrorCode::InvalidFrame, "frames are JSON text", ctx)
            }
            Ok(WsMessage::Ping(payload)) => {
                // A copy: the payload may share the read buffer, which must not live on in the
                // queue.
                self.enqueue(Out::Pong(Bytes::copy_from_slice(&payload)), ctx);
            }
            Ok(WsMessage::Pong(_)) | Ok(WsMessage::Nop) => {}
            Ok(WsMessage::Close(_)) => self.close(1000, ctx),
            Err(ProtocolError::Overflow) => self.close(1009, ctx),
            Err(err) => {
                log::info!("chat session {}: protocol error: {err}", self.id);
                self.close(1002, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if msg.answers {
            self.pending_sends = self.pending_sends.saturating_sub(1);
        }
        match msg.seq {
            Some(seq) => self.deliver_message(seq, msg.frame, ctx),
            None => self.push(msg.frame, ctx),
        }
    }
}

impl Handler<CloseSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.close(msg.code, ctx);
    }
}

impl Handler<TokenRevoked> for WsSession {
    type Result = ();

    fn handle(&mut self, _: TokenRevoked, ctx: &mut Context<Self>) {
        log::info!("chat session {}: token revoked, closing with 4001", self.id);
        self.close(CLOSE_TOKEN_ENDED, ctx);
    }
}

impl Handler<WriterStopped> for WsSession {
    type Result = ();

    fn handle(&mut self, _: WriterStopped, ctx: &mut Context<Self>) {
        self.closed = true;
        ctx.stop();
    }
}

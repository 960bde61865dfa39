//! The WS session actor: one per chat WebSocket, fed by actix-ws.
//!
//! Incoming frames arrive as an actor stream. Outgoing frames go through an unbounded channel to a
//! writer task that feeds the socket. Everything the session queues for the client counts
//! against one budget, [`MAX_QUEUED_BYTES`]: messages, acks, errors, presence, pongs, pings,
//! resume pages, and the live messages held back while a resume runs. A client that lets more
//! pile up, or whose socket takes no frame for `--ws-timeout-secs`, does not read: the writer
//! drops what is queued at once and closes the socket with 1013 (the client may resume).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::{Notify, mpsc};

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
/// Resume queues history while less than this is queued, then waits until the writer has
/// drained the queue below [`RESUME_LOW_BYTES`]: a resume alone stays far below the budget, so a
/// reading client is never closed for resuming a long history.
const RESUME_HIGH_BYTES: usize = 512 * 1024;
const RESUME_LOW_BYTES: usize = 256 * 1024;
/// After the writer gave up on a client, how long the close frame may wait for room in the socket.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// After `hello`, live messages wait this long for the client's first `resume` or `send`.
/// A reconnecting client sends `resume` right after `hello`; without the hold, messages
/// committed in between would go out live and then again in the resume, out of order.
const JOIN_HOLD: Duration = Duration::from_secs(1);

/// What a session needs from the application: history reads for resume, its gauges, timing.
#[derive(Clone)]
pub struct SessionDeps {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The writer task ended (it gave up on the client, sent the close, or the client is gone).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterStopped;

enum Out {
    Text(ByteString),
    Ping,
    Pong(Bytes),
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

/// What the session, its resume task and its writer share about the outgoing queue.
#[derive(Default)]
struct Outbox {
    /// Bytes of the frames in the queue (with their overhead).
    queued: AtomicUsize,
    /// Bytes of the live messages held back (join hold, resume).
    held: AtomicUsize,
    /// Woken when the writer drained the queue below [`RESUME_LOW_BYTES`], or stopped.
    drained: Notify,
    /// Tells the writer to drop everything queued and close with `abort_code`.
    abort: Notify,
    abort_code: AtomicU16,
    writer_gone: AtomicBool,
}

impl Outbox {
    /// Counts `cost` more bytes; false (and nothing counted) if that would pass the budget.
    fn admit(&self, cost: usize) -> bool {
        let queued = self.queued.fetch_add(cost, Ordering::Relaxed) + cost;
        if queued + self.held.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn abort(&self, code: u16) {
        self.abort_code.store(code, Ordering::Relaxed);
        self.abort.notify_one();
    }

    /// Returns once the queue has room for more history (or the writer is gone).
    async fn room_for_history(&self) {
        if self.queued.load(Ordering::Relaxed) < RESUME_HIGH_BYTES {
            return;
        }
        while self.queued.load(Ordering::Relaxed) > RESUME_LOW_BYTES
            && !self.writer_gone.load(Ordering::Relaxed)
        {
            self.drained.notified().await;
        }
    }
}

pub struct WsSession {
    id: u64,
    user_id: i64,
    family_id: i64,
    room: Addr<ChatRoom>,
    deps: SessionDeps,
    out: mpsc::UnboundedSender<Out>,
    outbox: Arc<Outbox>,
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
    /// Starts the session and its writer task for an upgraded connection. The session closes
    /// with [`CLOSE_TOKEN_ENDED`] when `lease` resolves, and holds it (its per-user slot) until
    /// it stops.
    pub fn start(
        user_id: i64,
        family_id: i64,
        room: Addr<ChatRoom>,
        deps: SessionDeps,
        ws: actix_ws::Session,
        incoming: actix_ws::MessageStream,
        lease: SessionLease,
    ) -> Addr<WsSession> {
        let (out, rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox::default());
        let stall = deps.timing.ws_timeout();
        WsSession::create(|ctx| {
            ctx.add_stream(incoming);
            let writer = write_frames(ws, rx, outbox.clone(), stall);
            let session = ctx.address().downgrade();
            actix_web::rt::spawn(async move {
                writer.await;
                if let Some(session) = session.upgrade() {
                    session.do_send(WriterStopped);
                }
            });
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(lease).map(|(), act, ctx| {
                    log::info!("chat session {}: token ended, closing with 4001", act.id);
                    act.close(CLOSE_TOKEN_ENDED, ctx);
                }),
            );
            WsSession {
                id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
                user_id,
                family_id,
                room,
                deps,
                out,
                outbox,
                last_heard: Instant::now(),
                last_sent_seq: 0,
                held: None,
                joining: false,
                resume_running: false,
                pending_sends: 0,
                closed: false,
            }
        })
    }

    /// Queues a frame for the writer, or closes with 1013 if the client let too much pile up.
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
        if self.out.send(out).is_err() {
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
            let _ = self.out.send(Out::Close(code));
        }
        ctx.stop();
    }

    /// Closes at once: the writer drops what is queued.
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
            let held_bytes = self.outbox.held.fetch_add(cost, Ordering::Relaxed) + cost;
            if held_bytes + self.outbox.queued.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
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
        self.outbox.held.store(0, Ordering::Relaxed);
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
    /// ([`RESUME_HIGH_BYTES`]); a client that stops reading is closed by the writer (nothing
    /// taken for `--ws-timeout-secs`) or by the budget (live messages held meanwhile).
    fn resume(&mut self, after_seq: i64, ctx: &mut Context<Self>) {
        if self.resume_running {
            return self.error(ErrorCode::InvalidFrame, "a resume is already running", ctx);
        }
        self.resume_running = true;
        self.held.get_or_insert_with(Vec::new);
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        let (out, outbox) = (self.out.clone(), self.outbox.clone());
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
                    if out.send(frame).is_err() {
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

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
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
        ctx.run_interval(self.deps.timing.ws_ping(), Self::heartbeat);
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

impl Handler<WriterStopped> for WsSession {
    type Result = ();

    fn handle(&mut self, _: WriterStopped, ctx: &mut Context<Self>) {
        self.closed = true;
        ctx.stop();
    }
}

/// Feeds queued frames to the socket in order. Ends after a close, when the client is gone, or
/// when it gives up on a client that does not read: told so by the session (budget), or when the
/// socket has taken no frame for `stall`. Giving up drops everything queued at once, then the
/// close frame waits up to [`CLOSE_WAIT`] for room in the socket.
async fn write_frames(
    mut ws: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Out>,
    outbox: Arc<Outbox>,
    stall: Duration,
) {
    let code = loop {
        let out = tokio::select! {
            biased;
            () = outbox.abort.notified() => break outbox.abort_code.load(Ordering::Relaxed),
            out = rx.recv() => match out {
                Some(Out::Close(code)) => break code,
                Some(out) => out,
                None => break 0,
            },
        };
        let cost = out.cost();
        let sent = tokio::select! {
            biased;
            () = outbox.abort.notified() => break outbox.abort_code.load(Ordering::Relaxed),
            sent = tokio::time::timeout(stall, send(&mut ws, out)) => sent,
        };
        let before = outbox.queued.fetch_sub(cost, Ordering::Relaxed);
        if before > RESUME_LOW_BYTES && before - cost <= RESUME_LOW_BYTES {
            outbox.drained.notify_one();
        }
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break 0,
            Err(_) => {
                log::info!("chat session: socket took nothing for {stall:?}, closing with 1013");
                break 1013;
            }
        }
    };
    outbox.writer_gone.store(true, Ordering::Relaxed);
    outbox.drained.notify_one();
    drop(rx);
    if code != 0 {
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: None,
        };
        // A client that does not read may never take the close frame.
        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(reason))).await;
    }
}

async fn send(ws: &mut actix_ws::Session, out: Out) -> Result<(), actix_ws::Closed> {
    match out {
        Out::Text(frame) => ws.text(frame).await,
        Out::Ping => ws.ping(b"").await,
        Out::Pong(payload) => ws.pong(&payload).await,
        // Handled by the writer loop.
        Out::Close(_) => Ok(()),
    }
}

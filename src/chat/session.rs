//! The WS session actor: one per chat WebSocket, fed by actix-ws.
//!
//! Incoming frames arrive as an actor stream. Outgoing frames go through an unbounded channel to a
//! writer task that feeds the socket; the bytes waiting there are counted, and a client that lets
//! more than [`MAX_QUEUED_BYTES`] pile up (it does not read) is closed with 1013 and may resume.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::mpsc;

use super::frames::{ClientFrame, ServerFrame, check_send};
use super::room::{ChatDeps, ChatRoom, Join, Leave, Post, SetVisible};
use super::store::{self, Page};
use crate::auth::sessions::SessionLease;

/// The close code when the session's token was revoked (logout) or expired: log in again.
pub const CLOSE_TOKEN_ENDED: u16 = 4001;
/// Outgoing bytes a session may have queued before it is closed with 1013.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Resume sends history in pages and waits for the queue to drain below this between pages.
const RESUME_PAGE: u64 = 200;
const RESUME_DRAIN_BYTES: usize = 256 * 1024;
/// After `hello`, live messages wait this long for the client's first `resume` or `send`.
/// A reconnecting client sends `resume` right after `hello`; without the hold, messages
/// committed in between would go out live and then again in the resume, out of order.
const JOIN_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A frame from the room; `seq` is set on `message` frames so the session can keep seq order
/// while it resumes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub seq: Option<i64>,
    pub frame: ByteString,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
}

enum Out {
    Text(ByteString),
    Ping,
    Pong(Bytes),
    Close(u16),
}

pub struct WsSession {
    id: u64,
    user_id: i64,
    family_id: i64,
    room: Addr<ChatRoom>,
    deps: ChatDeps,
    out: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    last_heard: Instant,
    /// The highest seq sent as a `message` frame.
    last_sent_seq: i64,
    /// Live messages held back: from `hello` until the client's first `resume` or `send` (or
    /// [`JOIN_HOLD`]), and while a resume sends the history before them.
    held: Option<Vec<(i64, ByteString)>>,
    /// Between `hello` and the client's first `resume` or `send`.
    joining: bool,
    resume_running: bool,
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
        deps: ChatDeps,
        ws: actix_ws::Session,
        incoming: actix_ws::MessageStream,
        lease: SessionLease,
    ) -> Addr<WsSession> {
        let (out, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        actix_web::rt::spawn(write_frames(ws, rx, queued.clone()));
        WsSession::create(|ctx| {
            ctx.add_stream(incoming);
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
                queued,
                last_heard: Instant::now(),
                last_sent_seq: 0,
                held: None,
                joining: false,
                resume_running: false,
                closed: false,
            }
        })
    }

    fn push(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        let size = frame.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            log::info!(
                "chat session {}: client does not read, closing with 1013",
                self.id
            );
            return self.close(1013, ctx);
        }
        let _ = self.out.send(Out::Text(frame));
    }

    fn error(&mut self, code: &str, message: &str, ctx: &mut Context<Self>) {
        self.push(ServerFrame::Error { code, message }.encode(), ctx);
    }

    fn close(&mut self, code: u16, ctx: &mut Context<Self>) {
        if !self.closed {
            self.closed = true;
            let _ = self.out.send(Out::Close(code));
        }
        ctx.stop();
    }

    /// Sends a live message unless the client has it already; holds it back while joining or
    /// resuming.
    fn deliver_message(&mut self, seq: i64, frame: ByteString, ctx: &mut Context<Self>) {
        if let Some(held) = self.held.as_mut() {
            return held.push((seq, frame));
        }
        if seq > self.last_sent_seq {
            self.last_sent_seq = seq;
            self.push(frame, ctx);
        }
    }

    /// Ends the join hold: held live messages go out in order (unless a resume is running,
    /// which sends them when it is done).
    fn release(&mut self, ctx: &mut Context<Self>) {
        if !self.joining {
            return;
        }
        self.joining = false;
        if !self.resume_running {
            for (seq, frame) in self.held.take().unwrap_or_default() {
                self.deliver_message(seq, frame, ctx);
            }
        }
    }

    fn on_frame(&mut self, text: &str, ctx: &mut Context<Self>) {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                return self.error("invalid_frame", &format!("not a valid frame: {err}"), ctx);
            }
        };
        match &frame {
            // The resume takes over what was held since hello.
            ClientFrame::Resume { .. } => self.joining = false,
            ClientFrame::Send { .. } => self.release(ctx),
            ClientFrame::Visibility { .. } => {}
        }
        match frame {
            ClientFrame::Send { client_id, text } => match check_send(&client_id, &text) {
                Ok(()) => self.room.do_send(Post {
                    session_id: self.id,
                    sender_id: self.user_id,
                    client_id,
                    text,
                }),
                Err((code, message)) => self.error(code, message, ctx),
            },
            ClientFrame::Visibility { visible } => self.room.do_send(SetVisible {
                session_id: self.id,
                visible,
            }),
            ClientFrame::Resume { after_seq } => self.resume(after_seq.max(0), ctx),
        }
    }

    /// Sends every stored message after `after_seq` in pages, then the live ones that arrived
    /// meanwhile, then `resumed`.
    fn resume(&mut self, after_seq: i64, ctx: &mut Context<Self>) {
        if self.resume_running {
            return self.error("invalid_frame", "a resume is already running", ctx);
        }
        self.resume_running = true;
        self.held.get_or_insert_with(Vec::new);
        let (db, family_id) = (self.deps.db.clone(), self.family_id);
        let (out, queued) = (self.out.clone(), self.queued.clone());
        let history = async move {
            let mut cursor = after_seq;
            loop {
                let page = store::page(&db, family_id, Page::After(cursor), RESUME_PAGE).await?;
                for message in &page {
                    let frame = ServerFrame::Message(message).encode();
                    queued.fetch_add(frame.len(), Ordering::Relaxed);
                    let _ = out.send(Out::Text(frame));
                    cursor = message.seq;
                }
                if (page.len() as u64) < RESUME_PAGE {
                    return Ok::<_, crate::error::ApiError>(cursor);
                }
                while queued.load(Ordering::Relaxed) > RESUME_DRAIN_BYTES {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        ctx.spawn(history.into_actor(self).map(move |sent_up_to, act, ctx| {
            act.resume_running = false;
            let held = act.held.take().unwrap_or_default();
            match sent_up_to {
                Ok(seq) => act.last_sent_seq = act.last_sent_seq.max(seq),
                Err(err) => {
                    log::error!("chat session {}: resume failed: {err}", act.id);
                    act.error("internal", "resume failed; try again", ctx);
                }
            }
            for (seq, frame) in held {
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
        let _ = self.out.send(Out::Ping);
    }
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
            session: ctx.address(),
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
                self.error("invalid_frame", "frames are JSON text", ctx)
            }
            Ok(WsMessage::Ping(payload)) => {
                let _ = self.out.send(Out::Pong(payload));
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

/// Feeds queued frames to the socket in order; ends after a close or when the client is gone.
async fn write_frames(
    mut ws: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(out) = rx.recv().await {
        let sent = match out {
            Out::Text(frame) => {
                let size = frame.len();
                let sent = ws.text(frame).await;
                queued.fetch_sub(size, Ordering::Relaxed);
                sent
            }
            Out::Ping => ws.ping(b"").await,
            Out::Pong(payload) => ws.pong(&payload).await,
            Out::Close(code) => {
                let reason = CloseReason {
                    code: CloseCode::from(code),
                    description: None,
                };
                // A client that does not read may never take the close frame.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(Some(reason)))
                        .await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

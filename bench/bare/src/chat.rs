//! The chat: one room per family (its sessions, its seq counter, the client ids it stored) and
//! one task per WebSocket. A `send` gets its seq under the room's lock and goes to the writer
//! thread in that order; the writer acks and delivers after the commit.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::App;
use crate::store::{Job, RoomStart, Row, Stored};

/// After `hello`, live messages wait this long for the client's first `resume` or `send` (as
/// podo's `JOIN_HOLD`), so that none goes out before the history a resume sends.
const JOIN_HOLD: Duration = Duration::from_secs(1);
const MAX_TEXT_CHARS: usize = 2000;
const MAX_CLIENT_ID_CHARS: usize = 64;

/// What the room and the writer hand a session.
pub enum Out {
    /// An ack or an error.
    Text(Utf8Bytes),
    /// A committed message and its seq.
    Message(i64, Utf8Bytes),
}

pub struct Room {
    pub family_id: i64,
    pub inner: Mutex<RoomInner>,
}

pub struct RoomInner {
    /// The last seq handed out.
    last_seq: i64,
    /// The last seq committed and delivered to the sessions.
    pub delivered: i64,
    pub sessions: Vec<(u64, UnboundedSender<Out>)>,
    /// (sender, client_id) → seq, of every message of the family (a resend is acked with it).
    known: HashMap<(i64, String), i64>,
    names: HashMap<i64, String>,
}

impl Room {
    pub fn new(family_id: i64, start: RoomStart) -> Room {
        Room {
            family_id,
            inner: Mutex::new(RoomInner {
                last_seq: start.last_seq,
                delivered: start.last_seq,
                sessions: Vec::new(),
                known: start.known,
                names: start.names,
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Send {
        client_id: String,
        text: String,
    },
    Resume {
        after_seq: i64,
    },
    #[allow(dead_code)]
    Visibility {
        visible: bool,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Hello {
        family_id: i64,
        user_id: i64,
        last_seq: i64,
        present: [i64; 0],
    },
    Message(MessageBody<'a>),
    Ack {
        client_id: &'a str,
        seq: i64,
    },
    Resumed {
        last_seq: i64,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

/// A message as clients see it (podo's `ChatMessage`).
#[derive(Serialize)]
pub struct MessageBody<'a> {
    pub seq: i64,
    pub sender_id: i64,
    pub sender_name: &'a str,
    pub text: &'a str,
    pub client_id: &'a str,
    pub created_at: &'a str,
}

impl ServerFrame<'_> {
    fn encode(&self) -> Utf8Bytes {
        serde_json::to_string(self)
            .expect("frames serialize")
            .into()
    }
}

fn error(code: &str, message: &str) -> Utf8Bytes {
    ServerFrame::Error { code, message }.encode()
}

/// The `message` frame of a stored message (history and resume).
pub fn stored_frame<'a>(m: &'a Stored, names: &'a HashMap<i64, String>) -> MessageBody<'a> {
    MessageBody {
        seq: m.seq,
        sender_id: m.sender_id,
        sender_name: names.get(&m.sender_id).map_or("", String::as_str),
        text: &m.text,
        client_id: &m.client_id,
        created_at: &m.created_at,
    }
}

/// podo's checks of a `send` (the connection stays open after a refusal).
fn check_send(client_id: &str, text: &str) -> Result<(), (&'static str, &'static str)> {
    if client_id.contains('\0') || text.contains('\0') {
        return Err(("invalid_text", "client_id and text must not contain U+0000"));
    }
    let id_len = client_id.chars().count();
    if id_len == 0 || id_len > MAX_CLIENT_ID_CHARS {
        return Err(("invalid_client_id", "client_id must be 1-64 characters"));
    }
    let text_len = text.chars().count();
    if text_len == 0 {
        return Err(("text_empty", "text must not be empty"));
    }
    if text_len > MAX_TEXT_CHARS {
        return Err(("text_too_long", "text must be at most 2000 characters"));
    }
    Ok(())
}

/// Takes a `send`: a new client id gets the room's next seq and goes to the writer (under the
/// room's lock, so the writer sees the family's messages in seq order). Returns a frame to answer
/// at once (a refusal, or the ack of a resend already stored).
fn accept(
    app: &App,
    room: &Arc<Room>,
    session: u64,
    sender_id: i64,
    client_id: String,
    text: String,
) -> Option<Utf8Bytes> {
    if let Err((code, message)) = check_send(&client_id, &text) {
        return Some(error(code, message));
    }
    let now = Utc::now();
    let frame_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let created_at = now.to_rfc3339_opts(SecondsFormat::Millis, false);
    let mut inner = room.inner.lock().expect("room lock");
    let key = (sender_id, client_id);
    if let Some(&seq) = inner.known.get(&key) {
        let ack = ServerFrame::Ack {
            client_id: &key.1,
            seq,
        }
        .encode();
        if seq <= inner.delivered {
            return Some(ack);
        }
        let _ = app.writer.send(Job::Ack {
            room: room.clone(),
            session,
            frame: ack,
        });
        return None;
    }
    inner.last_seq += 1;
    let seq = inner.last_seq;
    let (sender_id, client_id) = key;
    let message = ServerFrame::Message(MessageBody {
        seq,
        sender_id,
        sender_name: inner.names.get(&sender_id).map_or("", String::as_str),
        text: &text,
        client_id: &client_id,
        created_at: &frame_at,
    })
    .encode();
    let ack = ServerFrame::Ack {
        client_id: &client_id,
        seq,
    }
    .encode();
    inner.known.insert((sender_id, client_id.clone()), seq);
    let _ = app.writer.send(Job::Row(Row {
        room: room.clone(),
        session,
        seq,
        sender_id,
        client_id,
        text,
        created_at,
        ack,
        message,
    }));
    None
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// One chat WebSocket, from `hello` to the close.
pub async fn session(app: Arc<App>, room: Arc<Room>, user_id: i64, mut ws: Ws) {
    let id = app
        .next_session
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = unbounded_channel();
    let mut last_sent = {
        let mut inner = room.inner.lock().expect("room lock");
        inner.sessions.push((id, tx));
        inner.delivered
    };
    app.metrics
        .sessions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hello = ServerFrame::Hello {
        family_id: room.family_id,
        user_id,
        last_seq: last_sent,
        present: [],
    }
    .encode();
    let mut open = ws.send(Message::Text(hello)).await.is_ok();
    // Live messages held back from hello until the client's first resume or send.
    let mut held: Option<Vec<(i64, Utf8Bytes)>> = Some(Vec::new());
    let hold = tokio::time::sleep(JOIN_HOLD);
    tokio::pin!(hold);
    while open {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Send { client_id, text }) => {
                        release(&mut held, &mut last_sent, &mut ws).await;
                        if let Some(frame) = accept(&app, &room, id, user_id, client_id, text) {
                            let _ = ws.feed(Message::Text(frame)).await;
                        }
                    }
                    Ok(ClientFrame::Resume { after_seq }) => {
                        resume(&app, &room, after_seq.max(0), &mut last_sent, &mut ws).await;
                        release(&mut held, &mut last_sent, &mut ws).await;
                        let resumed = ServerFrame::Resumed { last_seq: last_sent }.encode();
                        let _ = ws.feed(Message::Text(resumed)).await;
                    }
                    Ok(ClientFrame::Visibility { .. }) => {}
                    Err(err) => {
                        let frame = error("invalid_frame", &format!("not a valid frame: {err}"));
                        let _ = ws.feed(Message::Text(frame)).await;
                    }
                }
                open = ws.flush().await.is_ok();
            }
            out = rx.recv() => {
                let Some(mut out) = out else { break };
                loop {
                    match out {
                        Out::Text(frame) => open = ws.feed(Message::Text(frame)).await.is_ok(),
                        Out::Message(seq, frame) => match &mut held {
                            Some(held) => held.push((seq, frame)),
                            None if seq > last_sent => {
                                last_sent = seq;
                                open = ws.feed(Message::Text(frame)).await.is_ok();
                            }
                            None => {}
                        },
                    }
                    match rx.try_recv() {
                        Ok(next) if open => out = next,
                        _ => break,
                    }
                }
                open = open && ws.flush().await.is_ok();
            }
            () = &mut hold, if held.is_some() => {
                release(&mut held, &mut last_sent, &mut ws).await;
                open = ws.flush().await.is_ok();
            }
        }
    }
    room.inner
        .lock()
        .expect("room lock")
        .sessions
        .retain(|(s, _)| *s != id);
    app.metrics
        .sessions
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Ends the join hold: what was held goes out in order (past what was sent already).
async fn release(held: &mut Option<Vec<(i64, Utf8Bytes)>>, last_sent: &mut i64, ws: &mut Ws) {
    for (seq, frame) in held.take().unwrap_or_default() {
        if seq > *last_sent {
            *last_sent = seq;
            let _ = ws.feed(Message::Text(frame)).await;
        }
    }
}

/// Sends the stored messages after `after_seq` up to what `hello` said was delivered (everything
/// later comes live to this session).
async fn resume(
    app: &Arc<App>,
    room: &Arc<Room>,
    after_seq: i64,
    last_sent: &mut i64,
    ws: &mut Ws,
) {
    if after_seq < *last_sent {
        let (app2, family_id, upto) = (app.clone(), room.family_id, *last_sent);
        let history = tokio::task::spawn_blocking(move || {
            app2.reader.after(family_id, after_seq, upto, i64::MAX)
        })
        .await;
        match history {
            Ok(Ok(messages)) => {
                let names = room.inner.lock().expect("room lock").names.clone();
                for m in &messages {
                    let mut body = stored_frame(m, &names);
                    let at = frame_time(body.created_at);
                    body.created_at = &at;
                    let _ = ws
                        .feed(Message::Text(ServerFrame::Message(body).encode()))
                        .await;
                }
            }
            _ => {
                let _ = ws
                    .feed(Message::Text(error("internal", "resume failed; try again")))
                    .await;
                return;
            }
        }
    }
    *last_sent = (*last_sent).max(after_seq);
}

/// A stored instant as frames show it: RFC 3339 UTC with milliseconds and `Z`.
pub fn frame_time(stored: &str) -> String {
    DateTime::parse_from_rfc3339(stored)
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        })
        .unwrap_or_else(|_| stored.to_owned())
}

/// The `GET /api/chat/messages` body.
pub fn history_body(messages: &[Stored], names: &HashMap<i64, String>, last_seq: i64) -> String {
    let times: Vec<String> = messages.iter().map(|m| frame_time(&m.created_at)).collect();
    let frames: Vec<ServerFrame<'_>> = messages
        .iter()
        .zip(&times)
        .map(|(m, at)| {
            let mut body = stored_frame(m, names);
            body.created_at = at;
            ServerFrame::Message(body)
        })
        .collect();
    serde_json::json!({ "messages": frames, "last_seq": last_seq }).to_string()
}

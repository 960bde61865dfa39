//! What the FamilyBoard is asked: commands that change the board, reads, SSE subscriptions, and
//! what it sends its SSE sessions.
use actix::prelude::*;
use bytes::Bytes;

use super::error::BoardError;
use super::view::Snapshot;

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
    type Result = Result<Snapshot, BoardError>;
}

impl Command {
    /// The idempotency key of a grant or attach, with its user (keys belong to the user).
    pub fn key(&self) -> Option<(i64, String)> {
        match self {
            Command::Grant { by, key, .. } | Command::Attach { by, key } => {
                key.clone().map(|k| (*by, k))
            }
            _ => None,
        }
    }
}

/// What the FamilyBoard sends an SSE session.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum SseFrame {
    /// The board at a version, encoded once for every session.
    Board(BoardEvent),
    /// The server is stopping: end the stream.
    Close,
}

/// Registers an SSE session; it gets the current state at once and every change after it. A
/// session that stopped is forgotten at the next broadcast or idle check.
#[derive(Clone)]
pub struct Subscribe {
    pub session_id: u64,
    pub session: Recipient<SseFrame>,
}

impl Message for Subscribe {
    type Result = Result<(), BoardError>;
}

/// Ends every SSE session of the family (server shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSessions;

/// The current state, without changing it.
#[derive(Clone, Copy, Debug)]
pub struct GetBoard;

impl Message for GetBoard {
    type Result = Result<Snapshot, BoardError>;
}

/// One encoded `board` event, shared by every session of the family.
#[derive(Clone, Debug)]
pub struct BoardEvent {
    pub version: i64,
    pub bytes: Bytes,
}

impl BoardEvent {
    pub fn encode(snapshot: &Snapshot) -> BoardEvent {
        use std::io::Write;
        let mut buf = Vec::with_capacity(512);
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "event: board\nid: {}\ndata: ", snapshot.version);
        let start = buf.len();
        if let Err(err) = serde_json::to_writer(&mut buf, snapshot) {
            log::error!("board snapshot did not serialize: {err}");
            buf.truncate(start);
            buf.extend_from_slice(br#"{"board":null}"#);
        }
        buf.extend_from_slice(b"\n\n");
        // Held by the FamilyBoard and by every stream that has not written it yet: no spare
        // capacity (and an exact Vec becomes Bytes without another allocation).
        buf.shrink_to_fit();
        BoardEvent {
            version: snapshot.version,
            bytes: Bytes::from(buf),
        }
    }
}

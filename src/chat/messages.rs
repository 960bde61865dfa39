//! The messages between a chat session and its ChatRoom. The room knows its sessions only as
//! [`Recipient`]s of [`Deliver`] and [`CloseSession`], so it can be driven by any actor (a fake
//! session in tests) and the room never imports the session.
use actix::prelude::*;
use bytestring::ByteString;

use super::error::ChatError;

/// A session enters the room; answered with what the `hello` frame says.
#[derive(Clone)]
pub struct Join {
    pub session_id: u64,
    pub user_id: i64,
    /// Where the room sends the session its frames.
    pub deliver: Recipient<Deliver>,
    /// How the room closes the session (shutdown).
    pub close: Recipient<CloseSession>,
}

pub struct Hello {
    pub last_seq: i64,
    pub present: Vec<i64>,
}

impl Message for Join {
    type Result = Result<Hello, ChatError>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session_id: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SetVisible {
    pub session_id: u64,
    pub visible: bool,
}

/// A checked `send` frame; the sender is the session's authenticated user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Post {
    pub session_id: u64,
    pub sender_id: i64,
    pub client_id: String,
    pub text: String,
}

/// Server shutdown: commit what is pending, ack it, then close every session with 1001.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseRoom;

/// A frame from the room. `seq` is set on `message` frames so the session can keep seq order
/// while it resumes; `answers` marks the ack or refusal of one of the session's `send`s.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    pub seq: Option<i64>,
    pub answers: bool,
    pub frame: ByteString,
}

impl Deliver {
    /// A committed message, to every session.
    pub fn message(seq: i64, frame: ByteString) -> Self {
        Deliver {
            seq: Some(seq),
            answers: false,
            frame,
        }
    }
    /// Any other frame that answers nothing (presence).
    pub fn notice(frame: ByteString) -> Self {
        Deliver {
            seq: None,
            answers: false,
            frame,
        }
    }
    /// The ack or the refusal of a `send`.
    pub fn answer(frame: ByteString) -> Self {
        Deliver {
            seq: None,
            answers: true,
            frame,
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
}

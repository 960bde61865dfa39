//! WebSocket frames (API.md "Chat"): what clients send, and what the server sends, pre-encoded
//! once so that a message fans out to every session as the same shared string.
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ts;

/// Text frames over this close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest message text, in Unicode scalar values.
pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_CLIENT_ID_CHARS: usize = 64;

#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send { client_id: String, text: String },
    Resume { after_seq: i64 },
    Visibility { visible: bool },
}

/// A stored chat message as clients see it (the `message` frame without its `type`).
#[derive(Serialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct ChatMessage {
    pub seq: i64,
    pub sender_id: i64,
    pub sender_name: String,
    pub text: String,
    pub client_id: String,
    #[serde(serialize_with = "ts::serialize")]
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        family_id: i64,
        user_id: i64,
        last_seq: i64,
        present: Vec<i64>,
    },
    Message(&'a ChatMessage),
    Ack {
        client_id: &'a str,
        seq: i64,
    },
    Resumed {
        last_seq: i64,
    },
    Presence {
        user_id: i64,
        present: bool,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    pub fn encode(&self) -> ByteString {
        match serde_json::to_string(self) {
            Ok(text) => ByteString::from(text),
            Err(err) => {
                log::error!("frame did not serialize: {err}");
                ByteString::from_static(
                    r#"{"type":"error","code":"internal","message":"internal error"}"#,
                )
            }
        }
    }
}

/// Why a `send` frame is refused (answered with an `error` frame; the connection stays open).
pub fn check_send(client_id: &str, text: &str) -> Result<(), (&'static str, &'static str)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_checks_count_unicode_scalars() {
        assert!(check_send("a", &"가".repeat(2000)).is_ok());
        assert_eq!(
            check_send("a", &"가".repeat(2001)).unwrap_err().0,
            "text_too_long"
        );
        assert_eq!(check_send("a", "").unwrap_err().0, "text_empty");
        assert_eq!(check_send("", "x").unwrap_err().0, "invalid_client_id");
        assert_eq!(
            check_send(&"c".repeat(65), "x").unwrap_err().0,
            "invalid_client_id"
        );
    }

    #[test]
    fn frames_are_tagged() {
        let frame = ServerFrame::Ack {
            client_id: "c1",
            seq: 7,
        }
        .encode();
        assert_eq!(&*frame, r#"{"type":"ack","client_id":"c1","seq":7}"#);
        let parsed: ClientFrame =
            serde_json::from_str(r#"{"type":"resume","after_seq":3}"#).expect("a resume frame");
        assert!(matches!(parsed, ClientFrame::Resume { after_seq: 3 }));
    }
}

//! WebSocket frames (API.md "Chat"): what clients send, and what the server sends, pre-encoded
//! once so that a message fans out to every session as the same shared string.
use crate::error::ErrorCode;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ts;

/// Text frames over this close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest message text, in Unicode scalar values.
pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// `send` frames a session may have waiting for their ack (or refusal); the next one is refused
/// with `too_many_pending` and nothing is stored. Clients keep a window of a few (the web client
/// one, podo-load 8); this only stops a client from queueing unbounded work in the room.
pub const MAX_PENDING_SENDS: usize = 256;

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
        code: ErrorCode,
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

/// Why a client frame is refused: an `error` frame's code and message (the connection stays
/// open).
pub type Refusal = (ErrorCode, &'static str);

/// Parses one client text frame and checks a `send`: any text gives a frame, or the code and
/// message of the `error` frame that answers it.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, (ErrorCode, String)> {
    let frame = serde_json::from_str::<ClientFrame>(text)
        .map_err(|err| (ErrorCode::InvalidFrame, format!("not a valid frame: {err}")))?;
    if let ClientFrame::Send { client_id, text } = &frame {
        check_send(client_id, text).map_err(|(code, message)| (code, message.to_owned()))?;
    }
    Ok(frame)
}

/// Why a `send` frame is refused (answered with an `error` frame; the connection stays open).
/// U+0000 is refused in both fields: PostgreSQL cannot store it in text, and a message that
/// cannot be stored must not reach the Persister's shared batch.
pub fn check_send(client_id: &str, text: &str) -> Result<(), Refusal> {
    if client_id.as_bytes().contains(&0) || text.as_bytes().contains(&0) {
        return Err((
            ErrorCode::InvalidText,
            "client_id and text must not contain U+0000",
        ));
    }
    let id_len = client_id.chars().count();
    if id_len == 0 || id_len > MAX_CLIENT_ID_CHARS {
        return Err((
            ErrorCode::InvalidClientId,
            "client_id must be 1-64 characters",
        ));
    }
    let text_len = text.chars().count();
    if text_len == 0 {
        return Err((ErrorCode::TextEmpty, "text must not be empty"));
    }
    if text_len > MAX_TEXT_CHARS {
        return Err((
            ErrorCode::TextTooLong,
            "text must be at most 2000 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn send_checks_count_unicode_scalars() {
        assert!(check_send("a", &"가".repeat(2000)).is_ok());
        assert_eq!(
            check_send("a", &"가".repeat(2001)).unwrap_err().0,
            ErrorCode::TextTooLong
        );
        assert_eq!(check_send("a", "").unwrap_err().0, ErrorCode::TextEmpty);
        assert_eq!(
            check_send("", "x").unwrap_err().0,
            ErrorCode::InvalidClientId
        );
        assert_eq!(
            check_send(&"c".repeat(65), "x").unwrap_err().0,
            ErrorCode::InvalidClientId
        );
    }

    #[test]
    fn u0000_is_refused_in_text_and_client_id() {
        assert_eq!(
            check_send("a", "bad\0text").unwrap_err().0,
            ErrorCode::InvalidText
        );
        assert_eq!(
            check_send("id\0", "text").unwrap_err().0,
            ErrorCode::InvalidText
        );
        let frame = r#"{"type":"send","client_id":"c","text":"a\u0000b"}"#;
        assert_eq!(
            parse_client_frame(frame).unwrap_err().0,
            ErrorCode::InvalidText
        );
    }

    const CODES: [ErrorCode; 5] = [
        ErrorCode::InvalidFrame,
        ErrorCode::InvalidText,
        ErrorCode::InvalidClientId,
        ErrorCode::TextEmpty,
        ErrorCode::TextTooLong,
    ];

    /// Frames that are nearly right: a known type with fields of any JSON kind.
    fn near_frames() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            ".{0,80}".prop_map(|s| serde_json::Value::String(s).to_string()),
            "[\\x00-\\x{10ffff}]{2000,2002}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("\"\\u0000\"".to_owned()),
            Just("\"\\ud800\"".to_owned()),
            Just("{}".to_owned()),
            Just("[1,2]".to_owned()),
        ];
        let key = prop_oneof![
            Just("type"),
            Just("client_id"),
            Just("text"),
            Just("after_seq"),
            Just("visible"),
            Just("x"),
        ];
        let kind = prop_oneof![
            Just("\"send\""),
            Just("\"resume\""),
            Just("\"visibility\""),
            Just("\"shout\""),
            Just("7"),
        ];
        (kind, proptest::collection::vec((key, value), 0..5)).prop_map(|(kind, fields)| {
            let mut text = format!("{{\"type\":{kind}");
            for (k, v) in fields {
                text.push_str(&format!(",\"{k}\":{v}"));
            }
            text.push('}');
            text
        })
    }

    proptest! {
        #[test]
        fn any_text_is_a_frame_or_a_known_refusal(text in prop_oneof![".*", near_frames()]) {
            match parse_client_frame(&text) {
                Ok(ClientFrame::Send { client_id, text }) => {
                    prop_assert!(check_send(&client_id, &text).is_ok());
                }
                Ok(_) => {}
                Err((code, message)) => {
                    prop_assert!(CODES.contains(&code), "{code}");
                    prop_assert!(!message.is_empty());
                    // The refusal is sent back as an `error` frame that is valid JSON.
                    let frame = ServerFrame::Error { code, message: &message }.encode();
                    let parsed: serde_json::Value = serde_json::from_str(&frame).expect("JSON");
                    prop_assert_eq!(parsed["code"].as_str(), Some(code.as_str()));
                }
            }
        }
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

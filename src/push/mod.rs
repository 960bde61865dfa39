//! Push: the texts of every trigger, and the dispatcher that delivers each notification off the
//! request path to every target of the member: browsers by Web Push (`web`: RFC 8291 aes128gcm
//! payloads, RFC 8292 VAPID with the server's `keys`) and the mobile app by FCM HTTP v1 (`fcm`),
//! both under one endpoint policy and one TLS configuration.
pub mod delivery;
pub mod dispatcher;
pub mod endpoint;
pub mod fcm;
pub mod keys;
pub mod tls;
pub mod web;

use actix::Addr;
use serde::Serialize;

use crate::cluster::Cluster;

pub use dispatcher::{Notify, PushDispatcher, PushSettings, TargetsChanged};
pub use keys::VapidKeys;

/// The largest JSON payload podo encrypts: web-push's own limit, so that the aes128gcm record
/// (86 bytes of header, the payload, a padding delimiter and a 16-byte tag: 3,155 bytes at most)
/// stays well within the 4,096 bytes that FCM and Mozilla's autopush accept.
pub const MAX_PAYLOAD: usize = 3052;
/// Ends a body that was cut to fit [`MAX_PAYLOAD`].
const ELLIPSIS: char = '…';

/// A notification as the service worker receives it (API.md "Web push").
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    pub kind: &'static str,
    pub url: &'static str,
}

/// A chat text that starts with this is a sticker.
pub const STICKER_PREFIX: &str = "/static/media";

impl Notification {
    fn new(title: &str, body: impl Into<String>, kind: &'static str, url: &'static str) -> Self {
        Notification {
            title: title.to_owned(),
            body: body.into(),
            kind,
            url,
        }
    }

    pub fn chat(text: &str) -> Self {
        let body = if text.starts_with(STICKER_PREFIX) {
            "이모티콘을 보냈습니다."
        } else {
            text
        };
        Self::new("새로운 메시지가 도착했습니다.", body, "chat", "/#/chat")
    }

    pub fn wish_created(name: &str) -> Self {
        Self::new("위시리스트가 등록되었습니다!", name, "wish", "/#/wishes")
    }

    pub fn grapes_granted(count: i32) -> Self {
        Self::new(
            GRANTED_TITLE,
            format!("포도알 {count}개"),
            "grant",
            "/#/board",
        )
    }

    pub fn mission_approved(title: &str) -> Self {
        Self::new(GRANTED_TITLE, title, "grant", "/#/board")
    }

    pub fn mission_created(title: &str) -> Self {
        Self::new("미션이 등록되었습니다!", title, "mission", "/#/missions")
    }

    pub fn mission_submitted(title: &str) -> Self {
        Self::new("자녀가 미션을 완료했어요!", title, "mission", "/#/missions")
    }

    pub fn mission_rejected(reason_or_title: &str) -> Self {
        Self::new(
            "포도알 발급이 거절됐어요😥",
            reason_or_title,
            "mission",
            "/#/missions",
        )
    }
}

impl Notification {
    /// The web push JSON payload, the body cut at a character boundary and ended with `…` where
    /// the whole would not fit in [`MAX_PAYLOAD`] bytes.
    pub fn payload(&self) -> Vec<u8> {
        self.fit(MAX_PAYLOAD, |notification| {
            serde_json::to_vec(notification).unwrap_or_default()
        })
    }

    /// `encode(self)`, or where that is over `max` bytes, `encode` of this notification with the
    /// longest prefix of its body that fits, cut at a character boundary and ended with `…`.
    /// (Titles are short constants; at worst the body is `…` alone.)
    pub fn fit(&self, max: usize, encode: impl Fn(&Notification) -> Vec<u8>) -> Vec<u8> {
        let whole = encode(self);
        if whole.len() <= max {
            return whole;
        }
        let ends: Vec<usize> = self.body.char_indices().map(|(at, _)| at).collect();
        let cut_at = |chars: usize| {
            let mut cut = self.clone();
            cut.body.truncate(ends[chars]);
            cut.body.push(ELLIPSIS);
            encode(&cut)
        };
        // The longest prefix that fits: at least none of it.
        let (mut fits, mut too_long) = (0, ends.len());
        while too_long - fits > 1 {
            let middle = (fits + too_long) / 2;
            if cut_at(middle).len() <= max {
                fits = middle;
            } else {
                too_long = middle;
            }
        }
        cut_at(fits)
    }

    /// A chat message is wanted now; the rest may wait for a good moment (RFC 8030 `Urgency`,
    /// FCM's Android `priority`, `apns-priority`).
    pub fn urgent(&self) -> bool {
        self.kind == "chat"
    }

    /// RFC 8030 `Urgency`.
    pub fn urgency(&self) -> web_push::Urgency {
        if self.urgent() {
            web_push::Urgency::High
        } else {
            web_push::Urgency::Normal
        }
    }

    /// RFC 8030 `Topic` (FCM's `collapse_key` and `apns-collapse-id`): a newer grant or wish
    /// notice replaces one still undelivered; every chat message and mission step is kept.
    pub fn topic(&self) -> Option<&'static str> {
        match self.kind {
            "grant" | "wish" => Some(self.kind),
            _ => None,
        }
    }
}

const GRANTED_TITLE: &str = "포도알이 발급되었어요! 지금 확인해보세요.";

/// The handle the rest of the server uses: fire and forget, never waits on delivery.
#[derive(Clone)]
pub struct Push {
    dispatcher: Addr<PushDispatcher>,
    /// In cluster mode, where a change of targets is announced to the other nodes.
    cluster: Option<Cluster>,
}

impl Push {
    /// In cluster mode the dispatcher also forgets its targets when another node changed some.
    pub fn new(dispatcher: Addr<PushDispatcher>, cluster: Option<Cluster>) -> Self {
        if let Some(cluster) = &cluster {
            let forget = dispatcher.clone();
            cluster.on_push_targets_changed(move || forget.do_send(TargetsChanged));
        }
        Push {
            dispatcher,
            cluster,
        }
    }

    pub fn notify(&self, user_id: i64, notification: Notification) {
        self.dispatcher.do_send(Notify {
            user_id,
            notification,
        });
    }

    /// Call after storing, taking over or removing a web subscription or a device: this node
    /// and (in cluster mode) every other one read the targets again.
    pub fn targets_changed(&self) {
        self.dispatcher.do_send(TargetsChanged);
        if let Some(cluster) = &self.cluster {
            cluster.push_targets_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stickers_get_their_own_body() {
        assert_eq!(
            Notification::chat("/static/media/grape-happy.svg").body,
            "이모티콘을 보냈습니다."
        );
        assert_eq!(
            Notification::chat("안녕 /static/media").body,
            "안녕 /static/media"
        );
        assert_eq!(Notification::grapes_granted(3).body, "포도알 3개");
    }

    #[test]
    fn long_bodies_are_cut_to_fit() {
        let short = Notification::chat("안녕");
        assert_eq!(
            short.payload(),
            serde_json::to_vec(&short).unwrap(),
            "a short one is whole"
        );
        for text in ["가".repeat(2000), "a".repeat(5000), "\"\\\n".repeat(1500)] {
            let payload = Notification::chat(&text).payload();
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            let back: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let body = back["body"].as_str().unwrap();
            let kept = body.strip_suffix('…').expect("ends with …");
            assert!(text.starts_with(kept));
            // Not shorter than it need be: one more character would not fit.
            assert!(
                payload.len() + 8 > MAX_PAYLOAD,
                "{} bytes left unused",
                MAX_PAYLOAD - payload.len()
            );
        }
    }

    #[test]
    fn urgency_and_topic_follow_the_kind() {
        assert_eq!(Notification::chat("x").urgency(), web_push::Urgency::High);
        assert_eq!(Notification::chat("x").topic(), None);
        assert_eq!(
            Notification::grapes_granted(1).urgency(),
            web_push::Urgency::Normal
        );
        assert_eq!(Notification::grapes_granted(1).topic(), Some("grant"));
        assert_eq!(Notification::wish_created("a").topic(), Some("wish"));
        assert_eq!(Notification::mission_created("a").topic(), None);
    }
}

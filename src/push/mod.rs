//! Web push (RFC 8291 aes128gcm payloads, RFC 8292 VAPID): the keys, the texts of every trigger,
//! and the dispatcher that delivers off the request path.
pub mod dispatcher;
pub mod keys;

use actix::Addr;
use serde::Serialize;

pub use dispatcher::{Notify, PushDispatcher, SubscriptionsChanged};
pub use keys::VapidKeys;

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

const GRANTED_TITLE: &str = "포도알이 발급되었어요! 지금 확인해보세요.";

/// The handle the rest of the server uses: fire and forget, never waits on delivery.
#[derive(Clone)]
pub struct Push {
    dispatcher: Addr<PushDispatcher>,
}

impl Push {
    pub fn new(dispatcher: Addr<PushDispatcher>) -> Self {
        Push { dispatcher }
    }

    pub fn notify(&self, user_id: i64, notification: Notification) {
        self.dispatcher.do_send(Notify {
            user_id,
            notification,
        });
    }

    /// Call after storing, taking over or removing a subscription.
    pub fn subscriptions_changed(&self) {
        self.dispatcher.do_send(SubscriptionsChanged);
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
}

//! The Web Push provider: encrypts (RFC 8291 `aes128gcm`) and signs (RFC 8292 VAPID) one
//! notification for one browser subscription with the `web-push` crate, and sends it with the
//! dispatcher's HTTP client. A 404 or 410 means the subscription is gone; other failures are
//! worth another try.
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use web_push::{ContentEncoding, SubscriptionInfo, VapidSignature, WebPushMessageBuilder};

use super::delivery::{Http, Outcome};
use super::{Notification, VapidKeys};
use crate::store::entities::push_subscription;

/// How long a push service keeps an undelivered notification (seconds).
const TTL: u32 = 24 * 60 * 60;
/// VAPID tokens expire this long after signing (RFC 8292: at most 24 h; API.md: at most 12 h).
const VAPID_LIFETIME_SECS: i64 = 12 * 60 * 60 - 60;
/// A signed VAPID token is used for this long, so it has 11 h left at its last use.
const VAPID_REUSE: Duration = Duration::from_secs(60 * 60);
/// Origins whose tokens are kept (users choose endpoints, so their origins are theirs to grow).
const VAPID_TOKENS_MAX: usize = 1024;

pub struct WebPush {
    keys: VapidKeys,
    /// VAPID `sub` claim.
    subject: String,
    /// origin → its VAPID token and when it was signed.
    vapid_tokens: RefCell<HashMap<String, (VapidSignature, Instant)>>,
}

impl WebPush {
    pub fn new(keys: VapidKeys, subject: String) -> Self {
        WebPush {
            keys,
            subject,
            vapid_tokens: RefCell::default(),
        }
    }

    /// One try of `payload` (the notification's JSON, [`Notification::payload`]) to a
    /// subscription.
    pub async fn send(
        &self,
        http: &Http,
        subscription: &push_subscription::Model,
        notification: &Notification,
        payload: &[u8],
    ) -> Outcome {
        let request = match http.post(&subscription.endpoint).await {
            Ok(request) => request,
            Err(outcome) => return outcome,
        };
        let built = match self.build_request(subscription, notification, payload) {
            Ok(built) => built,
            Err(err) => return Outcome::retry(format!("could not build the request: {err}")),
        };
        let mut request = request;
        for (name, value) in built.headers {
            request = request.insert_header((name, value));
        }
        match request.send_body(built.body).await {
            Ok(response) if response.status().is_success() => Outcome::Delivered,
            Ok(response) if matches!(response.status().as_u16(), 404 | 410) => Outcome::Gone,
            Ok(response) => Outcome::retry(format!("push service answered {}", response.status())),
            Err(err) => Outcome::retry(err.to_string()),
        }
    }

    /// The VAPID token for a push service's origin: signed once and reused for [`VAPID_REUSE`]
    /// (an ES256 signature per push is most of a delivery's CPU otherwise).
    fn vapid_token(
        &self,
        info: &SubscriptionInfo,
        aud: String,
    ) -> Result<VapidSignature, web_push::WebPushError> {
        if let Some((token, signed_at)) = self.vapid_tokens.borrow().get(&aud)
            && signed_at.elapsed() < VAPID_REUSE
        {
            return Ok(token.clone());
        }
        let mut signer = self.keys.signer()?.add_sub_info(info);
        signer.add_claim("aud", aud.as_str());
        signer.add_claim("sub", self.subject.as_str());
        signer.add_claim(
            "exp",
            (chrono::Utc::now().timestamp() + VAPID_LIFETIME_SECS) as u64,
        );
        let token = signer.build()?;
        let mut tokens = self.vapid_tokens.borrow_mut();
        if tokens.len() >= VAPID_TOKENS_MAX {
            tokens.retain(|_, (_, signed_at)| signed_at.elapsed() < VAPID_REUSE);
            if tokens.len() >= VAPID_TOKENS_MAX {
                tokens.clear();
            }
        }
        tokens.insert(aud, (token.clone(), Instant::now()));
        Ok(token)
    }

    /// An encrypted, signed request for one subscription. `aud` is the endpoint's exact origin,
    /// port included (web-push's default drops a non-default port, which push services reject).
    fn build_request(
        &self,
        subscription: &push_subscription::Model,
        notification: &Notification,
        payload: &[u8],
    ) -> Result<PushRequest, web_push::WebPushError> {
        let info = SubscriptionInfo::new(
            subscription.endpoint.as_str(),
            subscription.p256dh.as_str(),
            subscription.auth.as_str(),
        );
        let aud = origin(&subscription.endpoint).ok_or(web_push::WebPushError::InvalidUri)?;
        let signature = self.vapid_token(&info, aud)?;
        let mut message = WebPushMessageBuilder::new(&info);
        message.set_payload(ContentEncoding::Aes128Gcm, payload);
        message.set_ttl(TTL);
        message.set_urgency(notification.urgency());
        if let Some(topic) = notification.topic() {
            message.set_topic(topic.to_owned());
        }
        message.set_vapid_signature(signature);
        let request = web_push::request_builder::build_request::<Vec<u8>>(message.build()?);
        Ok(PushRequest {
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            body: request.into_body(),
        })
    }
}

struct PushRequest {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// `scheme://host[:port]` of a URL, keeping a non-default port.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origin_keeps_a_non_default_port() {
        assert_eq!(
            origin("http://127.0.0.1:8123/push/1").as_deref(),
            Some("http://127.0.0.1:8123")
        );
        assert_eq!(
            origin("https://fcm.googleapis.com/fcm/send/x").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            origin("https://push.example:443/x").as_deref(),
            Some("https://push.example")
        );
        assert_eq!(
            origin("HTTPS://Push.Example:8443").as_deref(),
            Some("https://push.example:8443")
        );
        assert_eq!(origin("ftp://x/y"), None);
    }
}

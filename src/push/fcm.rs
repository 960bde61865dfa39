//! The FCM HTTP v1 provider: notifications to the mobile app on Android (directly) and iOS
//! (through APNs), beside web push, with the same texts (API.md "Native push (FCM)").
//!
//! Authorization is Google's OAuth 2.0 JWT bearer grant for a service account: an RS256 JWT
//! signed with the account's key (`kid` = `private_key_id`, `iss` = `client_email`, `aud` =
//! `token_uri`, `scope` = [`SCOPE`], an hour long) is exchanged at `token_uri` for an access
//! token, which is used until 5 minutes before it expires and fetched again once when FCM
//! answers 401. No vendor SDK: jsonwebtoken signs, and the dispatcher's awc client (rustls, the
//! endpoint policy) carries both requests.
use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Notification;
use super::delivery::{Http, Outcome};
use super::endpoint::EndpointPolicy;
use crate::metrics::Metrics;

/// The OAuth 2.0 scope of FCM's send API.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `PODO_FCM_ENDPOINT`'s default.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// The largest request body sent to FCM (its payload limit is 4,096 bytes); a longer text is cut.
pub const MAX_MESSAGE: usize = 4096;
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's lifetime: Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: i64 = 60 * 60;
/// An access token is fetched again this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The longest an access token is used, whatever `expires_in` says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `Retry-After` honoured: a retry waits in a task of its own, and a notification
/// later than this is hardly news.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most of an answer's body that is read (token answers and FCM's error JSON are small).
const MAX_ANSWER: usize = 64 * 1024;
/// A service-account key file is about 2.3 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why FCM could not be set up; stops the start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FcmSetupError(String);

/// A Google service account's key file (`PODO_FCM_CREDENTIALS`). Deliberately not `Debug`: the
/// key never reaches a log.
struct Credentials {
    project_id: String,
    private_key_id: String,
    client_email: String,
    token_uri: String,
    key: EncodingKey,
}

/// The claims of the JWT bearer grant's assertion.
#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// An access token and when to fetch the next. Deliberately not `Debug`.
#[derive(Clone)]
struct AccessToken {
    value: String,
    renew_at: Instant,
}

pub struct Fcm {
    credentials: Credentials,
    /// `{endpoint}/v1/projects/{project_id}/messages:send`.
    send_url: String,
    /// The cached access token; the lock also makes one fetch serve every delivery waiting.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

fn field<'a>(key: &'a Value, name: &str) -> Result<&'a str, String> {
    key[name]
        .as_str()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| format!("`{name}` is missing or not a string"))
}

impl Credentials {
    /// Reads and checks a key file. Errors name the file and the field, never a key's content.
    fn load(path: &Path, policy: &EndpointPolicy) -> Result<Credentials, String> {
        let size = std::fs::metadata(path)
            .map_err(|err| format!("cannot read it: {err}"))?
            .len();
        if size > MAX_KEY_FILE {
            return Err(format!(
                "{size} bytes is too large for a service-account key"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read it: {err}"))?;
        // Parsed as a value first: a typed parse would quote a wrongly typed field in its error.
        let key: Value = serde_json::from_str(&text)
            .map_err(|err| format!("not JSON (line {}, column {})", err.line(), err.column()))?;
        let project_id = field(&key, "project_id")?;
        if !project_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
        {
            return Err("`project_id` is not a Google Cloud project id".into());
        }
        let token_uri = field(&key, "token_uri")?;
        policy
            .check(token_uri)
            .map_err(|why| format!("`token_uri` {token_uri} must be {why}"))?;
        let pem = field(&key, "private_key")?;
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "`private_key` is not an RSA private key in PEM (PKCS#8 or PKCS#1)")?;
        let der = private
            .to_pkcs1_der()
            .map_err(|_| "`private_key` could not be encoded for signing")?;
        let credentials = Credentials {
            project_id: project_id.to_owned(),
            private_key_id: field(&key, "private_key_id")?.to_owned(),
            client_email: field(&key, "client_email")?.to_owned(),
            token_uri: token_uri.to_owned(),
            key: EncodingKey::from_rsa_der(der.as_bytes()),
        };
        credentials
            .assertion()
            .map_err(|err| format!("signing with `private_key` failed: {err}"))?;
        Ok(credentials)
    }

    /// A signed assertion for the JWT bearer grant, valid for the next hour.
    fn assertion(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let iat = chrono::Utc::now().timestamp();
        let claims = Assertion {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

impl Fcm {
    /// FCM with the key file at `credentials` and the API at `endpoint` (its origin, as
    /// [`DEFAULT_ENDPOINT`]); both addresses must pass the endpoint policy.
    pub fn new(
        credentials: &Path,
        endpoint: &str,
        policy: &EndpointPolicy,
    ) -> Result<Fcm, FcmSetupError> {
        let credentials = Credentials::load(credentials, policy).map_err(|why| {
            FcmSetupError(format!(
                "PODO_FCM_CREDENTIALS {}: {why}",
                credentials.display()
            ))
        })?;
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            endpoint.trim_end_matches('/'),
            credentials.project_id
        );
        let bare = url::Url::parse(endpoint)
            .is_ok_and(|url| url.query().is_none() && url.fragment().is_none());
        let checked = if bare {
            policy.check(&send_url)
        } else {
            Err("an absolute URL without query or fragment")
        };
        if let Err(why) = checked {
            return Err(FcmSetupError(format!(
                "PODO_FCM_ENDPOINT {endpoint} must be {why}"
            )));
        }
        log::info!(
            "push: FCM on for project {} as {} (key {})",
            credentials.project_id,
            credentials.client_email,
            credentials.private_key_id
        );
        Ok(Fcm {
            credentials,
            send_url,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// One try of a message (from [`message`]) to FCM. A 401 fetches a new access token and
    /// sends once more within the same try.
    pub async fn send(&self, http: &Http, metrics: &Metrics, body: &[u8]) -> Outcome {
        let mut fetched_again = false;
        loop {
            let token = match self.access_token(http, metrics).await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let request = match http.post(&self.send_url).await {
                Ok(request) => request,
                Err(outcome) => return outcome,
            };
            let mut response = match request
                .bearer_auth(&token)
                .content_type("application/json")
                .send_body(body.to_vec())
                .await
            {
                Ok(response) => response,
                Err(err) => return Outcome::retry(err.to_string()),
            };
            let status = response.status().as_u16();
            if response.status().is_success() {
                return Outcome::Delivered;
            }
            if status == 401 && !fetched_again {
                log::info!("push: FCM refused the access token (401); fetching a new one");
                self.forget_token(&token).await;
                fetched_again = true;
                continue;
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let answer = response.body().limit(MAX_ANSWER).await.unwrap_or_default();
            return judge(status, retry_after, &answer);
        }
    }

    /// The cached access token, or a new one from the token endpoint.
    async fn access_token(&self, http: &Http, metrics: &Metrics) -> Result<String, Outcome> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token(http).await?;
        metrics
            .fcm_token_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *cached = Some(token.clone());
        Ok(token.value)
    }

    /// Forgets `used` if it is still the cached token (many deliveries may meet the same 401;
    /// the first to come here makes the next fetch happen, the others find the new token).
    async fn forget_token(&self, used: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|token| token.value == used) {
            *cached = None;
        }
    }

    async fn fetch_token(&self, http: &Http) -> Result<AccessToken, Outcome> {
        let assertion = self
            .credentials
            .assertion()
            .map_err(|err| Outcome::Failed(format!("could not sign the assertion: {err}")))?;
        let request = http.post(&self.credentials.token_uri).await?;
        let asked_at = Instant::now();
        let mut response = request
            .send_form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .await
            .map_err(|err| Outcome::retry(format!("token endpoint: {err}")))?;
        let status = response.status();
        if !status.is_success() {
            let why = format!("token endpoint answered {status}");
            // 4xx: the grant itself was refused (a revoked key, a clock far off); 5xx and 429
            // may pass.
            return Err(if status.is_client_error() && status.as_u16() != 429 {
                Outcome::Failed(why)
            } else {
                Outcome::retry(why)
            });
        }
        let answer: TokenAnswer = response
            .json()
            .limit(MAX_ANSWER)
            .await
            .map_err(|err| Outcome::retry(format!("token endpoint's answer: {err}")))?;
        let lifetime = Duration::from_secs(answer.expires_in).min(MAX_TOKEN_LIFETIME);
        log::info!(
            "push: fetched an FCM access token valid for {} s",
            lifetime.as_secs()
        );
        Ok(AccessToken {
            value: answer.access_token,
            renew_at: asked_at + lifetime.saturating_sub(RENEW_BEFORE),
        })
    }
}

/// The FCM v1 request body for one device, at most [`MAX_MESSAGE`] bytes where the token leaves
/// room (FCM's tokens are about 160 characters; the text is cut like web push's).
pub fn message(notification: &Notification, token: &str) -> Vec<u8> {
    notification.fit(MAX_MESSAGE, |notification| {
        serde_json::to_vec(&message_json(notification, token)).unwrap_or_default()
    })
}

fn message_json(notification: &Notification, token: &str) -> Value {
    let urgent = notification.urgent();
    let mut android = json!({"priority": if urgent { "HIGH" } else { "NORMAL" }});
    let mut headers = json!({"apns-priority": if urgent { "10" } else { "5" }});
    if let Some(topic) = notification.topic() {
        android["collapse_key"] = json!(topic);
        headers["apns-collapse-id"] = json!(topic);
    }
    json!({"message": {
        "token": token,
        "notification": {"title": notification.title, "body": notification.body},
        "data": {"kind": notification.kind, "url": notification.url},
        "android": android,
        "apns": {"headers": headers, "payload": {"aps": {"sound": "default"}}},
    }})
}

/// `Retry-After` as seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What an FCM error answer means for the device (FCM v1 `ErrorCode`s).
fn judge(status: u16, retry_after: Option<Duration>, answer: &[u8]) -> Outcome {
    let error: Value = serde_json::from_slice(answer).unwrap_or_default();
    let error = &error["error"];
    let details = error["details"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let code = details
        .iter()
        .find_map(|detail| detail["errorCode"].as_str())
        .or_else(|| error["status"].as_str())
        .unwrap_or_default();
    let about_token = details.iter().any(|detail| {
        detail["fieldViolations"]
            .as_array()
            .is_some_and(|violations| violations.iter().any(|v| v["field"] == "message.token"))
    }) || error["message"]
        .as_str()
        .is_some_and(|message| message.contains("registration token"));
    let why = format!(
        "FCM answered {status} {code}: {}",
        error["message"].as_str().unwrap_or_default()
    );
    match (status, code) {
        (404, "UNREGISTERED") | (403, "SENDER_ID_MISMATCH") => Outcome::Gone,
        (400, "INVALID_ARGUMENT") if about_token => Outcome::Gone,
        (429 | 503, _) => Outcome::Retry {
            why,
            after: retry_after,
        },
        (401 | 500 | 502 | 504, _) => Outcome::retry(why),
        _ => Outcome::Failed(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, code: &str, message: &str) -> Vec<u8> {
        json!({"error": {"code": 0, "status": status, "message": message, "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        ]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn errors_are_judged_by_their_code() {
        let gone = |outcome: Outcome| matches!(outcome, Outcome::Gone);
        assert!(gone(judge(
            404,
            None,
            &answer("NOT_FOUND", "UNREGISTERED", "")
        )));
        assert!(gone(judge(
            403,
            None,
            &answer("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "")
        )));
        assert!(gone(judge(
            400,
            None,
            &answer(
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token"
            )
        )));
        // A 404 or 400 that is not about the device keeps it (a wrong project id, a bad message).
        assert!(matches!(
            judge(404, None, b"<html>not found</html>"),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge(
                400,
                None,
                &answer(
                    "INVALID_ARGUMENT",
                    "INVALID_ARGUMENT",
                    "Invalid JSON payload"
                )
            ),
            Outcome::Failed(_)
        ));
        let after = Some(Duration::from_secs(2));
        assert!(matches!(
            judge(429, after, &answer("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "")),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            judge(503, None, b""),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn messages_carry_priority_collapse_and_fit() {
        let chat: Value =
            serde_json::from_slice(&message(&Notification::chat("안녕"), "tok")).unwrap();
        let message = &chat["message"];
        assert_eq!(message["token"], "tok");
        assert_eq!(
            message["notification"]["title"],
            "새로운 메시지가 도착했습니다."
        );
        assert_eq!(message["data"], json!({"kind": "chat", "url": "/#/chat"}));
        assert_eq!(message["android"], json!({"priority": "HIGH"}));
        assert_eq!(message["apns"]["headers"], json!({"apns-priority": "10"}));
        assert_eq!(
            message["apns"]["payload"],
            json!({"aps": {"sound": "default"}})
        );
        let grant: Value =
            serde_json::from_slice(&super::message(&Notification::grapes_granted(2), "tok"))
                .unwrap();
        assert_eq!(
            grant["message"]["android"],
            json!({"priority": "NORMAL", "collapse_key": "grant"})
        );
        assert_eq!(
            grant["message"]["apns"]["headers"],
            json!({"apns-priority": "5", "apns-collapse-id": "grant"})
        );
        let long = super::message(&Notification::chat(&"포도".repeat(1000)), &"t".repeat(200));
        assert!(long.len() <= MAX_MESSAGE, "{}", long.len());
        assert!(long.len() + 8 > MAX_MESSAGE, "as much as fits");
        let back: Value = serde_json::from_slice(&long).unwrap();
        assert!(
            back["message"]["notification"]["body"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );
    }
}

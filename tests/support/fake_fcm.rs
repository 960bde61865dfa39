//! A fake FCM HTTP v1 that behaves like Google's, for tests: HTTPS with a certificate from a CA
//! the test made (`push_service::TestCa`, which the server trusts only because it is told to),
//! and two endpoints —
//! - `POST /token`, the OAuth 2.0 token endpoint: takes the JWT bearer grant form, verifies the
//!   RS256 assertion with the public half of the test's service-account key and checks `kid`,
//!   `iss`, `aud`, `scope`, `iat` and `exp` (at most an hour), then issues an access token with
//!   `expires_in`;
//! - `POST /v1/projects/{project}/messages:send`: checks the bearer token (401 unless issued and
//!   not expired), the body's size (4,096 bytes) and the message's shape (400 otherwise), records
//!   every message, and answers as the test scripted for the device token: 200, `UNREGISTERED`,
//!   `SENDER_ID_MISMATCH`, `429` with `Retry-After`, or `503`.
//!
//! Needs the `push_service` module beside it (both are included with `#[path]`).
#![allow(dead_code)] // shared by tests/api and tests/process.rs; not each uses every part
use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::push_service::TestCa;

pub const PROJECT: &str = "podo-test";
pub const CLIENT_EMAIL: &str = "podo-push@podo-test.iam.gserviceaccount.com";
pub const KEY_ID: &str = "5f0c-test-key-id";
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// FCM's limit on a message.
pub const MAX_MESSAGE: usize = 4096;
/// What the token endpoint says an access token lasts.
pub const EXPIRES_IN: u64 = 3599;

/// The test's service-account key (made here, once per test process; never a real key).
static TEST_KEY: LazyLock<RsaPrivateKey> = LazyLock::new(|| {
    RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA test key")
});

/// How the send endpoint answers one message to a device token.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    /// 404 `UNREGISTERED`: the app was uninstalled or the token expired.
    Unregistered,
    /// 403 `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// 429 `QUOTA_EXCEEDED` with `Retry-After`.
    TooMany {
        retry_after: u64,
    },
    /// 503 `UNAVAILABLE`, with `Retry-After` or without.
    Unavailable {
        retry_after: Option<u64>,
    },
}

/// One request to the send endpoint.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The device token (`message.token`), or "" if the body was not a message.
    pub token: String,
    pub message: Value,
    pub bytes: usize,
    pub http2: bool,
    /// What the fake answered.
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    token_uri: String,
    /// Access tokens issued, and whether each is still good.
    issued: Mutex<Vec<(String, bool)>>,
    /// Every token request: `Ok` or why it was refused.
    token_requests: Mutex<Vec<Result<(), String>>>,
    answers: Mutex<HashMap<String, VecDeque<Answer>>>,
    sent: Mutex<Vec<Sent>>,
}

pub struct FakeFcm {
    state: Arc<State>,
    /// `https://127.0.0.1:<port>`: `PODO_FCM_ENDPOINT`.
    pub base: String,
    /// `{base}/token`: the key file's `token_uri`.
    pub token_uri: String,
    /// The service-account key file (`PODO_FCM_CREDENTIALS`).
    pub credentials: PathBuf,
    _dir: tempfile::TempDir,
    _ca: Arc<TestCa>,
}

fn fcm_error(status: u16, code: &str, message: &str, error_code: Option<&str>) -> HttpResponse {
    let details: Vec<Value> = error_code
        .map(|error_code| {
            json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
        })
        .into_iter()
        .collect();
    let body =
        json!({"error": {"code": status, "message": message, "status": code, "details": details}});
    HttpResponse::build(awc::http::StatusCode::from_u16(status).unwrap()).json(body)
}

/// The assertion of a JWT bearer grant, checked as Google checks it.
fn check_assertion(state: &State, assertion: &str) -> Result<(), String> {
    let public = TEST_KEY.to_public_key();
    let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(
        &public.n().to_bytes_be(),
        &public.e().to_bytes_be(),
    );
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("header: {e}"))?;
    if header.kid.as_deref() != Some(KEY_ID) {
        return Err(format!("kid {:?}", header.kid));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&state.token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| format!("assertion: {e}"))?
        .claims;
    if claims["scope"] != SCOPE {
        return Err(format!("scope {}", claims["scope"]));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let now = chrono::Utc::now().timestamp();
    if iat > now + 60 || exp <= now || exp - iat > 3600 {
        return Err(format!("iat {iat} exp {exp} at {now}"));
    }
    Ok(())
}

async fn token(
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let checked = if !content_type.starts_with("application/x-www-form-urlencoded") {
        Err(format!("content type {content_type}"))
    } else if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        Err(format!("grant_type {:?}", form.get("grant_type")))
    } else {
        check_assertion(&state, form.get("assertion").map_or("", String::as_str))
    };
    state.token_requests.lock().unwrap().push(checked.clone());
    if let Err(why) = checked {
        log::warn!("fake FCM refused a token request: {why}");
        return HttpResponse::BadRequest()
            .json(json!({"error": "invalid_grant", "error_description": why}));
    }
    let mut issued = state.issued.lock().unwrap();
    let access_token = format!("ya29.fake-{}-{}", issued.len() + 1, rand::random::<u32>());
    issued.push((access_token.clone(), true));
    HttpResponse::Ok().json(
        json!({"access_token": access_token, "expires_in": EXPIRES_IN, "token_type": "Bearer"}),
    )
}

/// The message's shape as podo promises it (API.md "Native push (FCM)").
pub fn check_message(message: &Value) -> Result<(), String> {
    let m = &message["message"];
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    if !text(&m["token"])
        || !text(&m["notification"]["title"])
        || !m["notification"]["body"].is_string()
    {
        return Err("token, notification.title and notification.body".into());
    }
    let kind = m["data"]["kind"].as_str().unwrap_or_default();
    if !["chat", "wish", "grant", "mission"].contains(&kind) {
        return Err(format!("data.kind {kind:?}"));
    }
    if !m["data"]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("/#/"))
    {
        return Err("data.url".into());
    }
    let chat = kind == "chat";
    let collapse = ["grant", "wish"].contains(&kind).then_some(kind);
    let expect = |value: &Value, wanted: Option<&str>, what: &str| {
        if value.as_str() == wanted {
            Ok(())
        } else {
            Err(format!("{what} {value} for {kind}"))
        }
    };
    expect(
        &m["android"]["priority"],
        Some(if chat { "HIGH" } else { "NORMAL" }),
        "android.priority",
    )?;
    expect(
        &m["android"]["collapse_key"],
        collapse,
        "android.collapse_key",
    )?;
    let headers = &m["apns"]["headers"];
    expect(
        &headers["apns-priority"],
        Some(if chat { "10" } else { "5" }),
        "apns-priority",
    )?;
    expect(&headers["apns-collapse-id"], collapse, "apns-collapse-id")?;
    expect(
        &m["apns"]["payload"]["aps"]["sound"],
        Some("default"),
        "aps.sound",
    )?;
    Ok(())
}

async fn send(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let project = req.match_info().get("project").unwrap_or_default();
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    let token = message["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let authorized = state
        .issued
        .lock()
        .unwrap()
        .iter()
        .any(|(issued, good)| *good && issued == bearer);
    let response = if project != PROJECT {
        fcm_error(404, "NOT_FOUND", "no such project", None)
    } else if !authorized {
        fcm_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
    } else if body.len() > MAX_MESSAGE {
        fcm_error(
            400,
            "INVALID_ARGUMENT",
            "Message is too big",
            Some("INVALID_ARGUMENT"),
        )
    } else if let Err(why) = check_message(&message) {
        log::warn!("fake FCM refused a message: {why}");
        fcm_error(400, "INVALID_ARGUMENT", &why, Some("INVALID_ARGUMENT"))
    } else {
        let answer = state
            .answers
            .lock()
            .unwrap()
            .get_mut(&token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok);
        match answer {
            Answer::Ok => HttpResponse::Ok().json(
                json!({"name": format!("projects/{PROJECT}/messages/0:{}", rand::random::<u32>())}),
            ),
            Answer::Unregistered => fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            Answer::SenderIdMismatch => fcm_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
            ),
            Answer::TooMany { retry_after } => {
                let mut response = fcm_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded.",
                    Some("QUOTA_EXCEEDED"),
                );
                response.headers_mut().insert(
                    awc::http::header::RETRY_AFTER,
                    retry_after.to_string().parse().unwrap(),
                );
                response
            }
            Answer::Unavailable { retry_after } => {
                let mut response = fcm_error(
                    503,
                    "UNAVAILABLE",
                    "The service is unavailable.",
                    Some("UNAVAILABLE"),
                );
                if let Some(retry_after) = retry_after {
                    response.headers_mut().insert(
                        awc::http::header::RETRY_AFTER,
                        retry_after.to_string().parse().unwrap(),
                    );
                }
                response
            }
        }
    };
    state.sent.lock().unwrap().push(Sent {
        token,
        message,
        bytes: body.len(),
        http2: req.version() == awc::http::Version::HTTP_2,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

impl FakeFcm {
    /// A fake FCM whose certificate `ca` signed, and a key file for it.
    pub async fn start(ca: Arc<TestCa>) -> FakeFcm {
        let tls = ca.server_tls("podo fake FCM");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let token_uri = format!("{base}/token");
        let state = Arc::new(State {
            token_uri: token_uri.clone(),
            ..State::default()
        });
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/token", web::post().to(token))
                .route("/v1/projects/{project}/messages:send", web::post().to(send))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, tls)
        .unwrap();
        actix_web::rt::spawn(server.run());
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("service-account.json");
        std::fs::write(&credentials, key_json(&token_uri).to_string()).unwrap();
        FakeFcm {
            state,
            base,
            token_uri,
            credentials,
            _dir: dir,
            _ca: ca,
        }
    }

    /// Answer the next messages to `token` so (then 200).
    pub fn answer(&self, token: &str, answers: impl IntoIterator<Item = Answer>) {
        self.state
            .answers
            .lock()
            .unwrap()
            .entry(token.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Every access token issued so far is refused (401) from now on, as an expired one is.
    pub fn expire_tokens(&self) {
        for (_, good) in self.state.issued.lock().unwrap().iter_mut() {
            *good = false;
        }
    }

    /// Token requests granted so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.issued.lock().unwrap().len()
    }

    /// Why token requests were refused (none, when the server signs as it should).
    pub fn refused_token_requests(&self) -> Vec<String> {
        self.state
            .token_requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.clone().err())
            .collect()
    }

    pub fn sent_to(&self, token: &str) -> Vec<Sent> {
        self.state
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.token == token)
            .cloned()
            .collect()
    }

    pub fn sent_total(&self) -> usize {
        self.state.sent.lock().unwrap().len()
    }

    /// Waits until `token` has been sent `n` requests (or `wait` passes); returns them.
    pub async fn wait_for(&self, token: &str, n: usize, wait: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.sent_to(token);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Sent {
    /// (kind, title, body) of a message FCM accepted.
    pub fn texts(&self) -> (String, String, String) {
        assert_eq!(self.status, 200, "FCM accepted it: {}", self.message);
        let m = &self.message["message"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (
            s(&m["data"]["kind"]),
            s(&m["notification"]["title"]),
            s(&m["notification"]["body"]),
        )
    }
}

/// A Google service-account key file for the test key, with `token_uri` as given.
pub fn key_json(token_uri: &str) -> Value {
    let pem = TEST_KEY
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 PEM")
        .to_string();
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
}

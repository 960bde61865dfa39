//! Test harness: every test gets its own server on port 0 and its own database. With
#![allow(dead_code)] // shared by every test module; not each uses every helper
//! `PODO_TEST_PG=postgres://user@host:port/db` set, each test creates a fresh PostgreSQL database
//! there; otherwise a temporary SQLite file.
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use awc::http::StatusCode;
use podo::{Application, Config, app::Stopper};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

pub const JWT_SECRET: &str = "test-secret-for-podo";
pub const PASSWORD: &str = "grape-password";

pub struct TestApp {
    pub base: String,
    pub config: Config,
    pub client: awc::Client,
    /// The server's database handles (tests that reach under the API, such as a full disk).
    pub db: podo::store::Db,
    /// Panics to inject into the server's actors (supervision tests).
    pub panics: std::sync::Arc<podo::supervise::InjectedPanics>,
    stopper: Stopper,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn fresh_database_url(dir: &tempfile::TempDir) -> String {
    match std::env::var("PODO_TEST_PG") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!(
                "podo_t_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            let admin = Database::connect(admin_url.as_str())
                .await
                .expect("connect to PODO_TEST_PG");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("PODO_TEST_PG has a database");
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}/podo.db", dir.path().display()),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(fresh_database_url(&dir).await);
    config.jwt_secret = Some(JWT_SECRET.into());
    adjust(&mut config);
    let (base, stopper, db, panics) = start(&config).await;
    TestApp {
        base,
        config,
        db,
        panics,
        client: awc::Client::builder()
            // No pool cap: tests hold hundreds of streams open at once.
            .connector(awc::Connector::new().limit(0))
            .timeout(Duration::from_secs(30))
            .finish(),
        stopper,
        _dir: dir,
    }
}

type Started = (
    String,
    Stopper,
    podo::store::Db,
    std::sync::Arc<podo::supervise::InjectedPanics>,
);

async fn start(config: &Config) -> Started {
    let app = Application::build(config.clone())
        .await
        .expect("server starts");
    let base = format!("http://{}", app.address());
    let stopper = app.stopper();
    let db = app.db();
    let panics = app.injected_panics();
    actix_web::rt::spawn(app.run_until_stopped());
    (base, stopper, db, panics)
}

/// A parent and a child paired into one family.
pub struct TestFamily {
    pub id: i64,
    pub parent: Member,
    pub child: Member,
}

#[derive(Clone)]
pub struct Member {
    pub id: i64,
    pub login: String,
    pub token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server gracefully and starts a new one on the same database.
    pub async fn restart(&mut self) {
        self.stopper.stop().await;
        let (base, stopper, db, panics) = start(&self.config).await;
        self.base = base;
        self.stopper = stopper;
        self.db = db;
        self.panics = panics;
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut res = match body {
            Some(body) => req.send_json(&body).await,
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = res.body().limit(4 << 20).await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        (res.status(), value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request("POST", path, Some(token), Some(body)).await
    }

    pub async fn signup(&self, login: &str, role: &str) -> Value {
        let (status, body) = self
            .request(
                "POST",
                "/api/auth/signup",
                None,
                Some(json!({"login": login, "name": login, "password": PASSWORD, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "signup {login}: {body}");
        body
    }

    pub async fn login(&self, login: &str) -> String {
        let (status, body) = self
            .request(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"login": login, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {login}: {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    pub async fn member(&self, login: &str, role: &str) -> Member {
        let user = self.signup(login, role).await;
        Member {
            id: user["id"].as_i64().expect("id"),
            login: login.to_owned(),
            token: self.login(login).await,
        }
    }

    pub async fn invite(&self, parent: &Member) -> String {
        let (status, body) = self
            .post("/api/family/invite", &parent.token, json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "invite: {body}");
        body["code"].as_str().expect("code").to_owned()
    }

    /// Signs up `<prefix>_p` and `<prefix>_c` and pairs them.
    pub async fn family(&self, prefix: &str) -> TestFamily {
        let parent = self.member(&format!("{prefix}_p"), "parent").await;
        let child = self.member(&format!("{prefix}_c"), "child").await;
        let code = self.invite(&parent).await;
        let (status, body) = self
            .post("/api/family/join", &child.token, json!({ "code": code }))
            .await;
        assert_eq!(status, StatusCode::OK, "join: {body}");
        TestFamily {
            id: body["id"].as_i64().expect("family id"),
            parent,
            child,
        }
    }
}

pub fn error_code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<no error code>")
}

impl TestApp {
    /// The child adds a wish; returns its id.
    pub async fn wish(&self, child: &Member, name: &str) -> i64 {
        let (status, body) = self
            .post("/api/wishes", &child.token, json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "wish: {body}");
        body["id"].as_i64().expect("wish id")
    }

    /// A new wish and a board of `size` on it.
    pub async fn open_board(&self, family: &TestFamily, size: i64) -> Value {
        let wish_id = self.wish(&family.child, "gift").await;
        let (status, body) = self
            .post(
                "/api/board",
                &family.parent.token,
                json!({ "wish_id": wish_id, "size": size }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "open board: {body}");
        body
    }

    pub async fn board(&self, token: &str) -> Value {
        let (status, body) = self.get("/api/board", token).await;
        assert_eq!(status, StatusCode::OK, "board: {body}");
        body["board"].clone()
    }
}

/// One SSE block (the lines up to a blank line).
#[derive(Debug, Default, Clone)]
pub struct SseBlock {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: Option<String>,
}

impl SseBlock {
    /// The `board` event's version and payload.
    pub fn board(&self) -> Option<(i64, Value)> {
        if self.event.as_deref() != Some("board") {
            return None;
        }
        let id = self.id.as_ref()?.parse().ok()?;
        let data = serde_json::from_str(self.data.as_ref()?).ok()?;
        Some((id, data))
    }
}

type ByteStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
>;

/// A client reading an SSE stream block by block.
pub struct SseClient {
    body: ByteStream,
    buf: Vec<u8>,
}

impl SseClient {
    /// The next block, or None when the stream ended or nothing came within `wait`.
    pub async fn next_block(&mut self, wait: Duration) -> Option<SseBlock> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(parse_block(&String::from_utf8_lossy(&raw)));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next `board` event, skipping pings.
    pub async fn next_board(&mut self, wait: Duration) -> Option<(i64, Value)> {
        loop {
            let block = self.next_block(wait).await?;
            if let Some(board) = block.board() {
                return Some(board);
            }
        }
    }

    /// Reads board events until one has `version` (or `wait` passes); returns all versions seen.
    pub async fn versions_until(&mut self, version: i64, wait: Duration) -> Vec<i64> {
        let mut seen = Vec::new();
        while let Some((v, _)) = self.next_board(wait).await {
            seen.push(v);
            if v >= version {
                break;
            }
        }
        seen
    }
}

pub fn parse_block(text: &str) -> SseBlock {
    let mut block = SseBlock::default();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            block.comment = Some(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "event" => block.event = Some(value),
                "id" => block.id = Some(value),
                "data" => block.data = Some(value),
                "retry" => block.retry = Some(value),
                _ => {}
            }
        }
    }
    block
}

impl TestApp {
    /// Opens `GET /api/board/events` with the token in the query (as EventSource does).
    pub async fn sse(&self, token: &str) -> SseClient {
        let res = self
            .client
            .get(self.url(&format!("/api/board/events?access_token={token}")))
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("SSE request");
        assert_eq!(res.status(), StatusCode::OK);
        let content_type = res.headers().get("content-type").expect("content type");
        assert_eq!(content_type.to_str().unwrap(), "text/event-stream");
        SseClient {
            body: Box::pin(res),
            buf: Vec::new(),
        }
    }

    /// A metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut res = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        let text =
            String::from_utf8(res.body().await.expect("metrics body").to_vec()).expect("utf-8");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Polls a metric until it has `value` (or 10 s pass); returns the last value seen.
    pub async fn wait_for_metric(&self, name: &str, value: f64) -> f64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.metric(name).await;
            if seen == value || std::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub type WsConn = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// A chat WebSocket client. It answers pings like a browser does, unless told not to.
pub struct WsClient {
    pub conn: WsConn,
    pub answer_pings: bool,
}

/// How a WebSocket ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEnd {
    Closed(Option<u16>),
    Gone,
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        use futures_util::SinkExt;
        self.conn
            .send(awc::ws::Message::Text(value.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.conn
            .send(awc::ws::Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    /// The next JSON frame within `wait`; Err when the connection ended.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Option<Value>, WsEnd> {
        use futures_util::{SinkExt, StreamExt};
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let item = match tokio::time::timeout_at(deadline, self.conn.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(WsEnd::Gone),
                Ok(Some(Err(_))) => return Err(WsEnd::Gone),
                Ok(Some(Ok(frame))) => frame,
            };
            match item {
                awc::ws::Frame::Text(bytes) => {
                    return Ok(Some(serde_json::from_slice(&bytes).expect("JSON frame")));
                }
                awc::ws::Frame::Ping(payload) if self.answer_pings => {
                    let _ = self.conn.send(awc::ws::Message::Pong(payload)).await;
                }
                awc::ws::Frame::Close(reason) => {
                    return Err(WsEnd::Closed(reason.map(|r| u16::from(r.code))));
                }
                _ => {}
            }
        }
    }

    /// The next frame of `kind` (skipping others) within `wait`.
    pub async fn expect(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.next_frame(left).await {
                Ok(Some(frame)) if frame["type"] == kind => return frame,
                Ok(Some(_)) => continue,
                other => panic!("expected a {kind} frame, got {other:?}"),
            }
        }
    }

    /// Every frame that arrives within `wait` (stops early if the connection ends).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = self.next_frame(wait).await {
            frames.push(frame);
        }
        frames
    }

    /// Waits for the connection to end; returns how.
    pub async fn ended(&mut self, wait: Duration) -> Option<WsEnd> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Err(end) = self.next_frame(left).await {
                return Some(end);
            }
        }
    }

    pub async fn send_message(&mut self, client_id: &str, text: &str) {
        self.send_json(json!({"type": "send", "client_id": client_id, "text": text}))
            .await;
    }
}

impl TestApp {
    /// Opens the chat WebSocket with the token in the query (as a browser does) and reads hello.
    pub async fn ws(&self, token: &str) -> (WsClient, Value) {
        ws_at(&self.client, &self.base, token).await
    }
}

/// [`TestApp::ws`] against any server's `base` URL (a node started as a process, say).
pub async fn ws_at(client: &awc::Client, base: &str, token: &str) -> (WsClient, Value) {
    let url = format!("{base}/api/chat/ws?access_token={token}");
    let (res, conn) = client
        .ws(url)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .expect("ws connect");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut client = WsClient {
        conn,
        answer_pings: true,
    };
    let hello = client.expect("hello", Duration::from_secs(5)).await;
    (client, hello)
}

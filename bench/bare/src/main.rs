//! podo-bare: a minimal chat server that implements what `podo-load chat` uses of podo, on the
//! database podo-load seeds, as the reference of the chat CPU benchmark (bench/bare.sh). Not podo:
//! see README.md for everything it leaves out.
//!
//!   podo-bare --bind 127.0.0.1:8080 --database-url sqlite:///path/podo.db [--threads N]
//!
//! The token key is `PODO_JWT_SECRET`, else the one podo stored in the database's settings.
mod chat;
mod store;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use chat::Room;
use store::{Job, Metrics, Reader};

/// The WebSocket read buffer: tungstenite's default 128 KiB is zeroed before every read.
const WS_READ_BUFFER: usize = 4096;
/// podo closes text frames over 64 KiB.
const MAX_FRAME_BYTES: usize = 64 * 1024;

pub struct App {
    keys: (DecodingKey, Validation),
    pub reader: Reader,
    pub writer: Sender<Job>,
    rooms: Mutex<HashMap<i64, Arc<OnceCell<Arc<Room>>>>>,
    pub metrics: Arc<Metrics>,
    pub next_session: AtomicU64,
}

type Body = Full<Bytes>;

struct Args {
    bind: SocketAddr,
    db: String,
    threads: usize,
}

const USAGE: &str = "usage: podo-bare [--bind ADDR] --database-url sqlite://PATH [--threads N]";

fn args() -> Result<Args, String> {
    let mut bind = "127.0.0.1:8080".to_owned();
    let mut db = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bind" => bind = value()?,
            "--database-url" | "--db" => db = Some(value()?),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let db = db.ok_or_else(|| format!("--database-url is required\n{USAGE}"))?;
    let path = db.strip_prefix("sqlite://").unwrap_or(&db);
    let path = path.split('?').next().unwrap_or(path).to_owned();
    Ok(Args {
        bind: bind.parse().map_err(|e| format!("--bind {bind}: {e}"))?,
        db: path,
        threads: threads.max(1),
    })
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("podo-bare: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(args) {
        eprintln!("podo-bare: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let reader = Reader::open(&args.db).map_err(|e| format!("{}: {e}", args.db))?;
    let secret = match std::env::var("PODO_JWT_SECRET") {
        Ok(secret) if !secret.is_empty() => secret,
        _ => reader
            .setting("jwt_secret")
            .map_err(|e| format!("settings: {e}"))?
            .ok_or("no PODO_JWT_SECRET and no jwt_secret in the database")?,
    };
    // As podo's TokenKeys: HS256, exp and sub required, no leeway.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let metrics = Arc::new(Metrics::default());
    let writer =
        store::spawn_writer(&args.db, metrics.clone()).map_err(|e| format!("{}: {e}", args.db))?;
    let app = Arc::new(App {
        keys: (DecodingKey::from_secret(secret.as_bytes()), validation),
        reader,
        writer,
        rooms: Mutex::new(HashMap::new()),
        metrics,
        next_session: AtomicU64::new(1),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(serve(app, args.bind))
}

async fn serve(app: Arc<App>, bind: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("bind {bind}: {e}"))?;
    eprintln!(
        "podo-bare listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    eprintln!("podo-bare: accept: {err}");
                    continue;
                }
            },
            // Accepted messages not committed yet were not acknowledged: stopping loses nothing
            // that a client was told is stored.
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(app.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found"}"#.into(),
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/metrics" => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(app.metrics.render())))
            .expect("a response"),
        "/api/chat/ws" => websocket(app, req).await.unwrap_or_else(|refusal| refusal),
        "/api/chat/messages" => history(app, req).await.unwrap_or_else(|refusal| refusal),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into()),
    })
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a response")
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "error": code, "message": message }).to_string(),
    )
}

fn internal(err: impl std::fmt::Display) -> Response<Body> {
    eprintln!("podo-bare: {err}");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

fn query(req: &Request<Incoming>) -> HashMap<&str, &str> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The caller's user and family: the bearer token (or, for the WebSocket, `access_token` in the
/// query), then the user's row. 401 for a bad token or an unknown user, 403 without a family.
async fn member(
    app: &Arc<App>,
    req: &Request<Incoming>,
    query_token: bool,
) -> Result<(i64, i64), Response<Body>> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let token = bearer.or_else(|| {
        query_token
            .then(|| query(req).get("access_token").map(|t| (*t).to_owned()))
            .flatten()
    });
    let unauthorized = |m| refuse(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let token = token.ok_or_else(|| unauthorized("a bearer token is required"))?;
    let user_id: i64 = jsonwebtoken::decode::<Claims>(&token, &app.keys.0, &app.keys.1)
        .ok()
        .and_then(|t| t.claims.sub.parse().ok())
        .ok_or_else(|| unauthorized("the token is invalid or expired"))?;
    let reader = app.clone();
    let family = tokio::task::spawn_blocking(move || reader.reader.family_of(user_id))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    match family {
        None => Err(unauthorized("the token's user does not exist")),
        Some(None) => Err(refuse(
            StatusCode::FORBIDDEN,
            "not_in_family",
            "pair with a family first",
        )),
        Some(Some(family_id)) => Ok((user_id, family_id)),
    }
}

impl App {
    /// The family's room, loaded from the database the first time.
    async fn room(self: &Arc<Self>, family_id: i64) -> Result<Arc<Room>, Response<Body>> {
        let cell = self
            .rooms
            .lock()
            .expect("rooms lock")
            .entry(family_id)
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let app = self.clone();
            let start = tokio::task::spawn_blocking(move || app.reader.load_room(family_id))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(Arc::new(Room::new(family_id, start)))
        })
        .await
        .cloned()
    }
}

/// `GET /api/chat/ws`: checked before the upgrade (401/403 as podo), then the session.
async fn websocket(
    app: Arc<App>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    let (user_id, family_id) = member(&app, &req, true).await?;
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "not_a_websocket",
            "a WebSocket upgrade is required",
        ));
    };
    let room = app.room(family_id).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(WS_READ_BUFFER)
                    .max_frame_size(Some(MAX_FRAME_BYTES))
                    .max_message_size(Some(MAX_FRAME_BYTES));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                chat::session(app, room, user_id, ws).await;
            }
            Err(err) => eprintln!("podo-bare: upgrade: {err}"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .expect("a response"))
}

/// `GET /api/chat/messages?after_seq=..|before_seq=..&limit=..` (1-200, default 50).
async fn history(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Response<Body>> {
    let (_, family_id) = member(&app, &req, false).await?;
    let q = query(&req);
    let invalid = |m| refuse(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", m);
    let number = |name| -> Result<Option<i64>, Response<Body>> {
        q.get(name)
            .map(|v| v.parse::<i64>().map_err(|_| invalid("not a number")))
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit: 1-200"));
    }
    let (after, before) = (number("after_seq")?, number("before_seq")?);
    let reader = app.clone();
    let body = tokio::task::spawn_blocking(move || {
        let r = &reader.reader;
        let messages = match (after, before) {
            (Some(_), Some(_)) => return Ok(None),
            (Some(after), None) => r.after(family_id, after, i64::MAX, limit)?,
            (None, Some(before)) => r.before(family_id, before, limit)?,
            (None, None) => r.before(family_id, i64::MAX, limit)?,
        };
        let names = r.names(family_id)?;
        let last_seq = r.last_seq(family_id)?;
        Ok::<_, rusqlite::Error>(Some(chat::history_body(&messages, &names, last_seq)))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?
    .ok_or_else(|| invalid("give after_seq or before_seq, not both"))?;
    Ok(json(StatusCode::OK, body))
}

//! Application assembly: database, state, HTTP server bound to the configured address (port 0 in
//! tests), graceful shutdown.
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, Logger};
use actix_web::{App, HttpServer, web};

use crate::api;
use crate::auth::MemberCache;
use crate::auth::password::HashPool;
use crate::auth::revocation::Revocations;
use crate::auth::sessions::SessionSlots;
use crate::auth::throttle::{self, FailureThrottle};
use crate::auth::token::TokenKeys;
use crate::board::{BoardDeps, BoardRegistry, FamilyBoard};
use crate::chat::{ChatDeps, ChatRegistry, ChatRoom, CloseRoom};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::endpoint::EndpointPolicy;
use crate::push::fcm::Fcm;
use crate::push::{Push, PushDispatcher, PushSettings, VapidKeys};
use crate::store::Db;
use crate::store::checkpoint::Checkpointer;
use crate::store::persister::Persister;

/// A client must have sent its request line and headers this long after connecting, else 408
/// and the connection is closed (slowloris).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Shared by every handler.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub tokens: TokenKeys,
    pub members: MemberCache,
    /// Revoked tokens (logout), in memory and in the database.
    pub revocations: Revocations,
    /// argon2id, at most one hash per core at a time.
    pub hasher: HashPool,
    /// Failed logins per case-folded login: 10 in 15 minutes.
    pub login_throttle: FailureThrottle<String>,
    /// Failed logins per client address: 100 in 15 minutes.
    pub login_address_throttle: FailureThrottle<std::net::IpAddr>,
    /// Failed joins per user: 10 in 10 minutes.
    pub join_throttle: FailureThrottle<i64>,
    /// Failed joins per client address: 100 in 10 minutes.
    pub join_address_throttle: FailureThrottle<std::net::IpAddr>,
    /// Open SSE streams per user.
    pub sse_slots: SessionSlots,
    /// Open chat sockets per user.
    pub chat_slots: SessionSlots,
    pub metrics: Arc<Metrics>,
    /// family id -> FamilyBoard actor.
    pub boards: BoardRegistry,
    /// family id -> ChatRoom actor.
    pub chats: ChatRegistry,
    pub chat_deps: ChatDeps,
    pub vapid: VapidKeys,
    pub push: Push,
    /// The calendar's time zone (`PODO_TIMEZONE`).
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
}

/// Stops a running application gracefully: close sessions, then stop the HTTP server.
#[derive(Clone)]
pub struct Stopper {
    handle: ServerHandle,
    state: web::Data<AppState>,
}

impl Stopper {
    pub async fn stop(&self) {
        // Stop accepting first, then end the long-lived streams so running requests can finish.
        let stopped = self.handle.stop(true);
        self.state.boards.broadcast(crate::board::CloseSessions);
        // Rooms commit and ack what is pending, then close their sessions with 1001.
        self.state.chats.broadcast(CloseRoom);
        stopped.await;
    }
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartError> {
        config.validate().map_err(StartError::Config)?;
        let timezone: chrono_tz::Tz = config.timezone.parse().map_err(|_| {
            StartError::Config(format!(
                "PODO_TIMEZONE {:?} is not an IANA time zone",
                config.timezone
            ))
        })?;
        let metrics = Arc::new(Metrics::default());
        let mut db = Db::connect(&config.database_url()).await?;
        db.migrate().await?;
        db.count_statements(&metrics);
        let secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => {
                db.setting_or_insert("jwt_secret", || {
                    rand::random::<[u8; 32]>()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                })
                .await?
            }
        };
        let persister = Persister::new(db.clone(), metrics.clone()).start();
        if let Some(conn) = db.checkpoint.clone() {
            let page_size = crate::store::checkpoint::page_size(&conn).await?;
            Checkpointer::new(conn, page_size, persister.clone(), metrics.clone()).start();
        }
        let vapid = VapidKeys::load_or_create(&db).await?;
        if config.push_allow_private {
            log::warn!(
                "push: PODO_PUSH_ALLOW_PRIVATE is on: endpoints on private networks and plain http are accepted"
            );
        }
        let policy = EndpointPolicy::new(config.push_allow_private);
        let fcm = match &config.fcm_credentials {
            Some(path) => Some(
                Fcm::new(path, &config.fcm_endpoint, &policy)
                    .map_err(|err| StartError::Config(err.to_string()))?,
            ),
            None => None,
        };
        let push_settings = PushSettings {
            subject: config.vapid_subject.clone(),
            policy,
            tls: crate::push::tls::client_config(config.push_ca_file.as_deref())
                .map_err(|err| StartError::Config(err.to_string()))?,
            fcm,
        };
        let push = Push::new(
            PushDispatcher::new(db.clone(), vapid.clone(), push_settings, metrics.clone()).start(),
        );
        let board_actors = crate::registry::Actors::default();
        let board_deps = BoardDeps {
            db: db.clone(),
            persister: persister.clone(),
            metrics: metrics.clone(),
            timing: config.timing.clone(),
            actors: board_actors.clone(),
            push: push.clone(),
        };
        let boards = BoardRegistry::new(board_actors, move |family_id| {
            FamilyBoard::new(family_id, board_deps.clone())
        });
        let chat_actors = crate::registry::Actors::default();
        let chat_deps = ChatDeps {
            db: db.clone(),
            persister: persister.clone(),
            metrics: metrics.clone(),
            timing: config.timing.clone(),
            actors: chat_actors.clone(),
            push: push.clone(),
        };
        let room_deps = chat_deps.clone();
        let chats = ChatRegistry::new(chat_actors, move |family_id| {
            ChatRoom::new(family_id, room_deps.clone())
        });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_sessions = config.max_sessions_per_user;
        let state = web::Data::new(AppState {
            tokens: TokenKeys::new(secret.as_bytes()),
            members: MemberCache::default(),
            revocations: Revocations::load(db.clone()).await?,
            hasher: HashPool::new(cores)?,
            login_throttle: FailureThrottle::new(throttle::LOGIN_FAILURES, throttle::LOGIN_WINDOW),
            login_address_throttle: FailureThrottle::new(
                throttle::LOGIN_FAILURES_PER_ADDRESS,
                throttle::LOGIN_WINDOW,
            ),
            join_throttle: FailureThrottle::new(throttle::JOIN_FAILURES, throttle::JOIN_WINDOW),
            join_address_throttle: FailureThrottle::new(
                throttle::JOIN_FAILURES_PER_ADDRESS,
                throttle::JOIN_WINDOW,
            ),
            sse_slots: SessionSlots::new("board streams", max_sessions),
            chat_slots: SessionSlots::new("chat sockets", max_sessions),
            metrics,
            boards,
            chats,
            chat_deps,
            vapid,
            push,
            timezone,
            db,
            config,
        });

        spawn_sweeper(&state);

        let listener = TcpListener::bind(&state.config.bind)?;
        let address = listener.local_addr()?;
        let workers = state
            .config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let app_state = state.clone();
        let static_dir = state.config.static_dir.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(api::extract::payload_config())
                .app_data(api::extract::path_config())
                .app_data(api::extract::query_config())
                .wrap(ErrorHandlers::new().default_handler(api::extract::json_error_body))
                .wrap(actix_web::middleware::from_fn(
                    api::headers::security_headers,
                ))
                .wrap(access_log())
                .configure(|cfg| api::configure(cfg, &static_dir))
        })
        .workers(workers)
        .client_request_timeout(REQUEST_HEAD_TIMEOUT)
        .keep_alive(KEEP_ALIVE)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        Ok(Application {
            address,
            server,
            state,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            handle: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// Runs until stopped through a [`Stopper`].
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), StartError> {
        let stopper = self.stopper();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            log::info!("shutting down: no new connections, closing sessions");
            stopper.stop().await;
        });
        self.server.await?;
        // The last SQLite connection to close copies what is left of the WAL into the database
        // and removes the WAL file (up to 1 GiB after heavy writes, see store::checkpoint).
        self.state.db.close().await;
        log::info!("podo stopped cleanly");
        Ok(())
    }
}

/// Forgets passed throttle windows and expired revocations every [`throttle::SWEEP_INTERVAL`],
/// for as long as the application lives (memory only; no statements).
fn spawn_sweeper(state: &web::Data<AppState>) {
    let state = std::sync::Arc::downgrade(&state.clone().into_inner());
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(throttle::SWEEP_INTERVAL);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            state.login_throttle.sweep();
            state.login_address_throttle.sweep();
            state.join_throttle.sweep();
            state.join_address_throttle.sweep();
            state.revocations.sweep();
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                log::warn!("no SIGTERM handler ({err}); waiting for Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Access log without secrets: the `access_token` query value is replaced.
fn access_log() -> Logger {
    Logger::new("%{peer}xi \"%{request}xi\" %s %b %Dms")
        .custom_request_replace("peer", |req| {
            req.peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        })
        .custom_request_replace("request", |req| {
            let query = redact_query(req.query_string());
            let sep = if query.is_empty() { "" } else { "?" };
            format!("{} {}{sep}{query}", req.method(), req.path())
        })
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some(("access_token", _)) => "access_token=REDACTED",
            _ => pair,
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_token_is_redacted() {
        assert_eq!(
            super::redact_query("a=1&access_token=secret&b=2"),
            "a=1&access_token=REDACTED&b=2"
        );
    }
}

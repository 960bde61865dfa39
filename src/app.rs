//! Application assembly: database, state, HTTP server bound to the configured address (port 0 in
//! tests), graceful shutdown.
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::dev::Service;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpServer, web};
use futures_util::FutureExt;

use crate::api::{self, access};
use crate::auth::MemberCache;
use crate::auth::password::HashPool;
use crate::auth::revocation::Revocations;
use crate::auth::sessions::SessionSlots;
use crate::auth::throttle::{self, FailureThrottle};
use crate::auth::token::TokenKeys;
use crate::board::{BoardDeps, BoardRegistry, FamilyBoard};
use crate::chat::session::SessionDeps;
use crate::chat::{ChatDeps, ChatRegistry, ChatRoom, CloseRoom};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::endpoint::EndpointPolicy;
use crate::push::fcm::Fcm;
use crate::push::{Push, PushDispatcher, PushSettings, VapidKeys};
use crate::state::AppState;
use crate::store::Db;
use crate::store::checkpoint::Checkpointer;
use crate::store::checkpoint::FinishCheckpoint;
use crate::store::persister::{Persister, SeqSource};
use crate::supervise::{InjectedPanics, Supervised};

/// A client must have sent its request line and headers this long after connecting, else 408
/// and the connection is closed (slowloris).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

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
    panics: Arc<InjectedPanics>,
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
        // The other nodes see this node's members leave now, not when its heartbeat expires.
        if let Some(cluster) = &self.state.cluster
            && let Err(err) = cluster.shutdown().await
        {
            log::warn!("cluster: leaving cleanly failed ({err}); other nodes expire this node");
        }
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
        let cluster = match &config.redis_url {
            Some(url) => {
                // Counters behind the stored messages (written without cluster mode) would hand
                // out stored seqs: bring them up before this node takes seqs from them.
                let synced = crate::store::seqs::sync_counters(&db.write).await?;
                if synced > 0 {
                    log::info!(
                        "cluster: {synced} families' chat counters brought up to their messages"
                    );
                }
                Some(
                    Cluster::connect(url, config.node_id.clone(), metrics.clone())
                        .await
                        .map_err(|err| StartError::Config(err.to_string()))?,
                )
            }
            None => None,
        };
        let seqs = if cluster.is_some() {
            SeqSource::Database
        } else {
            SeqSource::Room
        };
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
        let panics = Arc::new(InjectedPanics::default());
        let persister = {
            let (db, metrics, panics) = (db.clone(), metrics.clone(), panics.clone());
            Supervised::start("the Persister", metrics.clone(), move || {
                Persister::new(db.clone(), seqs, metrics.clone(), panics.clone())
            })
        };
        if let Some(conn) = db.checkpoint.clone() {
            let page_size = crate::store::sqlite::page_size(&conn).await?;
            let finish = persister.clone();
            Checkpointer::new(
                conn,
                page_size,
                move || finish.addr().do_send(FinishCheckpoint),
                metrics.clone(),
            )
            .start();
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
            cluster.clone(),
        );
        let board_actors = crate::registry::Actors::default();
        let board_deps = BoardDeps {
            db: db.clone(),
            persister: persister.clone(),
            metrics: metrics.clone(),
            timing: config.timing.clone(),
            actors: board_actors.clone(),
            push: push.clone(),
            cluster: cluster.clone(),
            panics: panics.clone(),
        };
        let boards = BoardRegistry::new(
            "FamilyBoard",
            board_actors,
            metrics.clone(),
            move |family_id| FamilyBoard::new(family_id, board_deps.clone()),
        );
        let chat_actors = crate::registry::Actors::default();
        let chat_deps = ChatDeps {
            db: db.clone(),
            persister: persister.clone(),
            metrics: metrics.clone(),
            timing: config.timing.clone(),
            actors: chat_actors.clone(),
            push: push.clone(),
            cluster: cluster.clone(),
            panics: panics.clone(),
        };
        // One for all rooms: a copy per room was a few hundred bytes of every family with a socket.
        let room_deps = Arc::new(chat_deps);
        let chats = ChatRegistry::new("ChatRoom", chat_actors, metrics.clone(), move |family_id| {
            ChatRoom::new(family_id, room_deps.clone())
        });
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_sessions = config.max_sessions_per_user;
        let chat_session_deps = Arc::new(SessionDeps {
            db: db.clone(),
            metrics: metrics.clone(),
            timing: config.timing.clone(),
        });
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
            chat_session_deps,
            vapid,
            push,
            cluster,
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
                .wrap(ErrorHandlers::new().default_handler(api::fallback::json_error_body))
                .wrap(actix_web::middleware::from_fn(
                    api::headers::security_headers,
                ))
                .wrap(access::access_log())
                // Outermost: the whole middleware chain's future goes in one box, freed once the
                // answer is out. Unboxed, it is part of every connection's dispatcher, whose
                // size each open connection keeps for its life (issue #21).
                .wrap_fn(|req, srv| srv.call(req).boxed_local())
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
            panics,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The application's database (tests read and arrange data through it).
    pub fn db(&self) -> Db {
        self.state.db.clone()
    }

    /// Panics to inject into the actors, for tests of their supervision (nothing else sets them).
    pub fn injected_panics(&self) -> Arc<InjectedPanics> {
        self.panics.clone()
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

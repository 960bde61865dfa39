//! What every handler shares: the services of the application, built once by
//! [`crate::app::Application::build`].
use std::sync::Arc;

use crate::auth::MemberCache;
use crate::auth::password::HashPool;
use crate::auth::revocation::Revocations;
use crate::auth::sessions::SessionSlots;
use crate::auth::throttle::FailureThrottle;
use crate::auth::token::TokenKeys;
use crate::board::BoardRegistry;
use crate::chat::ChatRegistry;
use crate::chat::session::SessionDeps;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::{Push, VapidKeys};
use crate::store::Db;

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
    /// What every chat session needs, shared: one pointer per open socket instead of a copy.
    pub chat_session_deps: Arc<SessionDeps>,
    pub vapid: VapidKeys,
    pub push: Push,
    /// The other nodes, in cluster mode (`PODO_REDIS_URL`).
    pub cluster: Option<Cluster>,
    /// The calendar's time zone (`PODO_TIMEZONE`).
    pub timezone: chrono_tz::Tz,
}

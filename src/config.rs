//! One config struct for the server: flags and environment as documented in API.md "Operations".
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Args, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PODO_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Database URL (`sqlite://...` or `postgres://...`); default: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the default SQLite database.
    #[arg(long, env = "PODO_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HS256 key for access tokens; default: generated once and stored in the database.
    #[arg(long, env = "PODO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// VAPID `sub` claim for web push.
    #[arg(
        long,
        env = "PODO_VAPID_SUBJECT",
        default_value = "mailto:admin@localhost"
    )]
    pub vapid_subject: String,
    /// Accept and contact push endpoints on private networks, `http://` included (a push service
    /// on the LAN, tests). Off: only `https://` endpoints on public addresses.
    #[arg(
        long,
        env = "PODO_PUSH_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub push_allow_private: bool,
    /// PEM bundle of the CAs trusted for pushes, instead of the operating system's store.
    #[arg(long, env = "SSL_CERT_FILE")]
    pub push_ca_file: Option<PathBuf>,
    /// A Google service-account key file (JSON) for FCM HTTP v1: native push to the mobile app.
    /// Unset: FCM is off (`GET /api/push/providers` says so).
    #[arg(long, env = "PODO_FCM_CREDENTIALS")]
    pub fcm_credentials: Option<PathBuf>,
    /// Origin of the FCM API (messages go to `{this}/v1/projects/{project_id}/messages:send`).
    #[arg(long, env = "PODO_FCM_ENDPOINT", default_value = crate::push::fcm::DEFAULT_ENDPOINT)]
    pub fcm_endpoint: String,
    /// IANA time zone for the calendar.
    #[arg(long, env = "PODO_TIMEZONE", default_value = "Asia/Seoul")]
    pub timezone: String,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "PODO_WORKERS")]
    pub workers: Option<usize>,
    /// Directory of the web client.
    #[arg(long, env = "PODO_STATIC_DIR", default_value = "./static")]
    pub static_dir: PathBuf,
    /// Take the client address for per-address limits from the last `X-Forwarded-For` hop
    /// (only behind a reverse proxy that sets it; otherwise clients could pick their address).
    #[arg(long, env = "PODO_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// Open SSE streams, and separately chat sockets, one user may have at once.
    #[arg(long, env = "PODO_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    pub max_sessions_per_user: usize,
    /// Redis URL (`redis://host:port/db`): turns cluster mode on (several nodes on one
    /// PostgreSQL database). Requires a `postgres://` database URL.
    #[arg(long, env = "PODO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's name in the cluster (presence entries, the origin of published events);
    /// default: generated at start.
    #[arg(long, env = "PODO_NODE_ID")]
    pub node_id: Option<String>,
    #[command(flatten)]
    pub timing: Timing,
}

/// Intervals that the contract fixes; tests shorten them to stay fast.
#[derive(Args, Clone, Debug)]
pub struct Timing {
    /// Seconds between SSE `: ping` comments.
    #[arg(long, env = "PODO_SSE_PING_SECS", default_value_t = 15)]
    pub sse_ping_secs: u64,
    /// Seconds between WebSocket pings.
    #[arg(long, env = "PODO_WS_PING_SECS", default_value_t = 15)]
    pub ws_ping_secs: u64,
    /// Seconds without any frame (pong or other) before a chat session is dropped.
    #[arg(long, env = "PODO_WS_TIMEOUT_SECS", default_value_t = 45)]
    pub ws_timeout_secs: u64,
    /// Seconds a family's actors stay loaded without activity or sessions.
    #[arg(long, env = "PODO_IDLE_SECS", default_value_t = 300)]
    pub family_idle_secs: u64,
}

impl Timing {
    pub fn sse_ping(&self) -> Duration {
        Duration::from_secs(self.sse_ping_secs)
    }
    pub fn ws_ping(&self) -> Duration {
        Duration::from_secs(self.ws_ping_secs)
    }
    pub fn ws_timeout(&self) -> Duration {
        Duration::from_secs(self.ws_timeout_secs)
    }
    pub fn family_idle(&self) -> Duration {
        Duration::from_secs(self.family_idle_secs)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            sse_ping_secs: 15,
            ws_ping_secs: 15,
            ws_timeout_secs: 45,
            family_idle_secs: 300,
        }
    }
}

impl Config {
    /// Defaults as documented, for tests and embedding: bind on an ephemeral loopback port.
    pub fn for_tests(database_url: String) -> Self {
        Config {
            bind: "127.0.0.1:0".into(),
            database_url: Some(database_url),
            data_dir: PathBuf::from("./data"),
            jwt_secret: None,
            vapid_subject: "mailto:admin@localhost".into(),
            push_allow_private: false,
            push_ca_file: None,
            fcm_credentials: None,
            fcm_endpoint: crate::push::fcm::DEFAULT_ENDPOINT.into(),
            timezone: "Asia/Seoul".into(),
            workers: Some(2),
            static_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static")),
            trust_proxy: false,
            max_sessions_per_user: 16,
            redis_url: None,
            node_id: None,
            timing: Timing::default(),
        }
    }

    /// Checks the settings that depend on each other; `Application::build` refuses to start
    /// with this message. Cluster mode (`PODO_REDIS_URL`) needs PostgreSQL: the nodes share one
    /// database, and SQLite is a file of one process.
    pub fn validate(&self) -> Result<(), String> {
        if self.redis_url.is_some() {
            let database = self.database_url();
            if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
                return Err(format!(
                    "PODO_REDIS_URL (cluster mode) needs a postgres:// DATABASE_URL shared by every node; \
                     {} is not one",
                    crate::cluster::redact_url(&database)
                ));
            }
        }
        if let Some(node_id) = &self.node_id {
            crate::cluster::check_node_id(node_id)?;
        }
        Ok(())
    }

    /// The database URL in force: the given one, else a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}/podo.db", self.data_dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn cluster_mode_needs_postgres() {
        let mut config = Config::for_tests("sqlite:///tmp/podo.db".into());
        assert!(config.validate().is_ok());
        config.redis_url = Some("redis://127.0.0.1:6379/0".into());
        let err = config.validate().expect_err("SQLite with Redis");
        assert!(err.contains("postgres://"), "{err}");
        config.database_url = None;
        assert!(config.validate().is_err(), "the default SQLite file too");
        config.database_url = Some("postgres://podo:secret@db/podo".into());
        assert!(config.validate().is_ok());
        config.database_url = Some("postgresql://db/podo".into());
        assert!(config.validate().is_ok());
        config.node_id = Some("a@b".into());
        assert!(config.validate().is_err());
        config.node_id = Some("node-1".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_refusal_does_not_show_a_password() {
        let mut config = Config::for_tests("sqlite://user:secret@host/podo.db".into());
        config.redis_url = Some("redis://127.0.0.1:6379/0".into());
        let err = config.validate().expect_err("SQLite with Redis");
        assert!(!err.contains("secret"), "{err}");
    }
}

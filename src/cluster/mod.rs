//! Cluster mode: several podo nodes on one PostgreSQL database and one Redis (`PODO_REDIS_URL`).
//!
//! PostgreSQL is the source of truth; Redis only carries fan-out and cluster presence, so every
//! failure here degrades to "this node serves its own sessions" and never loses a committed write
//! (docs/ARCHITECTURE.md "Cluster"):
//!
//! - **Publish** ([`Cluster::publish`]): a committed change as a small JSON event on the family's
//!   channel `podo:f:{family}`. It never waits: the event goes into a bounded queue
//!   ([`PUBLISH_QUEUE`]) to one publisher task, and is dropped and counted when the queue is full
//!   or Redis is down. Receivers catch up from the database on [`Remote::Resync`], or when they
//!   see a gap in versions or seqs.
//! - **Subscribe** ([`Cluster::subscribe`]): per family and ref-counted, over one pub/sub
//!   connection per node (`pubsub.rs`). Events of this node's own origin are ignored. After the
//!   connection was lost and made again, and when a new family's channel becomes active, its
//!   subscribers get [`Remote::Resync`]: events may have been missed.
//! - **Presence** ([`Cluster::join`], [`Cluster::leave`], [`Cluster::present`]): a heartbeat key per
//!   node instance with a TTL and a set of `user@instance` entries per family; an entry counts only
//!   while its instance's heartbeat lives (`presence.rs`).
//! - **Push targets** ([`Cluster::push_targets_changed`]): a node that stored, took over or
//!   removed a web subscription or a device says so on the node-wide channel
//!   [`PUSH_TARGETS_CHANNEL`]; the others forget the targets they keep in memory (and do so
//!   too after a lost pub/sub connection, when such a notice may have been missed).
//! - **Seqs** (`store/seqs.rs`): chat seqs per family, gapless and unique across nodes, reserved in the
//!   database inside the transaction that inserts the messages.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::{Message, Recipient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

use crate::fanout::{Bus, Event};
use crate::metrics::Metrics;

mod presence;
mod pubsub;

/// Events waiting for the publisher task; past this, [`Cluster::publish`] drops and counts them
/// (a burst of 8,192 commits faster than one Redis connection takes them: receivers resync).
pub const PUBLISH_QUEUE: usize = 8192;
/// Events the publisher sends in one pipeline (one round trip).
pub const PUBLISH_BATCH: usize = 256;
/// Redis commands per pipeline of the presence task (heartbeat re-registration, sweeps).
pub const PIPELINE_CHUNK: usize = 1024;
/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
pub const SUBSCRIBE_CHUNK: usize = 512;
/// A node instance's heartbeat key lives this long without a refresh: a node killed with
/// `kill -9` loses its members within this long after its last heartbeat, plus at most one
/// [`SWEEP_INTERVAL`] until other nodes tell their sessions: 20 + 5 s, inside the 30 s the
/// contract promises.
pub const NODE_TTL: Duration = Duration::from_secs(20);
/// How often a node refreshes its heartbeat and re-registers its members' presence entries
/// (four chances per [`NODE_TTL`]).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How often a node looks for presence entries of dead instances in the families it hosts.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// [`Cluster::present`] gives up after this long (the caller falls back to local presence).
pub const PRESENT_TIMEOUT: Duration = Duration::from_millis(500);
/// Every other Redis command (publish, presence writes, subscribe) gives up after this long.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting to Redis gives up after this long (and is tried again after a backoff).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait before connecting the pub/sub connection again; it doubles per failed try.
pub const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two tries to connect the pub/sub connection.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// The pub/sub connection is pinged this often, so that a connection the network black-holes is
/// noticed (an answer must come within [`COMMAND_TIMEOUT`]).
pub const PUBSUB_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Payloads received larger than this are ignored (a chat message frame is far smaller).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Longest node id (`PODO_NODE_ID`).
pub const MAX_NODE_ID_LEN: usize = 64;

/// What a node tells the others after a commit. Small JSON on the family's channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// The family's board reached this version; `state` is the family's board state at it (JSON
    /// of `board::Loaded`): a receiver one version behind takes it, any other reloads from the
    /// database.
    Board {
        version: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
    },
    /// A committed chat message: `frame` is the chat `message` frame as sent to clients (JSON
    /// text); the sender and client id let receivers ack a resend without a database read.
    Chat {
        seq: i64,
        sender_id: i64,
        client_id: String,
        frame: String,
    },
    /// A member's presence entry on the origin node was added (`true`) or removed (`false`); a
    /// sweep also sends `false` for the members of a dead node. A notice, not the truth: the
    /// member may still be present on another node, so receivers ask [`Cluster::present`].
    Presence { user_id: i64, present: bool },
}

/// The node-wide channel of [`NodeEvent`]s (every node subscribes it, whatever families it hosts).
pub const PUSH_TARGETS_CHANNEL: &str = "podo:push-targets";

/// What a node tells every other node, whatever families they host. Small JSON on
/// [`PUSH_TARGETS_CHANNEL`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// Some user's push targets changed in the database (a web subscription or a device was
    /// stored, taken over from another user, or removed): what a node keeps in memory is stale.
    PushTargets,
}

/// An event waiting for the publisher task, with where it goes.
enum Outgoing {
    Family(i64, ClusterEvent),
    Node(NodeEvent),
}

/// What a subscriber is sent.
#[derive(Clone, Debug, PartialEq, Message)]
#[rtype(result = "()")]
pub enum Remote {
    /// An event of another node for this family.
    Event(ClusterEvent),
    /// Events for this family may have been missed (the pub/sub connection was lost and is back,
    /// or the family's channel just became active): catch up from the database, and ask
    /// [`Cluster::present`] again.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PODO_REDIS_URL: {0}")]
    InvalidUrl(String),
    #[error("PODO_NODE_ID: {0}")]
    InvalidNodeId(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster handle is stopped")]
    Stopped,
}

/// Durations of the heartbeat and presence; production uses the consts above, tests shorten
/// them.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// [`NODE_TTL`].
    pub node_ttl: Duration,
    /// [`HEARTBEAT_INTERVAL`].
    pub heartbeat: Duration,
    /// [`SWEEP_INTERVAL`].
    pub sweep: Duration,
    /// [`PRESENT_TIMEOUT`].
    pub present_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_ttl: NODE_TTL,
            heartbeat: HEARTBEAT_INTERVAL,
            sweep: SWEEP_INTERVAL,
            present_timeout: PRESENT_TIMEOUT,
        }
    }
}

/// Checks a `PODO_NODE_ID`: 1 to [`MAX_NODE_ID_LEN`] of `[A-Za-z0-9_.-]` (it is part of Redis
/// keys and of `user@instance` entries).
pub fn check_node_id(node_id: &str) -> Result<(), String> {
    let ok = !node_id.is_empty()
        && node_id.len() <= MAX_NODE_ID_LEN
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "PODO_NODE_ID {node_id:?} must be 1 to {MAX_NODE_ID_LEN} characters of A-Z, a-z, 0-9, '_', '.', '-'"
        ))
    }
}

/// A node id for a node started without `PODO_NODE_ID`.
pub fn generated_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

/// A URL for messages: its password (if any) replaced.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

/// The family's pub/sub channel.
pub(crate) fn channel(family_id: i64) -> String {
    format!("podo:f:{family_id}")
}

/// The family of a channel name, if it is one of ours.
pub(crate) fn family_of_channel(channel: &str) -> Option<i64> {
    channel.strip_prefix("podo:f:")?.parse().ok()
}

/// The wire form of a published event: its origin instance and the event.
#[derive(Serialize)]
struct Envelope<'a, E> {
    node: &'a str,
    event: &'a E,
}

#[derive(Deserialize)]
struct Received<'a, E> {
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    event: E,
}

/// One family's subscribers on this node.
struct Family {
    sinks: Vec<(u64, Recipient<Remote>)>,
    /// The family's channel is subscribed on the current pub/sub connection (its subscribers
    /// got their `Resync` for becoming active).
    active: bool,
}

#[derive(Default)]
struct Subscribers {
    next_id: u64,
    families: HashMap<i64, Family>,
}

#[derive(Default)]
struct LocalPresence {
    /// family -> user -> this node's sessions of that user in the family.
    members: HashMap<i64, HashMap<i64, u32>>,
    /// (family, user) whose entry in Redis must be written again (added or removed).
    dirty: HashSet<(i64, i64)>,
}

type PushTargetsHook = Arc<dyn Fn() + Send + Sync>;

/// What the tasks and the handles share.
struct Shared {
    /// The configured node id.
    node_id: String,
    /// This process's instance: `{node_id}~{random}`, the origin of its events and the name in
    /// its presence entries and heartbeat key. A restarted node is a new instance, so entries of
    /// the killed one die with its heartbeat.
    instance: String,
    settings: ClusterSettings,
    metrics: Arc<Metrics>,
    conn: redis::aio::ConnectionManager,
    /// The runtime the tasks run on; `present` runs its queries there.
    home: tokio::runtime::Handle,
    publish_tx: mpsc::Sender<Outgoing>,
    /// Called when another node changed push targets, and after a lost pub/sub connection
    /// ([`Cluster::on_push_targets_changed`]).
    on_push_targets: Mutex<Option<PushTargetsHook>>,
    subscribers: Mutex<Subscribers>,
    /// Wakes the pub/sub task: a family's subscription count went from or to 0.
    subscriptions_changed: Notify,
    presence: Mutex<LocalPresence>,
    /// Wakes the presence task: a member's local presence changed.
    presence_changed: Notify,
    /// Wakes the presence task: Redis is back, re-register every entry.
    redis_back: Notify,
    /// The pub/sub connection is up (`podo_cluster_redis_up`); publishing drops while it is not.
    up: AtomicBool,
    /// An outage has been logged (one line per outage, whichever task noticed first).
    outage_logged: AtomicBool,
    /// [`Cluster::shutdown`] ran: nothing is published or written any more.
    halted: AtomicBool,
}

impl Shared {
    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn presence(&self) -> MutexGuard<'_, LocalPresence> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs the first failure of an outage; later ones until Redis is back only at debug.
    fn note_failure(&self, what: &str, err: &dyn std::fmt::Display) {
        if !self.outage_logged.swap(true, Relaxed) {
            log::warn!(
                "cluster: Redis unavailable ({what}: {err}); serving this node's sessions only, retrying"
            );
        } else {
            log::debug!("cluster: {what}: {err}");
        }
    }

    /// See [`Cluster::publish`].
    fn publish(&self, family_id: i64, event: ClusterEvent) {
        self.enqueue(Outgoing::Family(family_id, event));
    }

    fn enqueue(&self, outgoing: Outgoing) {
        if !self.up.load(Relaxed)
            || self.halted.load(Relaxed)
            || self.publish_tx.try_send(outgoing).is_err()
        {
            self.metrics.cluster.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Runs the hook of [`Cluster::on_push_targets_changed`], if one is set.
    fn push_targets_changed(&self) {
        let hook = self
            .on_push_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
        self.metrics.cluster.redis_up.store(i64::from(up), Relaxed);
    }

    /// Sends `remote` to every subscriber of the family on this node.
    fn deliver(&self, family_id: i64, remote: Remote) {
        let subscribers = self.subscribers();
        if let Some(family) = subscribers.families.get(&family_id) {
            for (_, sink) in &family.sinks {
                sink.do_send(remote.clone());
            }
        }
    }

    /// Handles a message from the pub/sub connection.
    fn received(&self, channel: &str, payload: &[u8]) {
        if payload.len() > MAX_EVENT_BYTES {
            log::debug!("cluster: ignored a {} byte event", payload.len());
            return;
        }
        if channel == PUSH_TARGETS_CHANNEL {
            if let Some(NodeEvent::PushTargets) = self.parse(payload) {
                self.push_targets_changed();
            }
        } else if let Some(family_id) = family_of_channel(channel)
            && let Some(event) = self.parse(payload)
        {
            self.deliver(family_id, Remote::Event(event));
        }
    }

    /// The event of another node's envelope (`None` for this node's own, or what is not ours).
    fn parse<E: serde::de::DeserializeOwned>(&self, payload: &[u8]) -> Option<E> {
        let received: Received<E> = match serde_json::from_slice(payload) {
            Ok(received) => received,
            Err(err) => {
                log::debug!("cluster: ignored an event that is not ours: {err}");
                return None;
            }
        };
        if received.node == self.instance {
            return None;
        }
        self.metrics.cluster.received.fetch_add(1, Relaxed);
        Some(received.event)
    }
}

/// Runs a Redis command (or pipeline) within `limit`, once more when the first try met a dropped
/// connection (the connection manager reconnects for the second).
async fn query<T: redis::FromRedisValue>(
    conn: &redis::aio::ConnectionManager,
    limit: Duration,
    run: impl Fn(redis::aio::ConnectionManager) -> redis::RedisFuture<'static, T>,
) -> Result<T, ClusterError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match tokio::time::timeout(limit, run(conn.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if tries < 2 && (err.is_unrecoverable_error() || err.is_io_error()) => {}
            Ok(Err(err)) => return Err(err.into()),
            Err(_) => return Err(ClusterError::Timeout(limit)),
        }
    }
}

/// A pipeline as a `'static` future on a connection (for [`query`]).
fn pipeline<T: redis::FromRedisValue + Send + 'static>(
    pipe: &redis::Pipeline,
) -> impl Fn(redis::aio::ConnectionManager) -> redis::RedisFuture<'static, T> + '_ {
    move |mut conn| {
        let pipe = pipe.clone();
        Box::pin(async move { pipe.query_async(&mut conn).await })
    }
}

/// Stops the tasks when the last [`Cluster`] handle is dropped (without cleaning up in Redis,
/// as a killed process would: see [`Cluster::shutdown`] for a clean stop).
struct Handle {
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

/// The node's handle on the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    handle: Arc<Handle>,
}

/// A family's subscription; dropping it unsubscribes (the channel when it was the family's last).
pub struct Subscription {
    shared: Arc<Shared>,
    family_id: i64,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.shared.subscribers();
        let Some(family) = subscribers.families.get_mut(&self.family_id) else {
            return;
        };
        family.sinks.retain(|(id, _)| *id != self.id);
        if family.sinks.is_empty() {
            subscribers.families.remove(&self.family_id);
            drop(subscribers);
            self.shared.subscriptions_changed.notify_one();
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("family_id", &self.family_id)
            .finish()
    }
}

impl Cluster {
    /// Connects with the production durations. See [`Cluster::connect_with`].
    pub async fn connect(
        url: &str,
        node_id: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, ClusterError> {
        Cluster::connect_with(url, node_id, metrics, ClusterSettings::default()).await
    }

    /// Starts the cluster tasks on the current runtime. Only a bad URL or node id is an error:
    /// a Redis that cannot be reached yet is logged and tried again in the background (the node
    /// serves its own sessions meanwhile), since Redis is not the source of truth.
    pub async fn connect_with(
        url: &str,
        node_id: Option<String>,
        metrics: Arc<Metrics>,
        settings: ClusterSettings,
    ) -> Result<Cluster, ClusterError> {
        let node_id = node_id.unwrap_or_else(generated_node_id);
        check_node_id(&node_id).map_err(ClusterError::InvalidNodeId)?;
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err(ClusterError::InvalidUrl(format!(
                "{} is not a redis:// URL",
                redact_url(url)
            )));
        }
        let client = redis::Client::open(url)
            .map_err(|err| ClusterError::InvalidUrl(format!("{}: {err}", redact_url(url))))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(RECONNECT_MIN)
            .set_max_delay(RECONNECT_MAX);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let instance = format!("{node_id}~{:08x}", rand::random::<u32>());
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            node_id,
            instance,
            settings,
            metrics,
            conn,
            home: tokio::runtime::Handle::current(),
            publish_tx,
            on_push_targets: Mutex::default(),
            subscribers: Mutex::default(),
            subscriptions_changed: Notify::new(),
            presence: Mutex::default(),
            presence_changed: Notify::new(),
            redis_back: Notify::new(),
            up: AtomicBool::new(false),
            outage_logged: AtomicBool::new(false),
            halted: AtomicBool::new(false),
        });
        shared.set_up(false);
        log::info!(
            "cluster: node {} (instance {}) on Redis {}",
            shared.node_id,
            shared.instance,
            redact_url(url)
        );
        // The first pub/sub connection is awaited briefly so that a node starting beside a
        // healthy Redis publishes from its first commit; a Redis that is down is not waited for.
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(pubsub::run(
            shared.clone(),
            client,
            stopped.clone(),
            connected_tx,
        ));
        tokio::spawn(publisher(shared.clone(), publish_rx, stopped.clone()));
        tokio::spawn(presence::run(shared.clone(), stopped));
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, connected_rx).await;
        Ok(Cluster {
            handle: Arc::new(Handle {
                shared,
                _stop: stop,
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The configured node id.
    pub fn node_id(&self) -> &str {
        &self.shared().node_id
    }

    /// This process's instance id (`{node_id}~{random}`): the origin of its events.
    pub fn instance(&self) -> &str {
        &self.shared().instance
    }

    /// Whether the pub/sub connection is up right now.
    pub fn is_up(&self) -> bool {
        self.shared().up.load(Relaxed)
    }

    /// Hands a committed event to the other nodes. Never waits: when the queue is full or Redis
    /// is down the event is dropped and counted (`podo_cluster_dropped_total`); the other nodes
    /// catch up from the database.
    pub fn publish(&self, family_id: i64, event: ClusterEvent) {
        self.shared().publish(family_id, event);
    }

    /// Tells the other nodes that push targets changed in the database (after storing, taking
    /// over or removing a web subscription or a device), so that none keeps using what it read
    /// before. Never waits; a notice lost to an outage is made up for by the hook running on
    /// every node when its pub/sub connection is back.
    pub fn push_targets_changed(&self) {
        self.shared()
            .enqueue(Outgoing::Node(NodeEvent::PushTargets));
    }

    /// Sets what runs when another node changed push targets, and after this node's pub/sub
    /// connection was lost and made again (a notice may have been missed meanwhile). Replaces
    /// the hook set before.
    pub fn on_push_targets_changed(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self
            .shared()
            .on_push_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Subscribes `sink` to the family's events from other nodes (and [`Remote::Resync`]). The
    /// family's channel is subscribed in the background; once it is active the sink gets a
    /// `Resync` (what was published before is not seen).
    pub fn subscribe(&self, family_id: i64, sink: Recipient<Remote>) -> Subscription {
        let shared = self.shared();
        let mut subscribers = shared.subscribers();
        subscribers.next_id += 1;
        let id = subscribers.next_id;
        let mut new_family = false;
        let family = subscribers.families.entry(family_id).or_insert_with(|| {
            new_family = true;
            Family {
                sinks: Vec::new(),
                active: false,
            }
        });
        family.sinks.push((id, sink.clone()));
        let active = family.active;
        drop(subscribers);
        if new_family {
            shared.subscriptions_changed.notify_one();
        } else if active {
            // The channel is live already: nothing published from now on is missed, but what
            // came before the sink was added is, as for a new channel.
            sink.do_send(Remote::Resync);
        }
        Subscription {
            shared: shared.clone(),
            family_id,
            id,
        }
    }

    /// Families with subscribers on this node.
    pub fn subscribed_families(&self) -> Vec<i64> {
        self.shared()
            .subscribers()
            .families
            .keys()
            .copied()
            .collect()
    }

    /// A session of `user_id` in the family is present on this node. Counted per node: the
    /// user's entry is added with the first session and stays until the last one leaves.
    /// Written to Redis in the background (never waits), then announced with
    /// [`ClusterEvent::Presence`].
    pub fn join(&self, family_id: i64, user_id: i64) {
        let shared = self.shared();
        let mut presence = shared.presence();
        let count = presence
            .members
            .entry(family_id)
            .or_default()
            .entry(user_id)
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            presence.dirty.insert((family_id, user_id));
            drop(presence);
            shared.presence_changed.notify_one();
        }
    }

    /// A session of `user_id` left the family on this node; the entry goes with the last one.
    /// A leave without a join does nothing.
    pub fn leave(&self, family_id: i64, user_id: i64) {
        let shared = self.shared();
        let mut presence = shared.presence();
        let Some(users) = presence.members.get_mut(&family_id) else {
            return;
        };
        let Some(count) = users.get_mut(&user_id) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        users.remove(&user_id);
        if users.is_empty() {
            presence.members.remove(&family_id);
        }
        presence.dirty.insert((family_id, user_id));
        drop(presence);
        shared.presence_changed.notify_one();
    }

    /// This node's present members of the family.
    pub fn local_present(&self, family_id: i64) -> HashSet<i64> {
        self.shared()
            .presence()
            .members
            .get(&family_id)
            .map(|users| users.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The family's present members on every node: this node's from memory, the others' from
    /// Redis (entries whose instance's heartbeat lives). Bounded by the settings'
    /// `present_timeout`; on an error the caller falls back to [`Cluster::local_present`].
    pub async fn present(&self, family_id: i64) -> Result<HashSet<i64>, ClusterError> {
        let mut users = self.others_present(family_id).await?;
        users.extend(self.local_present(family_id));
        Ok(users)
    }

    /// The family's members present on the other nodes only (live heartbeat), from Redis; bounded
    /// like [`Cluster::present`].
    pub async fn others_present(&self, family_id: i64) -> Result<HashSet<i64>, ClusterError> {
        let shared = self.shared().clone();
        let limit = shared.settings.present_timeout;
        let remote = shared
            .home
            .spawn(presence::remote_present(shared.clone(), family_id));
        match tokio::time::timeout(limit, remote).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClusterError::Stopped),
            Err(_) => Err(ClusterError::Timeout(limit)),
        }
    }

    /// A clean stop: removes this instance's heartbeat and presence entries and announces that
    /// its members left (other nodes would otherwise see them until [`NODE_TTL`] runs out).
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        presence::unregister(self.shared()).await
    }
}

/// The fan-out seam's bus in cluster mode: what a family's actor committed, as a small event on
/// the family's channel.
impl Bus for Cluster {
    fn publish(&self, family_id: i64, event: Event) {
        let event = match event {
            Event::Board { version, state } => ClusterEvent::Board { version, state },
            Event::Message {
                seq,
                sender_id,
                client_id,
                frame,
            } => ClusterEvent::Chat {
                seq,
                sender_id,
                client_id,
                frame: frame.to_string(),
            },
        };
        Cluster::publish(self, family_id, event);
    }
}

/// The publisher task: takes events from the queue and publishes them in pipelines of up to
/// [`PUBLISH_BATCH`].
async fn publisher(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut stopped: watch::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            n = queue.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
            _ = stopped.changed() => return,
        }
        let mut pipe = redis::pipe();
        for outgoing in batch.drain(..) {
            let node = &shared.instance;
            let (channel, payload) = match &outgoing {
                Outgoing::Family(family_id, event) => (
                    channel(*family_id),
                    serde_json::to_vec(&Envelope { node, event }),
                ),
                Outgoing::Node(event) => (
                    PUSH_TARGETS_CHANNEL.to_owned(),
                    serde_json::to_vec(&Envelope { node, event }),
                ),
            };
            match payload {
                Ok(payload) => {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                }
                Err(err) => log::error!("cluster: an event did not serialize: {err}"),
            }
        }
        let n = pipe.cmd_iter().count() as u64;
        if n == 0 {
            continue;
        }
        match query::<()>(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await {
            Ok(()) => {
                shared.metrics.cluster.published.fetch_add(n, Relaxed);
            }
            Err(err) => {
                shared.metrics.cluster.dropped.fetch_add(n, Relaxed);
                shared.note_failure("publish", &err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_small_tagged_json() {
        let event = ClusterEvent::Board {
            version: 7,
            state: None,
        };
        let text = serde_json::to_string(&Envelope {
            node: "a~1",
            event: &event,
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"node":"a~1","event":{"type":"board","version":7}}"#
        );
        let back: Received<ClusterEvent> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.node, "a~1");
        assert_eq!(back.event, event);
        let chat = ClusterEvent::Chat {
            seq: 3,
            sender_id: 5,
            client_id: "c-1".into(),
            frame: r#"{"type":"message","seq":3,"text":"hi \"there\""}"#.into(),
        };
        let text = serde_json::to_string(&chat).unwrap();
        assert_eq!(serde_json::from_str::<ClusterEvent>(&text).unwrap(), chat);
        let presence = ClusterEvent::Presence {
            user_id: 9,
            present: false,
        };
        assert_eq!(
            serde_json::to_string(&presence).unwrap(),
            r#"{"type":"presence","user_id":9,"present":false}"#
        );
    }

    #[test]
    fn node_events_are_small_tagged_json() {
        let text = serde_json::to_string(&Envelope {
            node: "a~1",
            event: &NodeEvent::PushTargets,
        })
        .unwrap();
        assert_eq!(text, r#"{"node":"a~1","event":{"type":"push_targets"}}"#);
        let back: Received<NodeEvent> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event, NodeEvent::PushTargets);
    }

    #[test]
    fn channels_name_their_family() {
        assert_eq!(channel(42), "podo:f:42");
        assert_eq!(family_of_channel("podo:f:42"), Some(42));
        assert_eq!(family_of_channel("podo:f:x"), None);
        assert_eq!(family_of_channel("other:42"), None);
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(check_node_id("node-1.eu_west").is_ok());
        assert!(check_node_id(&generated_node_id()).is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a@b").is_err());
        assert!(check_node_id("a~b").is_err());
        assert!(check_node_id("a b").is_err());
        assert!(check_node_id(&"x".repeat(MAX_NODE_ID_LEN + 1)).is_err());
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://podo:secret@db:5432/podo"),
            "postgres://podo:REDACTED@db:5432/podo"
        );
        assert_eq!(
            redact_url("sqlite://./data/podo.db"),
            "sqlite://./data/podo.db"
        );
        assert_eq!(redact_url("no url"), "(not a URL)");
    }
}

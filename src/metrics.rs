//! Counters and gauges for `/metrics` (Prometheus text format), kept as plain atomics.
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the batch-size histogram buckets.
const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];
/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram of durations over [`LATENCY_BUCKETS`].
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.micros.load(Relaxed) as f64 / 1e6
        );
    }
}

/// What happened to the deliveries of one push provider.
#[derive(Default)]
pub struct ProviderMetrics {
    /// Accepted by the provider (a 2xx).
    pub sent: AtomicU64,
    /// Given up on: every try failed, or the provider refused the message for good.
    pub failed: AtomicU64,
    /// Not sent: the address resolved only to addresses the endpoint policy refuses.
    pub blocked: AtomicU64,
    /// Subscriptions or devices deleted because the provider said they are gone.
    pub removed: AtomicU64,
    /// From a notification's making to the provider's 2xx, per target.
    pub delivery: LatencyHistogram,
}

/// Cluster mode (`src/cluster`): what went through Redis.
#[derive(Default)]
pub struct ClusterMetrics {
    /// Events published to Redis (board, chat, presence).
    pub published: AtomicU64,
    /// Events not published: the queue was full, Redis was down, or the publish failed.
    pub dropped: AtomicU64,
    /// Events of other nodes received for families with subscribers here.
    pub received: AtomicU64,
    /// Times the pub/sub connection came back after a loss and every subscriber was told to
    /// resync.
    pub resyncs: AtomicU64,
    /// 1 while the pub/sub connection to Redis is up (0 also when cluster mode is off).
    pub redis_up: AtomicI64,
}

#[derive(Default)]
pub struct Metrics {
    pub families_loaded: AtomicI64,
    pub sse_sessions: AtomicI64,
    pub ws_sessions: AtomicI64,
    pub board_changes: AtomicU64,
    pub db_statements: AtomicU64,
    pub messages_committed: AtomicU64,
    pub push_notifications: AtomicU64,
    /// Web push (the `podo_pushes_*` names); also counts notifications dropped while a member
    /// was behind (`failed`).
    pub web_push: ProviderMetrics,
    /// FCM HTTP v1 (`podo_fcm_*`).
    pub fcm: ProviderMetrics,
    /// OAuth 2.0 access tokens fetched for FCM.
    pub fcm_token_fetches: AtomicU64,
    /// FamilyBoards, ChatRooms and Persisters that panicked and were replaced.
    pub actor_restarts: AtomicU64,
    /// Cluster mode (`podo_cluster_*`).
    pub cluster: ClusterMetrics,
    batches: AtomicU64,
    batches_failed: AtomicU64,
    batch_items: AtomicU64,
    batch_micros: AtomicU64,
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
    wal_restarts: AtomicU64,
    wal_restart_micros: AtomicU64,
}

impl Metrics {
    /// Persister batches so far, committed or not.
    pub fn batches(&self) -> u64 {
        self.batches.load(Relaxed)
    }

    pub fn record_batch(&self, size: usize, took: Duration, ok: bool) {
        self.batches.fetch_add(1, Relaxed);
        if !ok {
            self.batches_failed.fetch_add(1, Relaxed);
        }
        self.batch_items.fetch_add(size as u64, Relaxed);
        self.batch_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        if let Some(i) = BATCH_BUCKETS.iter().position(|&b| size as u64 <= b) {
            self.batch_buckets[i].fetch_add(1, Relaxed);
        }
    }

    /// A SQLite WAL restart finished by the Persister, which paused commits for `took`.
    pub fn record_wal_restart(&self, took: Duration) {
        self.wal_restarts.fetch_add(1, Relaxed);
        self.wal_restart_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let gauges = [
            (
                "podo_sse_sessions",
                "Open SSE board streams.",
                self.sse_sessions.load(Relaxed),
            ),
            (
                "podo_ws_sessions",
                "Open chat WebSocket sessions.",
                self.ws_sessions.load(Relaxed),
            ),
            (
                "podo_families_loaded",
                "FamilyBoard actors in memory.",
                self.families_loaded.load(Relaxed),
            ),
            (
                "podo_cluster_redis_up",
                "1 while this node's pub/sub connection to Redis is up (cluster mode).",
                self.cluster.redis_up.load(Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "podo_actor_restarts_total",
                "FamilyBoard, ChatRoom and Persister actors that panicked and were replaced.",
                self.actor_restarts.load(Relaxed),
            ),
            (
                "podo_board_changes_total",
                "Committed board changes.",
                self.board_changes.load(Relaxed),
            ),
            (
                "podo_db_statements_total",
                "SQL statements sent to the database.",
                self.db_statements.load(Relaxed),
            ),
            (
                "podo_messages_committed_total",
                "Committed chat messages.",
                self.messages_committed.load(Relaxed),
            ),
            (
                "podo_push_notifications_total",
                "Notifications whose recipients' subscriptions and devices were looked up (pushes follow).",
                self.push_notifications.load(Relaxed),
            ),
            (
                "podo_pushes_sent_total",
                "Web pushes accepted by a push service.",
                self.web_push.sent.load(Relaxed),
            ),
            (
                "podo_pushes_failed_total",
                "Web pushes given up on (and notifications dropped while a member was behind).",
                self.web_push.failed.load(Relaxed),
            ),
            (
                "podo_pushes_blocked_total",
                "Web pushes not sent: the endpoint resolved only to addresses the policy refuses.",
                self.web_push.blocked.load(Relaxed),
            ),
            (
                "podo_push_subscriptions_deleted_total",
                "Web push subscriptions deleted because the push service answered 404 or 410.",
                self.web_push.removed.load(Relaxed),
            ),
            (
                "podo_fcm_sent_total",
                "FCM messages accepted by FCM.",
                self.fcm.sent.load(Relaxed),
            ),
            (
                "podo_fcm_failed_total",
                "FCM messages given up on (tries exhausted, or refused for good).",
                self.fcm.failed.load(Relaxed),
            ),
            (
                "podo_fcm_blocked_total",
                "FCM messages not sent: the FCM or token address resolved only to refused addresses.",
                self.fcm.blocked.load(Relaxed),
            ),
            (
                "podo_fcm_devices_deleted_total",
                "Devices deleted because FCM answered UNREGISTERED, SENDER_ID_MISMATCH or an invalid token.",
                self.fcm.removed.load(Relaxed),
            ),
            (
                "podo_fcm_token_fetches_total",
                "OAuth 2.0 access tokens fetched for FCM (JWT bearer grant).",
                self.fcm_token_fetches.load(Relaxed),
            ),
            (
                "podo_cluster_published_total",
                "Events published to the other nodes through Redis.",
                self.cluster.published.load(Relaxed),
            ),
            (
                "podo_cluster_dropped_total",
                "Events not published (queue full, Redis down or failing); receivers resync from the database.",
                self.cluster.dropped.load(Relaxed),
            ),
            (
                "podo_cluster_received_total",
                "Events of other nodes received through Redis.",
                self.cluster.received.load(Relaxed),
            ),
            (
                "podo_cluster_resyncs_total",
                "Times the Redis pub/sub connection came back and subscribers were told to resync.",
                self.cluster.resyncs.load(Relaxed),
            ),
            (
                "podo_persister_batches_failed_total",
                "Persister transactions that did not commit.",
                self.batches_failed.load(Relaxed),
            ),
            (
                "podo_wal_restarts_total",
                "SQLite WAL restarts (each pauses commits for the Persister's final checkpoint).",
                self.wal_restarts.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "podo_persister_batch_size";
        let _ = writeln!(
            out,
            "# HELP {name} Changes per Persister transaction.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in BATCH_BUCKETS.iter().zip(&self.batch_buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.batches.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.batch_items.load(Relaxed)
        );
        self.web_push.delivery.render(
            &mut out,
            "podo_push_delivery_seconds",
            "From a notification's making to its acceptance by the push service.",
        );
        self.fcm.delivery.render(
            &mut out,
            "podo_fcm_delivery_seconds",
            "From a notification's making to its acceptance by FCM.",
        );
        let name = "podo_persister_commit_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Time spent in Persister transactions.\n# TYPE {name} counter\n{name} {}",
            self.batch_micros.load(Relaxed) as f64 / 1e6
        );
        let name = "podo_wal_restart_pause_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Commits paused for WAL restarts.\n# TYPE {name} counter\n{name} {}",
            self.wal_restart_micros.load(Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_land_in_cumulative_buckets() {
        let m = Metrics::default();
        m.record_batch(1, Duration::from_millis(1), true);
        m.record_batch(100, Duration::from_millis(2), false);
        let text = m.render();
        assert!(text.contains("podo_persister_batch_size_bucket{le=\"1\"} 1"));
        assert!(text.contains("podo_persister_batch_size_bucket{le=\"64\"} 1"));
        assert!(text.contains("podo_persister_batch_size_bucket{le=\"128\"} 2"));
        assert!(text.contains("podo_persister_batch_size_sum 101"));
        assert!(text.contains("podo_persister_batches_failed_total 1"));
        m.record_wal_restart(Duration::from_millis(40));
        let text = m.render();
        assert!(text.contains("podo_wal_restarts_total 1"));
        assert!(text.contains("podo_wal_restart_pause_seconds_total 0.04"));
    }

    #[test]
    fn latencies_land_in_cumulative_buckets() {
        let m = Metrics::default();
        m.web_push.delivery.observe(Duration::from_millis(3));
        m.web_push.delivery.observe(Duration::from_millis(700));
        m.web_push.delivery.observe(Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains("podo_push_delivery_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("podo_push_delivery_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("podo_push_delivery_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("podo_push_delivery_seconds_bucket{le=\"30\"} 2"));
        assert!(text.contains("podo_push_delivery_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("podo_push_delivery_seconds_count 3"));
        assert!(text.contains("podo_push_delivery_seconds_sum 60.703"));
    }
}

//! Cross-node fan-out through Redis (`src/cluster`): publish on one node → delivered to a sink
//! subscribed on another, against a `redis-server` of its own on a free loopback port.
//!
//! ```sh
//! cargo bench --bench cluster_fanout
//! ```
//!
//! - paced: 10,000 board events/s over 1,000 families for 5 s; publish → delivery p50/p99/max.
//! - burst: 100,000 events published at once (the publish queue holds 8,192): how many arrive,
//!   how many are dropped and counted, and how long the caller spent publishing.
#[path = "../tests/support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix::prelude::*;
use podo::cluster::{Cluster, ClusterEvent, Remote};
use podo::metrics::Metrics;
use tokio::sync::mpsc;

const FAMILIES: i64 = 1000;
const RATE: u64 = 10_000;
const PACED: Duration = Duration::from_secs(5);
const BURST: u64 = 100_000;

/// Hands each event's latency (its `version` is the publish time in µs since `origin`).
struct Sink {
    origin: Instant,
    tx: mpsc::UnboundedSender<Option<Duration>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Remote> for Sink {
    type Result = ();
    fn handle(&mut self, remote: Remote, _: &mut Context<Self>) {
        match remote {
            Remote::Event(ClusterEvent::Board { version, .. }) => {
                let sent = Duration::from_micros(version as u64);
                let _ = self
                    .tx
                    .send(Some(self.origin.elapsed().saturating_sub(sent)));
            }
            Remote::Resync => {
                let _ = self.tx.send(None);
            }
            Remote::Event(_) => {}
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    actix_web::rt::System::new().block_on(async {
        let redis = redis_server::RedisServer::start().await;
        let sender_metrics = Arc::new(Metrics::default());
        let a = Cluster::connect(&redis.url(0), Some("a".into()), sender_metrics.clone())
            .await
            .expect("a connects");
        let b = Cluster::connect(&redis.url(0), Some("b".into()), Arc::new(Metrics::default()))
            .await
            .expect("b connects");
        let origin = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = Sink { origin, tx }.start().recipient();
        let _subscriptions: Vec<_> = (1..=FAMILIES).map(|f| b.subscribe(f, sink.clone())).collect();
        let mut active = 0;
        while active < FAMILIES {
            if let Some(None) = rx.recv().await {
                active += 1;
            }
        }

        // Paced.
        let total = RATE * PACED.as_secs();
        let started = Instant::now();
        for i in 0..total {
            let due = started + Duration::from_nanos(i * 1_000_000_000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let now = origin.elapsed().as_micros() as i64;
            a.publish(1 + (i as i64 % FAMILIES), ClusterEvent::Board {
                    version: now,
                    state: None,
                });
        }
        let mut latencies = Vec::with_capacity(total as usize);
        while (latencies.len() as u64) < total {
            match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                Ok(Some(Some(latency))) => latencies.push(latency),
                Ok(Some(None)) => {}
                _ => break,
            }
        }
        latencies.sort_unstable();
        let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "paced {RATE}/s for {}s over {FAMILIES} families: received {} of {total}, dropped {}, publish -> delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            PACED.as_secs(),
            latencies.len(),
            sender_metrics.cluster.dropped.load(Relaxed),
            ms(at(0.50)),
            ms(at(0.99)),
            ms(at(1.0)),
        );

        // Burst.
        let dropped_before = sender_metrics.cluster.dropped.load(Relaxed);
        let started = Instant::now();
        for i in 0..BURST {
            let now = origin.elapsed().as_micros() as i64;
            a.publish(1 + (i as i64 % FAMILIES), ClusterEvent::Board {
                    version: now,
                    state: None,
                });
        }
        let publishing = started.elapsed();
        let mut received = 0u64;
        while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            if message.is_some() {
                received += 1;
            }
        }
        let dropped = sender_metrics.cluster.dropped.load(Relaxed) - dropped_before;
        println!(
            "burst of {BURST}: the caller spent {:.1} ms publishing ({:.2} µs each), received {received}, dropped and counted {dropped}, received + dropped = {}",
            ms(publishing),
            publishing.as_secs_f64() * 1e6 / BURST as f64,
            received + dropped,
        );
    });
}

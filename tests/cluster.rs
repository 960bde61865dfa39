//! The cluster's Redis layer (`src/cluster`) through two `Cluster` handles with two node ids in
//! one process, against a real Redis of each test's own (`support/redis.rs`): fan-out, own
//! events ignored, unsubscribing, presence across nodes and its expiry, a Redis outage (resync,
//! dropped publishes, re-registered presence). And chat seqs reserved by two concurrent writers
//! on one PostgreSQL database (`PODO_TEST_PG`; skipped with a note without it).
#[path = "support/redis.rs"]
mod redis_server;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix::prelude::*;
use podo::cluster::{Cluster, ClusterEvent, ClusterSettings, Remote};
use podo::metrics::Metrics;
use redis_server::RedisServer;
use serde_json::json;
use tokio::sync::mpsc;

/// Short durations so that expiry shows within a test: a node is dead 1 s after its last
/// heartbeat.
fn fast() -> ClusterSettings {
    ClusterSettings {
        node_ttl: Duration::from_millis(1000),
        heartbeat: Duration::from_millis(250),
        sweep: Duration::from_millis(200),
        present_timeout: Duration::from_millis(500),
    }
}

/// A board event without the state (the nodes' receivers reload it).
fn board(version: i64) -> ClusterEvent {
    ClusterEvent::Board {
        version,
        state: None,
    }
}

struct Node {
    cluster: Cluster,
    metrics: Arc<Metrics>,
}

async fn node(redis: &RedisServer, name: &str) -> Node {
    let _ = env_logger::builder().is_test(true).try_init();
    let metrics = Arc::new(Metrics::default());
    let cluster = Cluster::connect_with(&redis.url(0), Some(name.into()), metrics.clone(), fast())
        .await
        .expect("cluster connects");
    assert!(cluster.is_up(), "{name} is connected");
    Node { cluster, metrics }
}

/// An actor that hands what it is sent to the test.
struct Sink(mpsc::UnboundedSender<Remote>);

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Remote> for Sink {
    type Result = ();
    fn handle(&mut self, remote: Remote, _: &mut Context<Self>) {
        let _ = self.0.send(remote);
    }
}

struct Inbox {
    recipient: Recipient<Remote>,
    rx: mpsc::UnboundedReceiver<Remote>,
}

fn inbox() -> Inbox {
    let (tx, rx) = mpsc::unbounded_channel();
    Inbox {
        recipient: Sink(tx).start().recipient(),
        rx,
    }
}

impl Inbox {
    /// The next message within `within`.
    async fn next(&mut self, within: Duration) -> Option<Remote> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a `Resync`, skipping events.
    async fn resync(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Remote::Resync) => return,
                Some(_) => {}
                None => panic!("no Resync within 10 s"),
            }
        }
    }

    /// Waits for this event, skipping others and resyncs.
    async fn expect(&mut self, event: ClusterEvent) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Remote::Event(got)) if got == event => return,
                Some(_) => {}
                None => panic!("{event:?} not received within 5 s"),
            }
        }
    }

    /// No member is announced absent within `within` (resyncs, and presence re-announced by a
    /// heartbeat or a second join, may come: they are idempotent).
    async fn no_absence(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Remote::Event(ClusterEvent::Presence {
                    present: false,
                    user_id,
                })) => {
                    panic!("member {user_id} announced absent")
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Nothing but resyncs arrives within `within`.
    async fn no_event(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Remote::Resync) => {}
                Some(event) => panic!("unexpected {event:?}"),
                None => return,
            }
        }
    }
}

/// Polls `present` until it equals `want` (10 s at most).
async fn present_becomes(cluster: &Cluster, family_id: i64, want: &[i64]) {
    let want: HashSet<i64> = want.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = cluster.present(family_id).await;
        if matches!(&got, Ok(users) if *users == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "present({family_id}) is {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url(0))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test's Redis")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn an_event_reaches_the_other_node_and_not_its_own() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut on_a = inbox();
    let mut on_b = inbox();
    let mut other_family = inbox();
    let _sa = a.cluster.subscribe(1, on_a.recipient.clone());
    let _sb = b.cluster.subscribe(1, on_b.recipient.clone());
    let _sb2 = b.cluster.subscribe(2, other_family.recipient.clone());
    // A channel that became active says so: what was published before was not seen.
    on_a.resync().await;
    on_b.resync().await;
    other_family.resync().await;

    a.cluster.publish(1, board(5));
    let frame = json!({"type": "message", "seq": 7, "text": "포도 🍇", "sender_id": 3}).to_string();
    let chat = ClusterEvent::Chat {
        seq: 7,
        sender_id: 3,
        client_id: "c-7".into(),
        frame,
    };
    a.cluster.publish(1, chat.clone());
    // In the order published.
    assert_eq!(
        on_b.next(Duration::from_secs(5)).await,
        Some(Remote::Event(board(5)))
    );
    assert_eq!(
        on_b.next(Duration::from_secs(5)).await,
        Some(Remote::Event(chat))
    );
    // B's own events go to A, and neither node hears itself.
    b.cluster.publish(1, board(6));
    on_a.expect(board(6)).await;
    on_a.no_event(Duration::from_millis(300)).await;
    on_b.no_event(Duration::from_millis(300)).await;
    other_family.no_event(Duration::ZERO).await;
    assert_eq!(a.metrics.cluster.published.load(Relaxed), 2);
    assert_eq!(b.metrics.cluster.received.load(Relaxed), 2);
    assert_eq!(a.metrics.cluster.received.load(Relaxed), 1);
    assert_eq!(a.metrics.cluster.dropped.load(Relaxed), 0);
    let text = b.metrics.render();
    assert!(text.contains("podo_cluster_received_total 2"), "{text}");
    assert!(text.contains("podo_cluster_redis_up 1"), "{text}");
}

#[actix_web::test]
async fn dropping_subscriptions_stops_delivery() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut first = inbox();
    let mut second = inbox();
    let s1 = b.cluster.subscribe(1, first.recipient.clone());
    first.resync().await;
    let s2 = b.cluster.subscribe(1, second.recipient.clone());
    // Added to a live channel: resync too (it may have missed what came before).
    second.resync().await;
    a.cluster.publish(1, board(1));
    first.expect(board(1)).await;
    second.expect(board(1)).await;

    // One of two: the channel stays, the other sink still gets events.
    drop(s1);
    a.cluster.publish(1, board(2));
    second.expect(board(2)).await;
    first.no_event(Duration::from_millis(200)).await;

    // The last: the node leaves the channel.
    drop(s2);
    let mut conn = raw(&redis).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("podo:f:1")
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        if subscribers == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "B still subscribed to podo:f:1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.cluster.publish(1, board(3));
    second.no_event(Duration::from_millis(300)).await;
    assert_eq!(b.metrics.cluster.received.load(Relaxed), 2);
    assert!(b.cluster.subscribed_families().is_empty());
}

#[actix_web::test]
async fn presence_covers_every_node() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut on_b = inbox();
    let _sb = b.cluster.subscribe(1, on_b.recipient.clone());
    on_b.resync().await;

    // Two sessions of one member on A are one entry.
    a.cluster.join(1, 10);
    a.cluster.join(1, 10);
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: true,
    })
    .await;
    // Announced after the write: asked now, B sees it.
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([10])
    );
    b.cluster.join(1, 20);
    assert_eq!(b.cluster.local_present(1), HashSet::from([20]));
    present_becomes(&a.cluster, 1, &[10, 20]).await;
    present_becomes(&b.cluster, 1, &[10, 20]).await;
    // Another family is apart.
    assert!(b.cluster.present(2).await.expect("present").is_empty());

    // The first of the two sessions leaves: still present.
    a.cluster.leave(1, 10);
    on_b.no_absence(Duration::from_millis(300)).await;
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([10, 20])
    );
    // The second: gone, and said so.
    a.cluster.leave(1, 10);
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: false,
    })
    .await;
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([20])
    );
    // A leave without a join does nothing.
    a.cluster.leave(1, 10);
    a.cluster.leave(1, 99);
    present_becomes(&a.cluster, 1, &[20]).await;

    // A heartbeat keeps A's members present however long it lives.
    a.cluster.join(1, 10);
    present_becomes(&b.cluster, 1, &[10, 20]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([10, 20])
    );

    // A clean stop takes A's members out at once.
    a.cluster.shutdown().await.expect("shutdown");
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: false,
    })
    .await;
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([20])
    );
}

#[actix_web::test]
async fn a_killed_nodes_members_expire() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut on_b = inbox();
    let _sb = b.cluster.subscribe(1, on_b.recipient.clone());
    on_b.resync().await;
    a.cluster.join(1, 10);
    a.cluster.join(1, 11);
    b.cluster.join(1, 11);
    present_becomes(&b.cluster, 1, &[10, 11]).await;
    let mut conn = raw(&redis).await;
    let entries: Vec<String> = redis::cmd("SMEMBERS")
        .arg("podo:p:1")
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(entries.len(), 3, "{entries:?}");

    // As kill -9: A's tasks stop, nothing is cleaned up in Redis.
    let killed = Instant::now();
    drop(a);
    // B's sweep finds A's heartbeat gone, removes A's entries and tells its own subscribers
    // that 10 left (11 is still on B).
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: false,
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "expired after {took:?}, before the 1 s TTL could run out"
    );
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([11])
    );
    on_b.no_event(Duration::from_millis(500)).await;
    let entries: Vec<String> = redis::cmd("SMEMBERS")
        .arg("podo:p:1")
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(entries, vec![format!("11@{}", b.cluster.instance())]);
}

#[actix_web::test]
async fn a_lapsed_heartbeat_registers_and_announces_again() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut on_b = inbox();
    let _sb = b.cluster.subscribe(1, on_b.recipient.clone());
    on_b.resync().await;
    a.cluster.join(1, 10);
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: true,
    })
    .await;
    present_becomes(&b.cluster, 1, &[10]).await;
    // A's heartbeat key is gone (A was too late for its TTL, say): B's sweep removes A's entry
    // and says so; A's next heartbeat finds its key gone, writes its entries again and
    // announces them.
    let mut conn = raw(&redis).await;
    let removed: i64 = redis::cmd("DEL")
        .arg(format!("podo:node:{}", a.cluster.instance()))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(removed, 1);
    on_b.expect(ClusterEvent::Presence {
        user_id: 10,
        present: true,
    })
    .await;
    present_becomes(&b.cluster, 1, &[10]).await;
    // Alive again: nothing more changes (B's own `false`, if its sweep came first, may reach
    // its sink just before or after A's `true`: notices, not the truth).
    while on_b.next(Duration::from_millis(300)).await.is_some() {}
    on_b.no_event(Duration::from_millis(1500)).await;
    assert_eq!(
        b.cluster.present(1).await.expect("present"),
        HashSet::from([10])
    );
}

#[actix_web::test]
async fn a_redis_restart_resyncs_and_registers_presence_again() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut on_a = inbox();
    let mut on_b = inbox();
    let _sa = a.cluster.subscribe(1, on_a.recipient.clone());
    let _sb = b.cluster.subscribe(1, on_b.recipient.clone());
    on_a.resync().await;
    on_b.resync().await;
    a.cluster.join(1, 10);
    present_becomes(&b.cluster, 1, &[10]).await;

    redis.stop();
    wait_until("both nodes see Redis down", || {
        !a.cluster.is_up() && !b.cluster.is_up()
    })
    .await;
    assert!(a.metrics.render().contains("podo_cluster_redis_up 0"));
    // Publishing never waits while Redis is down: each event is dropped and counted.
    let started = Instant::now();
    for version in 0..10_000 {
        a.cluster.publish(1, board(version));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "10,000 publishes took {took:?}"
    );
    assert_eq!(a.metrics.cluster.dropped.load(Relaxed), 10_000);
    // Presence falls back: the caller gets an error within the bound, and local presence.
    let asked = Instant::now();
    assert!(b.cluster.present(1).await.is_err());
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(a.cluster.local_present(1), HashSet::from([10]));
    // Joins while Redis is down are written once it is back.
    b.cluster.join(1, 20);

    // Back, empty: every subscriber resyncs, the entries are written again.
    redis.restart().await;
    on_a.resync().await;
    on_b.resync().await;
    assert_eq!(a.metrics.cluster.resyncs.load(Relaxed), 1);
    assert_eq!(b.metrics.cluster.resyncs.load(Relaxed), 1);
    present_becomes(&b.cluster, 1, &[10, 20]).await;
    present_becomes(&a.cluster, 1, &[10, 20]).await;
    a.cluster.publish(1, board(42));
    on_b.expect(board(42)).await;
    b.cluster.publish(1, board(43));
    on_a.expect(board(43)).await;
    assert_eq!(a.metrics.cluster.dropped.load(Relaxed), 10_000);
}

#[actix_web::test]
async fn a_node_starts_while_redis_is_down_and_joins_later() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let metrics = Arc::new(Metrics::default());
    let late = Cluster::connect_with(&redis.url(0), Some("late".into()), metrics.clone(), fast())
        .await
        .expect("starts without Redis");
    assert!(!late.is_up());
    let mut inbox_late = inbox();
    let _s = late.subscribe(1, inbox_late.recipient.clone());
    late.join(1, 5);
    redis.restart().await;
    inbox_late.resync().await;
    let other = node(&redis, "other").await;
    present_becomes(&other.cluster, 1, &[5]).await;
    other.cluster.publish(1, board(1));
    inbox_late.expect(board(1)).await;
}

#[actix_web::test]
async fn bad_settings_are_refused() {
    let metrics = Arc::new(Metrics::default());
    let bad_url = Cluster::connect("http://127.0.0.1:6379", None, metrics.clone()).await;
    assert!(bad_url.is_err());
    let bad_node = Cluster::connect("redis://127.0.0.1:1/0", Some("a@b".into()), metrics).await;
    assert!(bad_node.is_err());

    // Cluster mode on SQLite: the server refuses to start and says why.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = podo::Config::for_tests(format!("sqlite://{}/podo.db", dir.path().display()));
    config.redis_url = Some("redis://127.0.0.1:6379/0".into());
    let err = podo::Application::build(config)
        .await
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("PODO_REDIS_URL") && message.contains("postgres://"),
        "{message}"
    );
}

mod seqs {
    //! Chat seqs reserved in PostgreSQL by two writers with pools of their own (two nodes).
    use std::collections::BTreeMap;

    use podo::store::seqs::{
        NewMessage, insert_reserving, repair_counter, reserve_seqs, reserve_seqs_many,
    };
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};

    /// A fresh migrated database on `PODO_TEST_PG`; None (and a note) without it.
    async fn fresh_pg() -> Option<String> {
        let admin_url = std::env::var("PODO_TEST_PG").ok().filter(|u| !u.is_empty());
        let Some(admin_url) = admin_url else {
            eprintln!("skipped: set PODO_TEST_PG to run the PostgreSQL seq tests");
            return None;
        };
        let name = format!(
            "podo_t_{}_seq_{}",
            std::process::id(),
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
        let url = format!("{base}/{name}");
        let db = podo::store::Db::connect(&url).await.expect("connect");
        db.migrate().await.expect("migrate");
        db.close().await;
        Some(url)
    }

    async fn insert_messages(
        txn: &impl ConnectionTrait,
        family_id: i64,
        first: i64,
        n: i64,
        writer: &str,
    ) {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "({family_id}, {}, 1, '{writer}-{}-{i}', 'hi', now())",
                    first + i,
                    first
                )
            })
            .collect();
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "INSERT INTO messages (family_id, seq, sender_id, client_id, text, created_at) VALUES {}",
                rows.join(", ")
            ),
        ))
        .await
        .expect("insert messages");
    }

    async fn seqs_of(db: &sea_orm::DatabaseConnection, family_id: i64) -> Vec<i64> {
        db.query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT seq FROM messages WHERE family_id = {family_id} ORDER BY seq"),
        ))
        .await
        .expect("read seqs")
        .iter()
        .map(|row| row.try_get::<i64>("", "seq").expect("seq"))
        .collect()
    }

    /// One writer: `rounds` transactions of 1-8 messages for families 1-3 (in an order of its
    /// own), every fourth rolled back after reserving and inserting; returns what it committed
    /// per family.
    async fn writer(url: String, name: &'static str, rounds: usize) -> BTreeMap<i64, i64> {
        let db = podo::store::Db::connect(&url).await.expect("connect");
        let mut committed = BTreeMap::new();
        for round in 0..rounds {
            let txn = db.write.begin().await.expect("begin");
            let mut counts = Vec::new();
            for family_id in [3, 1, 2] {
                let n = 1 + ((round * 7 + family_id as usize * 3) % 8) as i64;
                if !(round + family_id as usize).is_multiple_of(3) {
                    counts.push((family_id, n));
                }
            }
            if name == "b" {
                counts.reverse();
            }
            let firsts = if counts.len() == 1 && round % 2 == 0 {
                let (family_id, n) = counts[0];
                BTreeMap::from([(
                    family_id,
                    reserve_seqs(&txn, family_id, n).await.expect("reserve"),
                )])
            } else {
                reserve_seqs_many(&txn, &counts).await.expect("reserve")
            };
            for &(family_id, n) in &counts {
                insert_messages(&txn, family_id, firsts[&family_id], n, name).await;
            }
            // Hold the locks a moment, so the other writer queues behind them.
            tokio::task::yield_now().await;
            if round % 4 == 3 {
                txn.rollback().await.expect("rollback");
            } else {
                txn.commit().await.expect("commit");
                for (family_id, n) in counts {
                    *committed.entry(family_id).or_default() += n;
                }
            }
        }
        db.close().await;
        committed
    }

    #[actix_web::test]
    async fn two_writers_get_gapless_unique_seqs() {
        let Some(url) = fresh_pg().await else { return };
        let rounds = 200;
        let (a, b) = tokio::join!(
            tokio::spawn(writer(url.clone(), "a", rounds)),
            tokio::spawn(writer(url.clone(), "b", rounds)),
        );
        let (a, b) = (a.expect("writer a"), b.expect("writer b"));
        let db = Database::connect(url.as_str()).await.expect("connect");
        for family_id in [1, 2, 3] {
            let total = a.get(&family_id).unwrap_or(&0) + b.get(&family_id).unwrap_or(&0);
            assert!(total > 100, "family {family_id}: only {total} committed");
            let seqs = seqs_of(&db, family_id).await;
            let expected: Vec<i64> = (1..=total).collect();
            assert!(
                seqs == expected,
                "family {family_id}: {} seqs, not 1..={total} (first differences: {:?})",
                seqs.len(),
                seqs.iter()
                    .zip(&expected)
                    .filter(|(s, e)| s != e)
                    .take(5)
                    .collect::<Vec<_>>()
            );
        }
        // Both writers wrote family 1.
        let writers: Vec<String> = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT DISTINCT split_part(client_id, '-', 1) AS w FROM messages WHERE family_id = 1"
                    .to_owned(),
            ))
            .await
            .expect("writers")
            .iter()
            .map(|row| row.try_get::<String>("", "w").expect("w"))
            .collect();
        assert_eq!(writers.len(), 2, "{writers:?}");
        db.close().await.ok();
    }

    /// One writer with one statement per batch (`insert_reserving`, no transaction): 1-6
    /// messages for families 1-3; every fifth batch repeats a client id already stored, so the
    /// statement fails whole. Checks the seqs it was given against what is stored; returns what
    /// it committed per family.
    async fn single_statement_writer(
        url: String,
        name: &'static str,
        rounds: usize,
    ) -> BTreeMap<i64, i64> {
        let db = podo::store::Db::connect(&url).await.expect("connect");
        let mut committed = BTreeMap::new();
        for round in 0..rounds {
            let mut rows = Vec::new();
            for (i, family_id) in [2, 3, 1].into_iter().enumerate() {
                for k in 0..(1 + (round + i * 5) % 6) {
                    rows.push(NewMessage {
                        family_id,
                        sender_id: 2,
                        client_id: format!("{name}-{round}-{k}"),
                        text: "hi".into(),
                        created_at: chrono::Utc::now(),
                    });
                }
            }
            if round % 5 == 4 {
                rows[0].client_id = format!("{name}-0-0");
                assert!(
                    insert_reserving(&db.write, &rows).await.is_err(),
                    "a stored client id fails the batch"
                );
                continue;
            }
            let seqs = insert_reserving(&db.write, &rows).await.expect("insert");
            assert_eq!(seqs.len(), rows.len());
            for (row, seq) in rows.iter().zip(&seqs) {
                let stored: i64 = db
                    .write
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!(
                            "SELECT seq FROM messages WHERE family_id = {} AND client_id = '{}'",
                            row.family_id, row.client_id
                        ),
                    ))
                    .await
                    .expect("read")
                    .expect("stored")
                    .try_get("", "seq")
                    .expect("seq");
                assert_eq!(stored, *seq);
                *committed.entry(row.family_id).or_default() += 1;
            }
            // A family's rows got consecutive seqs in the order given.
            let of_one: Vec<i64> = rows
                .iter()
                .zip(&seqs)
                .filter(|(row, _)| row.family_id == 3)
                .map(|(_, seq)| *seq)
                .collect();
            assert!(of_one.windows(2).all(|w| w[1] == w[0] + 1), "{of_one:?}");
        }
        db.close().await;
        committed
    }

    #[actix_web::test]
    async fn one_statement_and_transaction_writers_share_the_seqs() {
        let Some(url) = fresh_pg().await else { return };
        let rounds = 120;
        let (a, b, c) = tokio::join!(
            tokio::spawn(single_statement_writer(url.clone(), "s1", rounds)),
            tokio::spawn(single_statement_writer(url.clone(), "s2", rounds)),
            tokio::spawn(writer(url.clone(), "t", rounds)),
        );
        let (a, b, c) = (a.expect("s1"), b.expect("s2"), c.expect("t"));
        let db = Database::connect(url.as_str()).await.expect("connect");
        for family_id in [1, 2, 3] {
            let total: i64 = [&a, &b, &c]
                .iter()
                .map(|w| w.get(&family_id).copied().unwrap_or(0))
                .sum();
            let seqs = seqs_of(&db, family_id).await;
            assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "family {family_id}");
        }
        db.close().await.ok();
    }

    #[actix_web::test]
    async fn a_counter_behind_the_messages_is_repaired() {
        let Some(url) = fresh_pg().await else { return };
        let db = Database::connect(url.as_str()).await.expect("connect");
        // Rows written without a reservation (a writer that does not use the counters).
        insert_messages(&db, 7, 1, 5, "old").await;
        let txn = db.begin().await.expect("begin");
        assert_eq!(reserve_seqs(&txn, 7, 1).await.expect("reserve"), 1);
        txn.rollback().await.expect("rollback");
        let txn = db.begin().await.expect("begin");
        assert_eq!(repair_counter(&txn, 7).await.expect("repair"), 5);
        assert_eq!(reserve_seqs(&txn, 7, 2).await.expect("reserve"), 6);
        txn.commit().await.expect("commit");
        // A counter ahead is left alone.
        let txn = db.begin().await.expect("begin");
        assert_eq!(repair_counter(&txn, 7).await.expect("repair"), 7);
        assert!(reserve_seqs(&txn, 7, 0).await.is_err());
        txn.rollback().await.expect("rollback");
        db.close().await.ok();
    }
}

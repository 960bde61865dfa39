//! What reserving chat seqs in the database costs (`src/cluster/seq.rs`), on PostgreSQL.
//!
//! ```sh
//! PODO_BENCH_PG=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench chat_seq
//! ```
//!
//! Two writers with pools of their own (two nodes' Persisters, one commit at a time each) insert
//! batches of chat messages, one message per family per batch over 1,000 families, as group
//! commit does:
//! - `memory`: today's single node: seqs from memory, one multi-row INSERT without a
//!   transaction; each writer has families of its own (a family has one writer).
//! - `reserve`: cluster mode: BEGIN, one `reserve_seqs_many` for the batch's families, the same
//!   INSERT, COMMIT; both writers write the same families (a parent on one node, the child on
//!   the other), so their reservations meet on the counter rows.
//! - `1 statement`: cluster mode with `insert_reserving`: reservation and INSERT in one
//!   statement, no transaction; the same families as `reserve`.
//!
//! Prints messages/s and commit p50/p99 per batch size, and checks afterwards that every family's
//! seqs are exactly 1..=n.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use podo::store::seqs::{NewMessage, insert_reserving, reserve_seqs_many};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};

/// Families written.
const FAMILIES: i64 = 1000;
/// How long each scenario runs.
const RUN: Duration = Duration::from_secs(8);
/// Batch sizes (messages per commit, one per family).
const BATCHES: [usize; 3] = [1, 32, 128];

fn insert_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let p = i * 4;
            format!(
                "(${}::bigint, ${}::bigint, 1, ${}::text, ${}::text, now())",
                p + 1,
                p + 2,
                p + 3,
                p + 4
            )
        })
        .collect();
    format!(
        "INSERT INTO messages (family_id, seq, sender_id, client_id, text, created_at) VALUES {}",
        rows.join(", ")
    )
}

fn insert(batch: &[(i64, i64)], tag: &str) -> Statement {
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(batch.len() * 4);
    for &(family_id, seq) in batch {
        values.push(family_id.into());
        values.push(seq.into());
        values.push(format!("{tag}-{seq}").into());
        values.push("a chat message of ordinary length".to_owned().into());
    }
    Statement::from_sql_and_values(DbBackend::Postgres, insert_sql(batch.len()), values)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    Reserve,
    OneStatement,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Reserve => "reserve",
            Mode::OneStatement => "1 statement",
        }
    }
}

struct Run {
    messages: u64,
    commits: Vec<Duration>,
}

/// One writer: `families` (the ones it writes, in turn), `batch` per commit, for [`RUN`].
async fn writer(url: String, name: String, families: Vec<i64>, batch: usize, mode: Mode) -> Run {
    let db = podo::store::Db::connect(&url).await.expect("connect");
    let mut next_seq: HashMap<i64, i64> = HashMap::new();
    let mut cursor = 0;
    let mut run = Run {
        messages: 0,
        commits: Vec::new(),
    };
    let deadline = Instant::now() + RUN;
    while Instant::now() < deadline {
        let mut chosen: Vec<i64> = (0..batch)
            .map(|i| families[(cursor + i) % families.len()])
            .collect();
        cursor += batch;
        chosen.sort_unstable();
        let started = Instant::now();
        if mode == Mode::OneStatement {
            let rows: Vec<NewMessage> = chosen
                .iter()
                .map(|&family_id| NewMessage {
                    family_id,
                    sender_id: 1,
                    client_id: format!("{name}-{cursor}-{family_id}"),
                    text: "a chat message of ordinary length".into(),
                    created_at: chrono::Utc::now(),
                })
                .collect();
            insert_reserving(&db.write, &rows).await.expect("insert");
        } else if mode == Mode::Reserve {
            let txn = db.write.begin().await.expect("begin");
            let counts: Vec<(i64, i64)> = chosen.iter().map(|&f| (f, 1)).collect();
            let firsts = reserve_seqs_many(&txn, &counts).await.expect("reserve");
            let rows: Vec<(i64, i64)> = chosen.iter().map(|f| (*f, firsts[f])).collect();
            txn.execute_raw(insert(&rows, &name)).await.expect("insert");
            txn.commit().await.expect("commit");
        } else {
            let rows: Vec<(i64, i64)> = chosen
                .iter()
                .map(|&f| {
                    let seq = next_seq.entry(f).or_insert(0);
                    *seq += 1;
                    (f, *seq)
                })
                .collect();
            db.write
                .execute_raw(insert(&rows, &name))
                .await
                .expect("insert");
        }
        run.commits.push(started.elapsed());
        run.messages += batch as u64;
    }
    db.close().await;
    run
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn fresh(admin_url: &str) -> String {
    let name = format!("podo_t_bench_seq_{}", rand::random::<u32>());
    let admin = Database::connect(admin_url)
        .await
        .expect("connect to PODO_BENCH_PG");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    admin.close().await.ok();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("the URL names a database");
    let url = format!("{base}/{name}");
    let db = podo::store::Db::connect(&url).await.expect("connect");
    db.migrate().await.expect("migrate");
    db.close().await;
    url
}

async fn drop_database(admin_url: &str, url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(admin) = Database::connect(admin_url).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        admin.close().await.ok();
    }
}

async fn check_gapless(db: &DatabaseConnection) -> u64 {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT family_id, COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi, COUNT(DISTINCT seq) AS d \
             FROM messages GROUP BY family_id"
                .to_owned(),
        ))
        .await
        .expect("check");
    let mut total = 0;
    for row in rows {
        let n: i64 = row.try_get("", "n").expect("n");
        let lo: i64 = row.try_get("", "lo").expect("lo");
        let hi: i64 = row.try_get("", "hi").expect("hi");
        let distinct: i64 = row.try_get("", "d").expect("d");
        assert!(
            lo == 1 && hi == n && distinct == n,
            "seqs not 1..=n: n={n} lo={lo} hi={hi} distinct={distinct}"
        );
        total += n as u64;
    }
    total
}

async fn scenario(admin_url: &str, batch: usize, mode: Mode) {
    let url = fresh(admin_url).await;
    let all: Vec<i64> = (1..=FAMILIES).collect();
    let (a_families, b_families) = if mode != Mode::Memory {
        // Both nodes write every family; B goes round in another order.
        let mut b = all.clone();
        b.rotate_left(FAMILIES as usize / 2);
        (all.clone(), b)
    } else {
        let (a, b) = all.split_at(FAMILIES as usize / 2);
        (a.to_vec(), b.to_vec())
    };
    let started = Instant::now();
    let (a, b) = tokio::join!(
        tokio::spawn(writer(url.clone(), "a".into(), a_families, batch, mode)),
        tokio::spawn(writer(url.clone(), "b".into(), b_families, batch, mode)),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let (a, b) = (a.expect("writer a"), b.expect("writer b"));
    let mut commits: Vec<Duration> = a.commits.iter().chain(&b.commits).copied().collect();
    commits.sort_unstable();
    let messages = a.messages + b.messages;
    let db = Database::connect(url.as_str()).await.expect("connect");
    let stored = check_gapless(&db).await;
    db.close().await.ok();
    assert_eq!(stored, messages, "every message stored once");
    println!(
        "| {} | {batch} | {:.0} | {:.0} | {:.2} | {:.2} |",
        mode.name(),
        messages as f64 / elapsed,
        commits.len() as f64 / elapsed,
        percentile(&commits, 0.50),
        percentile(&commits, 0.99),
    );
    drop_database(admin_url, &url).await;
}

fn main() {
    let Some(admin_url) = std::env::var("PODO_BENCH_PG")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "chat_seq: set PODO_BENCH_PG=postgres://user@host:port/db (a database to create others from)"
        );
        return;
    };
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` and `--list`: nothing to run as a test.
        return;
    }
    actix_web::rt::System::new().block_on(async move {
        println!("| seqs | messages per commit | messages/s | commits/s | commit p50 ms | commit p99 ms |");
        println!("|---|---|---|---|---|---|");
        for batch in BATCHES {
            for mode in [Mode::Memory, Mode::Reserve, Mode::OneStatement] {
                scenario(&admin_url, batch, mode).await;
            }
        }
    });
}

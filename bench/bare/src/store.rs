//! SQLite: one writer thread that commits whatever messages arrived as one transaction (group
//! commit), then acks and delivers them; one read connection for logins, room loads, resumes
//! and history; and the counters `/metrics` shows.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::chat::{Out, Room};

/// Messages per transaction at most (a batch is whatever arrived meanwhile, up to this).
const MAX_BATCH: usize = 4096;
/// The same bounds as podo's `podo_persister_batch_size` histogram.
const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];

/// Opens `path` as podo does (WAL, `synchronous=FULL`); SQLite's own WAL autocheckpoint stays on.
pub fn open(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A message whose seq the room gave; the writer stores it, then acks and delivers it.
pub struct Row {
    pub room: Arc<Room>,
    pub session: u64,
    pub seq: i64,
    pub sender_id: i64,
    pub client_id: String,
    pub text: String,
    /// As podo's SQLite rows hold it (sqlx's encoding of a UTC instant).
    pub created_at: String,
    pub ack: Utf8Bytes,
    pub message: Utf8Bytes,
}

pub enum Job {
    Row(Row),
    /// The ack of a resent message that was still being stored: sent after everything queued
    /// before it, so after the original's commit.
    Ack {
        room: Arc<Room>,
        session: u64,
        frame: Utf8Bytes,
    },
}

#[derive(Default)]
pub struct Metrics {
    pub committed: AtomicU64,
    batches: AtomicU64,
    batch_rows: AtomicU64,
    buckets: [AtomicU64; BATCH_BUCKETS.len()],
    commit_nanos: AtomicU64,
    statements: AtomicU64,
    pub sessions: AtomicU64,
}

impl Metrics {
    fn batch(&self, rows: usize, took: Duration, statements: u64) {
        self.committed.fetch_add(rows as u64, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.batch_rows.fetch_add(rows as u64, Relaxed);
        if let Some(i) = BATCH_BUCKETS.iter().position(|&b| rows as u64 <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.commit_nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        self.statements.fetch_add(statements, Relaxed);
    }

    /// The names podo-load reads (podo's own metric names).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let count = self.batches.load(Relaxed);
        let _ = writeln!(
            out,
            "podo_messages_committed_total {}",
            self.committed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "podo_db_statements_total {}",
            self.statements.load(Relaxed)
        );
        let _ = writeln!(out, "podo_ws_sessions {}", self.sessions.load(Relaxed));
        let mut cumulative = 0;
        for (bound, bucket) in BATCH_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "podo_persister_batch_size_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "podo_persister_batch_size_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "podo_persister_batch_size_sum {}",
            self.batch_rows.load(Relaxed)
        );
        let _ = writeln!(out, "podo_persister_batch_size_count {count}");
        let _ = writeln!(
            out,
            "podo_persister_commit_seconds_total {}",
            self.commit_nanos.load(Relaxed) as f64 / 1e9
        );
        out
    }
}

/// Starts the writer thread on its own connection to `path`.
pub fn spawn_writer(path: &str, metrics: Arc<Metrics>) -> rusqlite::Result<Sender<Job>> {
    let conn = open(path)?;
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer(conn, rx, &metrics))
        .expect("spawn the writer thread");
    Ok(tx)
}

fn writer(mut conn: Connection, rx: Receiver<Job>, metrics: &Metrics) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(job) = rx.recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        match commit(&mut conn, &batch) {
            Ok((0, _)) => {}
            Ok((rows, statements)) => metrics.batch(rows, started.elapsed(), statements),
            Err(err) => {
                // Seqs were handed out in memory; a batch that did not commit would leave a gap.
                // A benchmark server simply stops (nothing unacknowledged is lost).
                eprintln!("podo-bare: commit failed, exiting: {err}");
                std::process::exit(1);
            }
        }
        for job in batch.drain(..) {
            deliver(job);
        }
    }
}

/// One transaction for every row of the batch; (rows, statements).
fn commit(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<(usize, u64)> {
    let rows = batch.iter().filter(|j| matches!(j, Job::Row(_))).count();
    if rows == 0 {
        return Ok((0, 0));
    }
    let txn = conn.transaction()?;
    {
        let mut insert = txn.prepare_cached(
            "INSERT INTO messages (family_id, seq, sender_id, client_id, text, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for job in batch {
            if let Job::Row(r) = job {
                insert.execute(params![
                    r.room.family_id,
                    r.seq,
                    r.sender_id,
                    r.client_id,
                    r.text,
                    r.created_at
                ])?;
            }
        }
    }
    txn.commit()?;
    Ok((rows, rows as u64 + 2))
}

/// After the commit: the ack to the sending session first, then the message to every session of
/// the family (the sender's included), in seq order.
fn deliver(job: Job) {
    match job {
        Job::Row(row) => {
            let mut room = row.room.inner.lock().expect("room lock");
            room.delivered = row.seq;
            for (id, tx) in &room.sessions {
                if *id == row.session {
                    let _ = tx.send(Out::Text(row.ack.clone()));
                }
                let _ = tx.send(Out::Message(row.seq, row.message.clone()));
            }
        }
        Job::Ack {
            room,
            session,
            frame,
        } => {
            let room = room.inner.lock().expect("room lock");
            if let Some((_, tx)) = room.sessions.iter().find(|(id, _)| *id == session) {
                let _ = tx.send(Out::Text(frame));
            }
        }
    }
}

/// The read connection (connect time, resumes, history), one caller at a time.
pub struct Reader(Mutex<Connection>);

/// A stored message as the history and resume read it.
pub struct Stored {
    pub seq: i64,
    pub sender_id: i64,
    pub client_id: String,
    pub text: String,
    pub created_at: String,
}

/// A family's state when its room is first opened.
pub struct RoomStart {
    pub names: HashMap<i64, String>,
    /// (sender, client_id) → seq of every stored message.
    pub known: HashMap<(i64, String), i64>,
    pub last_seq: i64,
}

impl Reader {
    pub fn open(path: &str) -> rusqlite::Result<Reader> {
        Ok(Reader(Mutex::new(open(path)?)))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.0.lock().expect("reader lock")
    }

    pub fn setting(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
    }

    /// None: no such user; Some(None): a user without a family.
    pub fn family_of(&self, user_id: i64) -> rusqlite::Result<Option<Option<i64>>> {
        self.conn()
            .prepare_cached("SELECT family_id FROM users WHERE id = ?1")?
            .query_row([user_id], |r| r.get(0))
            .optional()
    }

    pub fn names(&self, family_id: i64) -> rusqlite::Result<HashMap<i64, String>> {
        self.conn()
            .prepare_cached("SELECT id, name FROM users WHERE family_id = ?1")?
            .query_map([family_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    pub fn load_room(&self, family_id: i64) -> rusqlite::Result<RoomStart> {
        let names = self.names(family_id)?;
        let conn = self.conn();
        let mut last_seq = 0;
        let known = conn
            .prepare_cached("SELECT sender_id, client_id, seq FROM messages WHERE family_id = ?1")?
            .query_map([family_id], |r| {
                Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?))
            })?
            .inspect(|row| {
                if let Ok((_, seq)) = row {
                    last_seq = last_seq.max(*seq);
                }
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(RoomStart {
            names,
            known,
            last_seq,
        })
    }

    /// Messages with `after < seq <= upto`, ascending; at most `limit`.
    pub fn after(
        &self,
        family_id: i64,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> rusqlite::Result<Vec<Stored>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, sender_id, client_id, text, created_at FROM messages \
             WHERE family_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
        )?;
        stmt.query_map(params![family_id, after, upto, limit], stored)?
            .collect()
    }

    /// The newest `limit` messages below `before`, ascending.
    pub fn before(&self, family_id: i64, before: i64, limit: i64) -> rusqlite::Result<Vec<Stored>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, sender_id, client_id, text, created_at FROM messages \
             WHERE family_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )?;
        let mut rows = stmt
            .query_map(params![family_id, before, limit], stored)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    pub fn last_seq(&self, family_id: i64) -> rusqlite::Result<i64> {
        self.conn().query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE family_id = ?1",
            [family_id],
            |r| r.get(0),
        )
    }
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        seq: r.get(0)?,
        sender_id: r.get(1)?,
        client_id: r.get(2)?,
        text: r.get(3)?,
        created_at: r.get(4)?,
    })
}

//! The board engine (grants, attaches and new boards at a target rate, each family driven by its
//! own task, with change → SSE delivery measured on every stream of the family) and the `board`
//! scenario built on it.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use awc::http::Method;
use clap::Args;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CONNECT_CONCURRENCY, Common, Pacer, Worker, per_family_interval};
use crate::client::{SseStream, Target, request};
use crate::probe::{self, Metrics};
use crate::report::{Latency, Report};
use crate::seed::SeededFamily;

/// Size of the boards the engine opens when a family's board completed: the largest allowed, so
/// new boards (two extra requests) are rare.
const NEW_BOARD_SIZE: i32 = 100;
/// How long after the load stops the engine waits for the last SSE deliveries.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct BoardArgs {
    #[command(flatten)]
    pub common: Common,
    /// Board changes per second over all families (0: as fast as the server answers, one request
    /// in flight per family).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// SSE streams per member held open during the run (change → delivery is measured on them).
    #[arg(long, default_value_t = 1)]
    pub streams_per_member: usize,
    /// Latencies from each change's scheduled time rather than from when it was sent, and no
    /// schedule restarts when late (see the report's note on what stays closed).
    #[arg(long)]
    pub open_loop: bool,
}

#[derive(Deserialize)]
struct BoardAnswer {
    version: i64,
    size: i32,
    granted: i32,
    attached: i32,
    status: String,
}

#[derive(Deserialize)]
struct Shown {
    board: Option<BoardAnswer>,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// Per-worker results.
#[derive(Default)]
pub struct BoardStats {
    pub ack: Latency,
    pub sse: Latency,
    pub changes: u64,
    pub errors: u64,
    /// Answers whose version was not the one expected (something else changed the board).
    pub mismatched: u64,
    /// Changes that never reached every stream of their family.
    pub undelivered: u64,
    /// A stream that showed an older version after a newer one (the contract forbids it).
    pub regressions: u64,
    pub streams: u64,
    pub streams_ended: u64,
    pub late: u64,
}

impl BoardStats {
    pub fn merge(mut self, other: BoardStats) -> BoardStats {
        self.ack.merge(&other.ack);
        self.sse.merge(&other.sse);
        self.changes += other.changes;
        self.errors += other.errors;
        self.mismatched += other.mismatched;
        self.undelivered += other.undelivered;
        self.regressions += other.regressions;
        self.streams += other.streams;
        self.streams_ended += other.streams_ended;
        self.late += other.late;
        self
    }
}

#[derive(Default)]
struct FamilyState {
    /// The family's board version as last answered or streamed; None until known.
    version: Option<i64>,
    active: bool,
    size: i32,
    granted: i32,
    attached: i32,
    /// Changes sent and not yet seen on every stream: (version, sent at).
    pending: VecDeque<(i64, Instant)>,
    /// The newest version each stream has shown (i64::MAX for a stream that failed to open).
    seen: Vec<i64>,
}

struct BoardFamily {
    seeded: SeededFamily,
    client: Rc<awc::Client>,
    /// The parent's node and the child's ([`Worker::member_target`]).
    targets: [Target; 2],
    state: RefCell<FamilyState>,
}

/// One worker's families and results.
pub struct BoardEngine {
    families: Vec<Rc<BoardFamily>>,
    stats: Rc<RefCell<BoardStats>>,
    streams_per_member: usize,
}

impl BoardEngine {
    pub fn new(worker: &Worker, streams_per_member: usize) -> BoardEngine {
        let families = worker
            .families
            .iter()
            .enumerate()
            .map(|(i, seeded)| {
                Rc::new(BoardFamily {
                    seeded: seeded.clone(),
                    client: worker.client(i),
                    targets: [
                        worker.member_target(i, 0).clone(),
                        worker.member_target(i, 1).clone(),
                    ],
                    state: RefCell::default(),
                })
            })
            .collect();
        BoardEngine {
            families,
            stats: Rc::default(),
            streams_per_member,
        }
    }

    /// Reads every family's board (this also loads its FamilyBoard actor on the server).
    pub async fn load_states(&self, worker: &Worker) {
        futures_util::stream::iter(self.families.clone())
            .for_each_concurrent(CONNECT_CONCURRENCY, |family| async move {
                family.reload(worker).await;
            })
            .await;
    }

    /// Opens the SSE streams and waits (up to `within`) until each has shown its first event.
    pub async fn open_streams(&self, worker: &Worker, within: Duration) {
        let per_family = 2 * self.streams_per_member;
        for family in &self.families {
            family.state.borrow_mut().seen = vec![-1; per_family];
        }
        let jobs: Vec<(Rc<BoardFamily>, usize)> = self
            .families
            .iter()
            .flat_map(|f| (0..per_family).map(move |i| (f.clone(), i)))
            .collect();
        futures_util::stream::iter(jobs)
            .for_each_concurrent(CONNECT_CONCURRENCY, |(family, index)| {
                let stats = self.stats.clone();
                async move {
                    let member = index % 2;
                    let token = if member == 0 {
                        &family.seeded.parent.token
                    } else {
                        &family.seeded.child.token
                    };
                    let target = &family.targets[member];
                    match SseStream::open(&family.client, target, token).await {
                        Ok(stream) => {
                            worker.counters.opened();
                            stats.borrow_mut().streams += 1;
                            let counters = worker.counters.clone();
                            actix_web::rt::spawn(read_stream(
                                family.clone(),
                                index,
                                stream,
                                stats,
                                counters,
                            ));
                        }
                        Err(err) => {
                            if worker.counters.connect_failed.fetch_add(1, Relaxed) < 3 {
                                eprintln!("podo-load: SSE stream refused: {err}");
                            }
                            family.state.borrow_mut().seen[index] = i64::MAX;
                        }
                    }
                }
            })
            .await;
        let until = Instant::now() + within;
        while Instant::now() < until
            && self
                .families
                .iter()
                .any(|f| f.state.borrow().seen.contains(&-1))
        {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drives every family until the coordinator says stop, then waits briefly for the last
    /// deliveries and counts what never arrived.
    /// `open_loop`: latencies count from each change's scheduled time (see [`Pacer`]).
    pub async fn drive(&self, worker: &Worker, interval: Option<Duration>, open_loop: bool) {
        let n = self.families.len();
        let tasks: Vec<_> = self
            .families
            .iter()
            .enumerate()
            .map(|(i, family)| {
                let family = family.clone();
                let stats = self.stats.clone();
                let phases = worker.phases.clone();
                let counters = worker.counters.clone();
                let streams = self.streams_per_member > 0;
                actix_web::rt::spawn(async move {
                    let mut pacer = Pacer::new(interval, i as f64 / n as f64).open_loop(open_loop);
                    while !phases.stopped() {
                        let scheduled = pacer.tick().await;
                        if phases.stopped() {
                            break;
                        }
                        let since = open_loop.then_some(scheduled);
                        family.step(since, streams, &stats, &counters).await;
                    }
                    stats.borrow_mut().late += pacer.late;
                })
            })
            .collect();
        futures_util::future::join_all(tasks).await;
        let until = Instant::now() + DRAIN;
        while Instant::now() < until
            && self
                .families
                .iter()
                .any(|f| !f.state.borrow().pending.is_empty())
        {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let undelivered: usize = self
            .families
            .iter()
            .map(|f| f.state.borrow().pending.len())
            .sum();
        self.stats.borrow_mut().undelivered += undelivered as u64;
    }

    pub fn finish(self) -> BoardStats {
        std::mem::take(&mut *self.stats.borrow_mut())
    }
}

enum Op {
    Grant,
    Attach,
    NewBoard,
}

impl BoardFamily {
    async fn reload(&self, worker: &Worker) {
        if self.targets[1].addr != self.targets[0].addr {
            // Loads the family's actors on the child's node too.
            let url = self.targets[1].url("/api/board");
            if let Err(err) = request::<Shown>(
                &self.client,
                Method::GET,
                &url,
                &self.seeded.child.token,
                None,
            )
            .await
            {
                worker.counters.errors.fetch_add(1, Relaxed);
                eprintln!("podo-load: GET /api/board (child's node) failed: {err}");
            }
        }
        let url = self.targets[0].url("/api/board");
        match request::<Shown>(
            &self.client,
            Method::GET,
            &url,
            &self.seeded.parent.token,
            None,
        )
        .await
        {
            Ok(shown) => self.apply(shown.board.as_ref()),
            Err(err) => {
                worker.counters.errors.fetch_add(1, Relaxed);
                eprintln!("podo-load: GET /api/board failed: {err}");
            }
        }
    }

    fn apply(&self, board: Option<&BoardAnswer>) {
        let mut st = self.state.borrow_mut();
        match board {
            Some(b) => {
                st.version = Some(st.version.map_or(b.version, |v| v.max(b.version)));
                st.active = b.status == "active";
                st.size = b.size;
                st.granted = b.granted;
                st.attached = b.attached;
            }
            None => st.active = false,
        }
    }

    fn next_op(&self) -> Op {
        let st = self.state.borrow();
        if !st.active {
            Op::NewBoard
        } else if st.granted > st.attached {
            Op::Attach
        } else if st.granted < st.size {
            Op::Grant
        } else {
            Op::NewBoard
        }
    }

    /// One change, by the member whose action it is, on that member's node. `since`: the
    /// scheduled time latencies count from (open loop); None: from the send.
    async fn step(
        &self,
        since: Option<Instant>,
        streams: bool,
        stats: &RefCell<BoardStats>,
        counters: &super::Counters,
    ) {
        let (member, path, token, body) = match self.next_op() {
            Op::Grant => (
                0,
                "/api/board/grant",
                &self.seeded.parent.token,
                json!({"count": 1}),
            ),
            Op::Attach => (1, "/api/board/attach", &self.seeded.child.token, json!({})),
            Op::NewBoard => {
                let wish = request::<Created>(
                    &self.client,
                    Method::POST,
                    &self.targets[1].url("/api/wishes"),
                    &self.seeded.child.token,
                    Some(&json!({"name": "podo-load gift"})),
                )
                .await;
                match wish {
                    Ok(wish) => (
                        0,
                        "/api/board",
                        &self.seeded.parent.token,
                        json!({"wish_id": wish.id, "size": NEW_BOARD_SIZE}),
                    ),
                    Err(err) => {
                        self.failed(stats, counters, &err.to_string());
                        return;
                    }
                }
            }
        };
        let target = &self.targets[member];
        self.change(since, target, path, token, &body, streams, stats, counters)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn change(
        &self,
        since: Option<Instant>,
        target: &Target,
        path: &str,
        token: &str,
        body: &Value,
        streams: bool,
        stats: &RefCell<BoardStats>,
        counters: &super::Counters,
    ) {
        let sent = since.unwrap_or_else(Instant::now);
        // Registered before sending: the SSE event can arrive before the HTTP answer.
        let expected = self.state.borrow().version.map(|v| v + 1);
        if let (true, Some(v)) = (streams, expected) {
            self.state.borrow_mut().pending.push_back((v, sent));
        }
        counters.sent.fetch_add(1, Relaxed);
        let answer = request::<BoardAnswer>(
            &self.client,
            Method::POST,
            &target.url(path),
            token,
            Some(body),
        )
        .await;
        match answer {
            Ok(board) => {
                {
                    let mut s = stats.borrow_mut();
                    s.ack.record(sent.elapsed());
                    s.changes += 1;
                    if expected.is_some_and(|v| v != board.version) {
                        s.mismatched += 1;
                    }
                }
                counters.acked.fetch_add(1, Relaxed);
                if expected != Some(board.version) {
                    let mut st = self.state.borrow_mut();
                    st.pending.retain(|(v, _)| Some(*v) != expected);
                    if streams && st.seen.iter().any(|&s| s < board.version) {
                        st.pending.push_back((board.version, sent));
                    }
                }
                self.apply(Some(&board));
            }
            Err(err) => {
                self.state
                    .borrow_mut()
                    .pending
                    .retain(|(v, _)| Some(*v) != expected);
                self.failed(stats, counters, &err.to_string());
                // Learn the real state before the next step.
                let url = self.targets[0].url("/api/board");
                if let Ok(shown) = request::<Shown>(
                    &self.client,
                    Method::GET,
                    &url,
                    &self.seeded.parent.token,
                    None,
                )
                .await
                {
                    self.apply(shown.board.as_ref());
                }
            }
        }
    }

    fn failed(&self, stats: &RefCell<BoardStats>, counters: &super::Counters, err: &str) {
        stats.borrow_mut().errors += 1;
        if counters.errors.fetch_add(1, Relaxed) < 5 {
            eprintln!("podo-load: board change failed: {err}");
        }
    }

    /// A stream showed `version`: every pending change up to the version all streams have shown
    /// is now delivered to the last stream of the family.
    fn on_event(&self, index: usize, version: i64, stats: &RefCell<BoardStats>) -> u64 {
        let now = Instant::now();
        let mut st = self.state.borrow_mut();
        if version < st.seen[index] {
            stats.borrow_mut().regressions += 1;
            return 0;
        }
        st.seen[index] = version;
        if st.version.is_none_or(|v| v < version) {
            st.version = Some(version);
        }
        let everywhere = st.seen.iter().copied().min().unwrap_or(version);
        let mut delivered = 0;
        while let Some(&(v, sent)) = st.pending.front() {
            if v > everywhere {
                break;
            }
            st.pending.pop_front();
            stats.borrow_mut().sse.record(now.duration_since(sent));
            delivered += 1;
        }
        delivered
    }
}

async fn read_stream(
    family: Rc<BoardFamily>,
    index: usize,
    mut stream: SseStream,
    stats: Rc<RefCell<BoardStats>>,
    counters: std::sync::Arc<super::Counters>,
) {
    while let Some(version) = stream.next_version().await {
        let delivered = family.on_event(index, version, &stats);
        counters.delivered.fetch_add(delivered, Relaxed);
    }
    counters.closed();
    stats.borrow_mut().streams_ended += 1;
    // A closed stream would hold every later change "undelivered" forever; stop waiting on it.
    family.state.borrow_mut().seen[index] = i64::MAX;
}

pub fn run(args: BoardArgs) -> Result<Option<Report>, String> {
    let common = args.common.clone();
    let families = common.load_families()?;
    let total = families.len();
    let interval = per_family_interval(args.rate, total);
    let streams = args.streams_per_member;
    let open_loop = args.open_loop;
    let (run, handles) = super::spawn_workers(&common, families, move |worker| async move {
        let engine = BoardEngine::new(&worker, streams);
        engine.load_states(&worker).await;
        engine.open_streams(&worker, Duration::from_secs(60)).await;
        worker.phases.arrive(0).await;
        engine.drive(&worker, interval, open_loop).await;
        engine.finish()
    })?;
    let addrs = common.addrs()?;
    let watched = common.watched();
    run.gather(0, Duration::from_secs(150))?;
    let before = Metrics::scrape_all(&addrs)?;
    let proc_before = watched.sample();
    let started = Instant::now();
    run.phases.release(0);
    run.run_for(common.duration, common.json);
    let elapsed = started.elapsed().as_secs_f64();
    let after = Metrics::scrape_all(&addrs)?;
    let proc_after = watched.sample();
    let stats = super::join(handles)?
        .into_iter()
        .fold(BoardStats::default(), BoardStats::merge);

    let mut report = Report::new("board", common.json);
    report.figure("nodes", addrs.len() as f64, "");
    report.figure("families", total as f64, "");
    report.figure("target rate", args.rate, "changes/s");
    report.figure("acknowledged changes", stats.changes as f64, "");
    report.figure(
        "acknowledged changes/s",
        stats.changes as f64 / common.duration as f64,
        "changes/s",
    );
    report.figure(
        "server board changes/s",
        after.delta(&before, "podo_board_changes_total") / elapsed,
        "changes/s",
    );
    add_server_figures(&mut report, &before, &after, elapsed, stats.changes);
    add_usage_figures(
        &mut report,
        &proc_after.usage_since(&proc_before),
        elapsed,
        stats.changes,
        "change",
    );
    report.figure("sse streams", stats.streams as f64, "");
    report.figure("errors", stats.errors as f64, "");
    report.figure("families behind schedule", stats.late as f64, "");
    report.latency("change → ack", stats.ack);
    report.latency("change → last SSE of family", stats.sse);
    report.check("undelivered changes", stats.undelivered);
    report.check("version regressions", stats.regressions);
    report.check("unexpected versions", stats.mismatched);
    if open_loop {
        report.note(
            "open loop: latencies count from each change's scheduled time; a family still \
             waits for one answer before its next change (the next change depends on it), and \
             a change held back by a slow one counts the wait",
        );
    }
    if addrs.len() > 1 {
        report.note(
            "several nodes: family i's parent on node i mod n, its child on node (i+1) mod n; \
             each member's changes go to its own node, so the partner's stream is on the other",
        );
    }
    Ok(Some(report))
}

/// Every node's CPU and RSS (summed, and per node when there are several), the CPU per
/// operation (`unit`: change, message), and the cores Redis and PostgreSQL used, when watched.
pub fn add_usage_figures(
    report: &mut Report,
    usage: &probe::Usage,
    elapsed: f64,
    ops: u64,
    unit: &str,
) {
    let known: Vec<(f64, f64)> = usage.servers.iter().flatten().copied().collect();
    // Microseconds of one core per operation, from cores used over the window.
    let per_op = |cores: f64| {
        if ops > 0 {
            cores * elapsed * 1e6 / ops as f64
        } else {
            0.0
        }
    };
    if !known.is_empty() {
        let cores: f64 = known.iter().map(|(c, _)| c).sum();
        report.figure("server CPU", cores, "cores");
        report.figure("server RSS", known.iter().map(|(_, r)| r).sum(), "MiB");
        report.figure(&format!("server CPU per {unit}"), per_op(cores), "µs");
        if usage.servers.len() > 1 {
            for (i, node) in usage.servers.iter().enumerate() {
                if let Some((cores, rss)) = node {
                    report.figure(&format!("server CPU node {}", i + 1), *cores, "cores");
                    report.figure(&format!("server RSS node {}", i + 1), *rss, "MiB");
                }
            }
        }
    }
    if let Some(cores) = usage.redis_cores {
        report.figure("redis CPU", cores, "cores");
        report.figure(&format!("redis CPU per {unit}"), per_op(cores), "µs");
    }
    if let Some(cores) = usage.postgres_cores {
        report.figure("postgres CPU (all postgres processes)", cores, "cores");
        report.figure(&format!("postgres CPU per {unit}"), per_op(cores), "µs");
        report.figure("postgres processes", usage.postgres_processes as f64, "");
    }
}

/// The server process's CPU (cores used over the window) and RSS at its end, when its pid is known.
pub fn add_process_figures(
    report: &mut Report,
    before: Option<probe::ProcSample>,
    after: Option<probe::ProcSample>,
) {
    if let (Some(a), Some(b)) = (after, before) {
        report.figure("server CPU", a.cores_since(&b), "cores");
        report.figure("server RSS", a.rss_kib as f64 / 1024.0, "MiB");
    }
}

/// Persister batches, commit time and statements per change over the window.
pub fn add_server_figures(
    report: &mut Report,
    before: &Metrics,
    after: &Metrics,
    elapsed: f64,
    changes: u64,
) {
    let batches = after.batches(before);
    report.figure("persister batches", batches.count, "");
    report.figure("batch size mean", batches.mean, "changes");
    report.figure("batch size p50 ≤", batches.p50_le, "changes");
    report.figure("batch size p99 ≤", batches.p99_le, "changes");
    report.figure("commit time mean", batches.commit_ms_mean, "ms");
    let restarts = after.delta(before, "podo_wal_restarts_total");
    report.figure("WAL restarts", restarts, "");
    if restarts > 0.0 {
        let paused = after.delta(before, "podo_wal_restart_pause_seconds_total");
        report.figure("WAL restart pause mean", paused * 1e3 / restarts, "ms");
    }
    let statements = after.delta(before, "podo_db_statements_total");
    report.figure("db statements/s", statements / elapsed, "");
    if changes > 0 {
        report.figure("db statements per change", statements / changes as f64, "");
    }
}

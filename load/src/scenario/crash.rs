//! `crash`: kill -9 under load. podo-load starts the server itself (`--serve`), drives chat and
//! board changes over every family, SIGKILLs the server at random moments, starts it again on the
//! same database (the same command line and environment), and lets the clients reconnect and
//! resume as real ones do: chat sessions `resume` after the last seq they saw and send again
//! what was never acknowledged (same `client_id`), board changes still unanswered are sent again
//! with the same idempotency `key`, board streams reconnect. After the last kill it reads
//! everything back through the API and holds it against what the clients were acknowledged:
//!
//! - chat: each family's history is 1..n without gaps, each client_id appears once, and every
//!   acknowledged message is there under the seq its ack named;
//! - board: for every board, the history's grants and attaches (and the final `GET /api/board`
//!   for the current one) match the acknowledged answers exactly. An acknowledged grant answered
//!   "granted = g", so the acknowledged grants of a board must name distinct counts and the
//!   board must end with exactly as many grants as there were acknowledgements: two answers with
//!   the same count mean the first was lost, a count nobody was answered means a change applied
//!   twice. The same for attaches;
//! - board streams never go back, and a stream opened after a restart starts at or after every
//!   version the clients were acknowledged.
//!
//! Each server process is a *generation* (0 before the first kill); every acknowledgement is
//! charged to the generation that gave it, so the report says per kill how much the killed
//! process had acknowledged and how much of that was lost or duplicated.
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use awc::http::Method;
use clap::Args;
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::chat::{ChatEngine, ChatStats, HistoryCheck};
use super::{CONNECT_CONCURRENCY, Common, Counters, Pacer, Phases, Worker, per_family_interval};
use crate::client::{RequestError, SseStream, Target, request};
use crate::probe;
use crate::report::{Latency, Report};
use crate::seed::SeededFamily;

/// A client whose request or connection failed (the server is down or restarting) tries again
/// after about this long ([`retry_pause`]: between half and one and a half times it, so that
/// 2,000 sockets do not come back in step).
pub const RETRY: Duration = Duration::from_millis(100);

/// [`RETRY`] with jitter.
pub fn retry_pause() -> Duration {
    RETRY.mul_f64(0.5 + rand::random::<f64>())
}
/// How long a (re)started server may take to answer `GET /healthz` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After the load stops: how long a board change still unanswered is sent again, and how long
/// board streams get to show the final state.
const DRAIN: Duration = Duration::from_secs(10);
/// Size of the boards the scenario opens when one completes (the API's maximum).
const NEW_BOARD_SIZE: i32 = 100;
/// Board history events read back per family (the API's maximum). A family with this many is
/// not checked exactly (counted as truncated, which fails the run): keep runs short enough.
const HISTORY_LIMIT: usize = 500;
/// Connecting every chat session and board stream may take this long.
const SETUP_TIMEOUT: Duration = Duration::from_secs(170);
/// Time allowed for draining and reading everything back, in the hard deadline.
const VERIFY_ALLOWANCE: Duration = Duration::from_secs(120);
/// SIGTERM at the end: how long the last server gets to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct CrashArgs {
    /// The server's command line, run as `sh -c "exec <serve>"` each time (the same
    /// environment, so the same database), e.g. "target/release/podo serve --bind
    /// 127.0.0.1:18080 --database-url sqlite:///tmp/x/podo.db".
    #[arg(long)]
    pub serve: String,
    /// Append the server's output (every generation) to this file; default: podo-load's stderr.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// Write the running server's pid here at every start (for a script's clean-up).
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// The server (loopback only), matching the --bind of --serve.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Tokens written by `podo-load seed` (families with boards).
    #[arg(long, default_value = "tokens.json")]
    pub tokens: PathBuf,
    /// Use the first N families of the token file (default: all).
    #[arg(long)]
    pub families: Option<usize>,
    /// Worker threads, each with its own event loop and share of the families.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Loopback source addresses to spread client sockets over.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: usize,
    /// SIGKILLs in a row.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Each kill comes at a random moment between --kill-min and --kill-max seconds after the
    /// server (re)started answering /healthz.
    #[arg(long, default_value_t = 3.0)]
    pub kill_min: f64,
    #[arg(long, default_value_t = 8.0)]
    pub kill_max: f64,
    /// Seconds of load after the last restart, before everything is read back.
    #[arg(long, default_value_t = 5)]
    pub after: u64,
    /// Chat messages per second over all families (both members send, alternating); 0: none.
    #[arg(long, default_value_t = 5000.0)]
    pub chat_rate: f64,
    /// Board changes per second over all families: grants by the parent, attaches by the
    /// child; 0: none.
    #[arg(long, default_value_t = 1000.0)]
    pub board_rate: f64,
    /// Length of each chat message text.
    #[arg(long, default_value_t = 40)]
    pub text_bytes: usize,
    /// Seed of the kill moments (default: random; the report names it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which server process is up, and when each first acknowledged a write; shared by the
/// coordinator and every worker.
pub struct Generations {
    start: Instant,
    current: AtomicUsize,
    /// Per generation: µs since `start` of its first acknowledged write (u64::MAX: none yet).
    first_write: Vec<AtomicU64>,
    /// Chat messages sent and not acknowledged yet (a resend is not counted again).
    pub chat_in_flight: AtomicI64,
    /// Board changes sent and not answered yet (retries included).
    pub board_in_flight: AtomicI64,
}

impl Generations {
    fn new(count: usize) -> Generations {
        Generations {
            start: Instant::now(),
            current: AtomicUsize::new(0),
            first_write: (0..count).map(|_| AtomicU64::new(u64::MAX)).collect(),
            chat_in_flight: AtomicI64::new(0),
            board_in_flight: AtomicI64::new(0),
        }
    }

    /// The generation a connection made (or a request sent) now reaches: the process started
    /// last. The previous one is dead by then, so nothing can answer from it.
    pub fn current(&self) -> usize {
        self.current.load(Relaxed)
    }

    pub fn count(&self) -> usize {
        self.first_write.len()
    }

    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A write was acknowledged by `generation`.
    pub fn wrote(&self, generation: usize) {
        if let Some(first) = self.first_write.get(generation) {
            first.fetch_min(self.micros(), Relaxed);
        }
    }

    fn first_write(&self, generation: usize) -> Option<u64> {
        self.first_write
            .get(generation)
            .map(|f| f.load(Relaxed))
            .filter(|&f| f != u64::MAX)
    }
}

/// Acknowledged, lost and duplicated counts, indexed by the generation that acknowledged them.
#[derive(Default, Clone)]
pub struct Tally {
    pub acked: Vec<u64>,
    pub lost: Vec<u64>,
    pub duplicated: Vec<u64>,
}

fn bump(counts: &mut Vec<u64>, generation: usize) {
    if counts.len() <= generation {
        counts.resize(generation + 1, 0);
    }
    counts[generation] += 1;
}

fn at(counts: &[u64], generation: usize) -> u64 {
    counts.get(generation).copied().unwrap_or(0)
}

impl Tally {
    pub fn new(generations: usize) -> Tally {
        Tally {
            acked: vec![0; generations],
            lost: vec![0; generations],
            duplicated: vec![0; generations],
        }
    }

    pub fn acked(&mut self, generation: usize) {
        bump(&mut self.acked, generation);
    }

    pub fn lost(&mut self, generation: usize) {
        bump(&mut self.lost, generation);
    }

    pub fn duplicated(&mut self, generation: usize) {
        bump(&mut self.duplicated, generation);
    }

    fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in [
            (&mut self.acked, &other.acked),
            (&mut self.lost, &other.lost),
            (&mut self.duplicated, &other.duplicated),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }

    fn total(counts: &[u64]) -> u64 {
        counts.iter().sum()
    }
}

/// The server process podo-load runs. Dropping it kills the process, so that no error path
/// leaves a server behind.
struct Server {
    command: String,
    log: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    child: Option<Child>,
    /// The running pid, for the watchdog.
    pid: Arc<AtomicU32>,
}

impl Server {
    fn start(&mut self) -> Result<(), String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("exec {}", self.command))
            .stdin(Stdio::null());
        if let Some(path) = &self.log {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let copy = file.try_clone().map_err(|e| e.to_string())?;
            command.stdout(copy).stderr(file);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?;
        self.pid.store(child.id(), Relaxed);
        if let Some(path) = &self.pid_file {
            std::fs::write(path, child.id().to_string())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then reap it.
    fn kill(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(|e| format!("kill -9: {e}"))?;
            child.wait().map_err(|e| format!("wait: {e}"))?;
        }
        self.pid.store(0, Relaxed);
        Ok(())
    }

    /// SIGTERM (a clean stop), then SIGKILL if it takes too long.
    fn stop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                self.pid.store(0, Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("podo-load: the server did not stop on SIGTERM; killing it");
        let _ = self.kill();
    }

    /// Whether the server exited by itself (it should never).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("the server exited by itself: {status}")),
            _ => None,
        }
    }

    /// Waits until `/healthz` answers 200.
    fn wait_healthy(&mut self, target: &Target) -> Result<(), String> {
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(exited) = self.exited() {
                return Err(exited);
            }
            if let Ok(200) = probe::status(target.addr, "/healthz") {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "the server did not answer /healthz within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// One kill, as the coordinator saw it.
struct Kill {
    /// Seconds of load between the server's (re)start and this kill.
    after: f64,
    /// µs since the generations' start.
    at: u64,
    chat_in_flight: i64,
    board_in_flight: i64,
    /// Kill → the new process answered /healthz 200.
    back: Duration,
}

pub fn run(args: CrashArgs) -> Result<Option<Report>, String> {
    let common = Common {
        server: vec![args.server.clone()],
        tokens: args.tokens.clone(),
        families: args.families,
        // The hard deadline of the workers: every kill at its latest with a slow restart, the
        // load after the last one, draining and reading back.
        duration: (args.kills as f64 * (args.kill_max + START_TIMEOUT.as_secs_f64())
            + args.after as f64
            + VERIFY_ALLOWANCE.as_secs_f64())
        .ceil() as u64,
        threads: args.threads,
        source_addrs: args.source_addrs,
        server_pid: Vec::new(),
        redis_pid: Vec::new(),
        postgres_cpu: false,
        json: args.json,
    };
    if !(args.kill_min > 0.0 && args.kill_min <= args.kill_max) {
        return Err("--kill-min must be positive and at most --kill-max".into());
    }
    let target = common.target()?;
    let families = common.load_families()?;
    let total = families.len();
    // Random seeds stay below 2^32, so that the JSON figure (a float) names them exactly.
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let run_id = rand::random::<u32>();
    let text: String = "podo-load "
        .chars()
        .cycle()
        .take(args.text_bytes.clamp(1, 2000))
        .collect();

    let pid = Arc::new(AtomicU32::new(0));
    let mut server = Server {
        command: args.serve.clone(),
        log: args.server_log.clone(),
        pid_file: args.pid_file.clone(),
        child: None,
        pid: pid.clone(),
    };
    // Before the workers' own watchdog (which exits without cleaning up): kill the server too.
    let deadline = Duration::from_secs(common.duration) + SETUP_TIMEOUT;
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        let pid = pid.load(Relaxed);
        if pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        eprintln!("podo-load: crash scenario overran {deadline:?}; server killed, exiting");
        std::process::exit(2);
    });
    // Else /healthz could answer from another server while ours fails to bind.
    if probe::status(target.addr, "/healthz").is_ok() {
        return Err(format!(
            "something already answers on {}; stop it first",
            target.base
        ));
    }
    server.start()?;
    server.wait_healthy(&target)?;

    let gens = Arc::new(Generations::new(args.kills + 1));
    let chat_interval = per_family_interval(args.chat_rate, total);
    let board_interval = per_family_interval(args.board_rate, total);
    let worker_gens = gens.clone();
    let (run, handles) = super::spawn_workers(&common, families, move |worker| {
        let (gens, text) = (worker_gens.clone(), text.clone());
        async move { work(worker, gens, chat_interval, board_interval, text, run_id).await }
    })?;
    run.gather(0, SETUP_TIMEOUT)?;
    eprintln!(
        "podo-load crash: {total} families, chat {}/s, board {}/s, {} kills, seed {seed}",
        args.chat_rate, args.board_rate, args.kills
    );
    run.phases.release(0);
    let mut kills = Vec::new();
    let mut up_since = Instant::now();
    for k in 1..=args.kills {
        let wait = rng.random_range(args.kill_min..=args.kill_max);
        let until = up_since + Duration::from_secs_f64(wait);
        while Instant::now() < until {
            if let Some(exited) = server.exited() {
                run.phases.stop();
                return Err(exited);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let chat_in_flight = gens.chat_in_flight.load(Relaxed);
        let board_in_flight = gens.board_in_flight.load(Relaxed);
        let after = up_since.elapsed().as_secs_f64();
        let at = gens.micros();
        let killed = Instant::now();
        server.kill()?;
        server.start()?;
        gens.current.store(k, Relaxed);
        if let Err(err) = server.wait_healthy(&target) {
            run.phases.stop();
            return Err(format!("restart after kill {k}: {err}"));
        }
        up_since = Instant::now();
        let back = killed.elapsed();
        eprintln!(
            "  kill {k}: after {after:.1} s of load, {chat_in_flight} messages and \
             {board_in_flight} board changes in flight; /healthz 200 after {:.0} ms",
            back.as_secs_f64() * 1e3
        );
        kills.push(Kill {
            after,
            at,
            chat_in_flight,
            board_in_flight,
            back,
        });
    }
    std::thread::sleep(Duration::from_secs(args.after));
    run.phases.stop();
    eprintln!("  load stopped; draining and reading everything back");
    let results = super::join(handles)?;
    if let Some(exited) = server.exited() {
        return Err(exited);
    }
    server.stop();
    let outcome = results
        .into_iter()
        .fold(Outcome::new(gens.count()), Outcome::merge);
    Ok(Some(outcome.report(&args, total, seed, &kills, &gens)))
}

/// What one worker found.
struct Outcome {
    chat: ChatStats,
    history: HistoryCheck,
    board: BoardStats,
}

impl Outcome {
    fn new(generations: usize) -> Outcome {
        Outcome {
            chat: ChatStats::default(),
            history: HistoryCheck {
                tally: Tally::new(generations),
                ..HistoryCheck::default()
            },
            board: BoardStats {
                tally: Tally::new(generations),
                ..BoardStats::default()
            },
        }
    }

    fn merge(mut self, o: Outcome) -> Outcome {
        self.chat = self.chat.merge(o.chat);
        let h = &mut self.history;
        h.tally.merge(&o.history.tally);
        h.gaps += o.history.gaps;
        h.moved += o.history.moved;
        h.unacked_stored += o.history.unacked_stored;
        h.messages += o.history.messages;
        h.unreadable += o.history.unreadable;
        self.board = self.board.merge(o.board);
        self
    }

    fn report(
        mut self,
        args: &CrashArgs,
        families: usize,
        seed: u64,
        kills: &[Kill],
        gens: &Generations,
    ) -> Report {
        let (chat_ack, board_ack) = (
            std::mem::take(&mut self.chat.ack),
            std::mem::take(&mut self.board.ack),
        );
        let (chat, board) = (&self.history.tally, &self.board.tally);
        let mut r = Report::new("crash", args.json);
        r.figure("families", families as f64, "");
        r.figure("chat target rate", args.chat_rate, "messages/s");
        r.figure("board target rate", args.board_rate, "changes/s");
        r.figure("kills", kills.len() as f64, "");
        r.figure("seed", seed as f64, "");
        let mut worst = 0.0f64;
        for (i, kill) in kills.iter().enumerate() {
            let (k, g) = (i + 1, i);
            let recovered = gens
                .first_write(k)
                .map(|f| f.saturating_sub(kill.at) as f64 / 1e6);
            worst = worst.max(recovered.unwrap_or(f64::INFINITY));
            r.figure(&format!("kill {k} after"), kill.after, "s");
            r.figure(
                &format!("kill {k} chat acknowledged"),
                at(&chat.acked, g) as f64,
                "",
            );
            r.figure(&format!("kill {k} chat lost"), at(&chat.lost, g) as f64, "");
            r.figure(
                &format!("kill {k} chat duplicated"),
                at(&chat.duplicated, g) as f64,
                "",
            );
            r.figure(
                &format!("kill {k} chat in flight"),
                kill.chat_in_flight as f64,
                "",
            );
            r.figure(
                &format!("kill {k} board acknowledged"),
                at(&board.acked, g) as f64,
                "",
            );
            r.figure(
                &format!("kill {k} board lost"),
                at(&board.lost, g) as f64,
                "",
            );
            r.figure(
                &format!("kill {k} board duplicated"),
                at(&board.duplicated, g) as f64,
                "",
            );
            r.figure(
                &format!("kill {k} board in flight"),
                kill.board_in_flight as f64,
                "",
            );
            r.figure(
                &format!("kill {k} healthz back"),
                kill.back.as_secs_f64(),
                "s",
            );
            r.figure(
                &format!("kill {k} first write"),
                recovered.unwrap_or(-1.0),
                "s",
            );
        }
        let last = kills.len();
        r.figure(
            "not killed chat acknowledged",
            at(&chat.acked, last) as f64,
            "",
        );
        r.figure("not killed chat lost", at(&chat.lost, last) as f64, "");
        r.figure(
            "not killed chat duplicated",
            at(&chat.duplicated, last) as f64,
            "",
        );
        r.figure(
            "not killed board acknowledged",
            at(&board.acked, last) as f64,
            "",
        );
        r.figure("not killed board lost", at(&board.lost, last) as f64, "");
        r.figure(
            "not killed board duplicated",
            at(&board.duplicated, last) as f64,
            "",
        );
        let in_flight = |f: fn(&Kill) -> i64| kills.iter().map(f).sum::<i64>() as f64;
        r.figure("chat acknowledged", Tally::total(&chat.acked) as f64, "");
        r.figure(
            "chat in flight at kills",
            in_flight(|k| k.chat_in_flight),
            "",
        );
        r.figure("board acknowledged", Tally::total(&board.acked) as f64, "");
        r.figure(
            "board in flight at kills",
            in_flight(|k| k.board_in_flight),
            "",
        );
        if !kills.is_empty() {
            r.figure("kill → first write, worst", worst, "s");
        }
        let c = &self.chat;
        r.figure("chat sent", c.sent as f64, "");
        r.figure("chat sends skipped (session down)", c.skipped as f64, "");
        r.figure("chat reconnects", c.reconnects as f64, "");
        r.figure("chat connect failures", c.connect_failures as f64, "");
        r.figure("chat server error frames", c.server_errors as f64, "");
        r.figure("chat unacknowledged at end", c.unacked_at_end as f64, "");
        r.figure(
            "chat resent, found stored",
            c.resent_found_stored as f64,
            "",
        );
        r.figure("chat messages read back", self.history.messages as f64, "");
        r.figure(
            "chat stored, never acknowledged",
            self.history.unacked_stored as f64,
            "",
        );
        let b = &self.board;
        r.figure("board changes retried", b.retries as f64, "");
        r.figure("board changes unresolved at end", b.unresolved as f64, "");
        r.figure("boards opened", b.boards_opened as f64, "");
        r.figure("board stream reconnects", b.sse_reconnects as f64, "");
        r.latency("chat send → ack (first try)", chat_ack);
        r.latency("board change → answer (first try)", board_ack);
        r.check("chat acknowledged and lost", Tally::total(&chat.lost));
        r.check("chat duplicated", Tally::total(&chat.duplicated));
        r.check("chat seq gaps in history", self.history.gaps);
        r.check("chat acked under another seq", self.history.moved);
        r.check("chat histories unreadable", self.history.unreadable);
        r.check("chat delivered twice or reordered", c.duplicates);
        r.check("chat delivery gaps", c.gaps);
        r.check("chat missing at end", c.missing_at_end);
        r.check("chat stored twice", c.double_stored);
        r.check("chat seqs rewound on reconnect", c.rewound);
        r.check("chat ack after message", c.acks_after_message);
        r.check("board acknowledged and lost", Tally::total(&board.lost));
        r.check("board duplicated", Tally::total(&board.duplicated));
        r.check("board and its history disagree", b.disagree);
        r.check("board history unread/truncated", b.unreadable);
        r.check("board changes refused (4xx)", b.refused);
        r.check("board stream behind acknowledged", b.sse_behind);
        r.check("board stream went back", b.sse_regressions);
        r.check("board stream not at final state", b.sse_stale);
        r
    }
}

async fn work(
    worker: Worker,
    gens: Arc<Generations>,
    chat_interval: Option<Duration>,
    board_interval: Option<Duration>,
    text: String,
    run_id: u32,
) -> Outcome {
    let chat = ChatEngine::new(&worker, text, run_id, None, Some(gens.clone()));
    let boards = BoardDriver::new(&worker, gens.clone(), run_id);
    boards.load_states().await;
    chat.connect(false).await;
    boards.watch_streams(Duration::from_secs(60)).await;
    worker.phases.arrive(0).await;
    // A rate of 0 leaves that side idle (its sessions and streams still reconnect and are
    // checked).
    let chat_load = async {
        match chat_interval {
            Some(interval) => chat.drive(Some(interval), 1).await,
            None => wait_stopped(&worker.phases).await,
        }
    };
    let board_load = async {
        match board_interval {
            Some(interval) => boards.drive(Some(interval)).await,
            None => wait_stopped(&worker.phases).await,
        }
    };
    futures_util::future::join(chat_load, board_load).await;
    let chat_stats = chat.drain().await;
    let history = chat.verify_history(gens.count()).await;
    let board = boards.verify().await;
    Outcome {
        chat: chat_stats,
        history,
        board,
    }
}

async fn wait_stopped(phases: &Phases) {
    while !phases.stopped() {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Deserialize, Clone)]
struct Board {
    id: i64,
    size: i32,
    granted: i32,
    attached: i32,
    status: String,
    version: i64,
}

#[derive(Deserialize)]
struct Shown {
    board: Option<Board>,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

#[derive(Deserialize)]
struct Event {
    board_id: i64,
    kind: String,
    count: i32,
}

#[derive(Deserialize)]
struct History {
    events: Vec<Event>,
}

/// Per-worker board results.
#[derive(Default)]
struct BoardStats {
    tally: Tally,
    /// Change → answer, for changes answered at the first try.
    ack: Latency,
    retries: u64,
    refused: u64,
    unresolved: u64,
    boards_opened: u64,
    disagree: u64,
    unreadable: u64,
    sse_reconnects: u64,
    sse_behind: u64,
    sse_regressions: u64,
    sse_stale: u64,
}

impl BoardStats {
    fn merge(mut self, o: BoardStats) -> BoardStats {
        self.tally.merge(&o.tally);
        self.ack.merge(&o.ack);
        self.retries += o.retries;
        self.refused += o.refused;
        self.unresolved += o.unresolved;
        self.boards_opened += o.boards_opened;
        self.disagree += o.disagree;
        self.unreadable += o.unreadable;
        self.sse_reconnects += o.sse_reconnects;
        self.sse_behind += o.sse_behind;
        self.sse_regressions += o.sse_regressions;
        self.sse_stale += o.sse_stale;
        self
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Grant,
    Attach,
}

/// What one family was acknowledged.
#[derive(Default)]
struct Ledger {
    board: Option<Board>,
    /// The counts (granted, attached) of each board when the scenario first saw it.
    start: HashMap<i64, (i32, i32)>,
    /// Board id → (granted after, generation) of every acknowledged grant.
    grants: HashMap<i64, Vec<(i32, usize)>>,
    /// Board id → (attached after, generation) of every acknowledged attach.
    attaches: HashMap<i64, Vec<(i32, usize)>>,
    /// The newest board version an answer named.
    max_version: i64,
    next_key: u64,
    /// Changes given up on unanswered (each may or may not have been applied).
    unresolved: [i32; 2],
}

impl Ledger {
    fn apply(&mut self, board: Option<Board>) {
        if let Some(b) = &board {
            self.start.entry(b.id).or_insert((b.granted, b.attached));
            self.max_version = self.max_version.max(b.version);
        }
        self.board = board;
    }

    fn next(&self) -> Option<Kind> {
        let b = self.board.as_ref().filter(|b| b.status == "active")?;
        if b.granted > b.attached {
            Some(Kind::Attach)
        } else if b.granted < b.size {
            Some(Kind::Grant)
        } else {
            None
        }
    }
}

struct BoardFamily {
    seeded: SeededFamily,
    client: Rc<awc::Client>,
    ledger: RefCell<Ledger>,
    /// The newest version each member's stream showed.
    seen: [Cell<i64>; 2],
}

/// One worker's board side: a task per family doing one change at a time, and two streams per
/// family.
struct BoardDriver {
    target: Target,
    gens: Arc<Generations>,
    phases: Arc<Phases>,
    counters: Arc<Counters>,
    run_id: u32,
    families: Vec<Rc<BoardFamily>>,
    stats: RefCell<BoardStats>,
    stopped_at: Cell<Option<Instant>>,
}

impl BoardDriver {
    fn new(worker: &Worker, gens: Arc<Generations>, run_id: u32) -> Rc<BoardDriver> {
        let families = worker
            .families
            .iter()
            .enumerate()
            .map(|(i, seeded)| {
                Rc::new(BoardFamily {
                    seeded: seeded.clone(),
                    client: worker.client(i),
                    ledger: RefCell::default(),
                    seen: [Cell::new(-1), Cell::new(-1)],
                })
            })
            .collect();
        Rc::new(BoardDriver {
            target: worker.target.clone(),
            stats: RefCell::new(BoardStats {
                tally: Tally::new(gens.count()),
                ..BoardStats::default()
            }),
            gens,
            phases: worker.phases.clone(),
            counters: worker.counters.clone(),
            run_id,
            families,
            stopped_at: Cell::new(None),
        })
    }

    /// Past the drain after the load stopped: give up on what is still unanswered.
    fn past_drain(&self) -> bool {
        if !self.phases.stopped() {
            return false;
        }
        let at = self.stopped_at.get().unwrap_or_else(|| {
            let now = Instant::now();
            self.stopped_at.set(Some(now));
            now
        });
        at.elapsed() > DRAIN
    }

    /// A request sent again (the same body, so the same key) while the server is down or
    /// answers 5xx; returns the answer, the generation that gave it and whether it took more
    /// than one try; or the first 4xx; or the last failure once past the drain.
    async fn call<T: DeserializeOwned>(
        &self,
        family: &BoardFamily,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<(T, usize, bool), RequestError> {
        let url = self.target.url(path);
        let mut retried = false;
        loop {
            let generation = self.gens.current();
            match request::<T>(&family.client, method.clone(), &url, token, body).await {
                Ok(answer) => return Ok((answer, generation, retried)),
                Err(err) if err.status == 0 || err.status >= 500 => {
                    if self.past_drain() {
                        return Err(err);
                    }
                    retried = true;
                    self.stats.borrow_mut().retries += 1;
                    actix_web::rt::time::sleep(retry_pause()).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn reload(&self, family: &BoardFamily) {
        let token = &family.seeded.parent.token;
        match self
            .call::<Shown>(family, Method::GET, "/api/board", token, None)
            .await
        {
            Ok((shown, ..)) => family.ledger.borrow_mut().apply(shown.board),
            Err(err) => eprintln!("podo-load: GET /api/board failed: {err}"),
        }
    }

    async fn load_states(self: &Rc<Self>) {
        futures_util::stream::iter(self.families.clone())
            .for_each_concurrent(CONNECT_CONCURRENCY, |family| async move {
                self.reload(&family).await;
            })
            .await;
    }

    /// Opens both members' streams for every family (they reconnect by themselves for the
    /// rest of the run) and waits up to `within` for each to show its first event.
    async fn watch_streams(self: &Rc<Self>, within: Duration) {
        for family in &self.families {
            for member in 0..2 {
                actix_web::rt::spawn(self.clone().watch(family.clone(), member));
            }
        }
        let until = Instant::now() + within;
        while Instant::now() < until
            && self
                .families
                .iter()
                .any(|f| f.seen.iter().any(|s| s.get() < 0))
        {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One member's board stream, reconnected whenever it ends. A stream (re)opened must start
    /// at or after every version this client was acknowledged or shown: those are committed.
    async fn watch(self: Rc<Self>, family: Rc<BoardFamily>, member: usize) {
        let token = if member == 0 {
            &family.seeded.parent.token
        } else {
            &family.seeded.child.token
        };
        loop {
            let floor = family
                .ledger
                .borrow()
                .max_version
                .max(family.seen[member].get());
            if let Ok(mut stream) = SseStream::open(&family.client, &self.target, token).await {
                self.counters.opened();
                let mut last: Option<i64> = None;
                while let Some(version) = stream.next_version().await {
                    let behind = match last {
                        None => version < floor,
                        Some(_) => false,
                    };
                    let back = last.is_some_and(|l| version < l);
                    if behind || back {
                        let mut stats = self.stats.borrow_mut();
                        if behind {
                            stats.sse_behind += 1;
                        } else {
                            stats.sse_regressions += 1;
                        }
                        self.counters.violations.fetch_add(1, Relaxed);
                    }
                    last = Some(version);
                    family.seen[member].set(version);
                }
                self.counters.closed();
                self.stats.borrow_mut().sse_reconnects += 1;
            }
            actix_web::rt::time::sleep(retry_pause()).await;
        }
    }

    async fn drive(self: &Rc<Self>, interval: Option<Duration>) {
        let n = self.families.len();
        let tasks: Vec<_> = self
            .families
            .iter()
            .enumerate()
            .map(|(i, family)| {
                let (driver, family) = (self.clone(), family.clone());
                actix_web::rt::spawn(async move {
                    let mut pacer = Pacer::new(interval, i as f64 / n as f64);
                    while !driver.phases.stopped() {
                        pacer.tick().await;
                        if driver.phases.stopped() {
                            break;
                        }
                        driver.step(&family).await;
                    }
                })
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    }

    async fn step(&self, family: &BoardFamily) {
        let next = family.ledger.borrow().next();
        let Some(kind) = next else {
            return self.open_board(family).await;
        };
        let key = {
            let mut ledger = family.ledger.borrow_mut();
            ledger.next_key += 1;
            format!("{:x}-{}", self.run_id, ledger.next_key)
        };
        let (path, token, body) = match kind {
            Kind::Grant => (
                "/api/board/grant",
                &family.seeded.parent.token,
                json!({"count": 1, "key": key}),
            ),
            Kind::Attach => (
                "/api/board/attach",
                &family.seeded.child.token,
                json!({"key": key}),
            ),
        };
        self.counters.sent.fetch_add(1, Relaxed);
        self.gens.board_in_flight.fetch_add(1, Relaxed);
        let sent = Instant::now();
        let answer = self
            .call::<Board>(family, Method::POST, path, token, Some(&body))
            .await;
        self.gens.board_in_flight.fetch_sub(1, Relaxed);
        match answer {
            Ok((board, generation, retried)) => {
                self.gens.wrote(generation);
                self.counters.acked.fetch_add(1, Relaxed);
                if !retried {
                    self.stats.borrow_mut().ack.record(sent.elapsed());
                }
                let mut ledger = family.ledger.borrow_mut();
                let (claims, value) = match kind {
                    Kind::Grant => (&mut ledger.grants, board.granted),
                    Kind::Attach => (&mut ledger.attaches, board.attached),
                };
                claims
                    .entry(board.id)
                    .or_default()
                    .push((value, generation));
                ledger.apply(Some(board));
            }
            Err(err) if err.status == 0 || err.status >= 500 => {
                self.stats.borrow_mut().unresolved += 1;
                family.ledger.borrow_mut().unresolved[kind as usize] += 1;
            }
            Err(err) => {
                // What this client was acknowledged allowed the change; the server disagrees.
                if self.counters.errors.fetch_add(1, Relaxed) < 5 {
                    eprintln!("podo-load: {path} refused: {err}");
                }
                self.stats.borrow_mut().refused += 1;
                self.counters.violations.fetch_add(1, Relaxed);
                self.reload(family).await;
            }
        }
    }

    /// The board is full or gone: a new wish and a new board of [`NEW_BOARD_SIZE`].
    async fn open_board(&self, family: &BoardFamily) {
        let wish = self
            .call::<Created>(
                family,
                Method::POST,
                "/api/wishes",
                &family.seeded.child.token,
                Some(&json!({"name": "podo-load crash gift"})),
            )
            .await;
        let Ok((wish, ..)) = wish else {
            return;
        };
        let body = json!({"wish_id": wish.id, "size": NEW_BOARD_SIZE});
        match self
            .call::<Board>(
                family,
                Method::POST,
                "/api/board",
                &family.seeded.parent.token,
                Some(&body),
            )
            .await
        {
            Ok((board, generation, _)) => {
                self.gens.wrote(generation);
                self.stats.borrow_mut().boards_opened += 1;
                family.ledger.borrow_mut().apply(Some(board));
            }
            // A create whose answer was lost in a kill but that landed: 409 board_exists.
            Err(err) if (400..500).contains(&err.status) => self.reload(family).await,
            Err(_) => {}
        }
    }

    /// After the load: every family's final board and history against its ledger, and every
    /// stream against the final version.
    async fn verify(&self) -> BoardStats {
        let finals: RefCell<HashMap<i64, i64>> = RefCell::default();
        futures_util::stream::iter(self.families.iter())
            .for_each_concurrent(CONNECT_CONCURRENCY / 4, |family| {
                let finals = &finals;
                async move {
                    if let Some(version) = self.verify_family(family).await {
                        finals.borrow_mut().insert(family.seeded.id, version);
                    }
                }
            })
            .await;
        let finals = finals.into_inner();
        let at_final = |f: &BoardFamily| {
            finals
                .get(&f.seeded.id)
                .is_none_or(|&v| f.seen.iter().all(|s| s.get() == v))
        };
        let until = Instant::now() + DRAIN;
        while Instant::now() < until && !self.families.iter().all(|f| at_final(f)) {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stats = std::mem::take(&mut *self.stats.borrow_mut());
        for f in &self.families {
            if let Some(&v) = finals.get(&f.seeded.id) {
                stats.sse_stale += f.seen.iter().filter(|s| s.get() != v).count() as u64;
            }
        }
        stats
    }

    /// Checks one family; returns its final board version.
    async fn verify_family(&self, family: &BoardFamily) -> Option<i64> {
        let token = &family.seeded.parent.token;
        let shown = self
            .call::<Shown>(family, Method::GET, "/api/board", token, None)
            .await;
        let path = format!("/api/board/history?limit={HISTORY_LIMIT}");
        let history = self
            .call::<History>(family, Method::GET, &path, token, None)
            .await;
        let generations = self.gens.count();
        let mut stats = self.stats.borrow_mut();
        let ledger = family.ledger.borrow();
        for claims in ledger.grants.values().chain(ledger.attaches.values()) {
            for &(_, generation) in claims {
                stats.tally.acked(generation);
            }
        }
        let (Ok((shown, ..)), Ok((history, ..))) = (shown, history) else {
            stats.unreadable += 1;
            return None;
        };
        if history.events.len() >= HISTORY_LIMIT {
            stats.unreadable += 1;
            return None;
        }
        // Board id → (granted, attached) as the history has it.
        let mut counted: HashMap<i64, (i32, i32)> = HashMap::new();
        for event in &history.events {
            let entry = counted.entry(event.board_id).or_default();
            match event.kind.as_str() {
                "granted" => entry.0 += event.count,
                "attached" => entry.1 += 1,
                _ => {}
            }
        }
        let board = shown.board?;
        if counted.get(&board.id).copied().unwrap_or_default() != (board.granted, board.attached) {
            stats.disagree += 1;
        }
        let boards: HashSet<i64> = ledger.start.keys().copied().collect();
        let mut slack = ledger.unresolved;
        let none = Vec::new();
        for id in boards {
            let start = ledger.start.get(&id).copied().unwrap_or_default();
            let end = counted.get(&id).copied().unwrap_or_default();
            judge(
                ledger.grants.get(&id).unwrap_or(&none),
                start.0,
                end.0,
                &mut slack[Kind::Grant as usize],
                generations,
                &mut stats.tally,
            );
            judge(
                ledger.attaches.get(&id).unwrap_or(&none),
                start.1,
                end.1,
                &mut slack[Kind::Attach as usize],
                generations,
                &mut stats.tally,
            );
        }
        Some(board.version)
    }
}

/// Holds the acknowledged changes of one kind on one board against its final count. `claims`
/// are (the count each answer named, the generation that gave it); the board had `start` when
/// first seen and `end` at the end. Each count in `start+1 ..= end` must be named by exactly one
/// answer: a count named twice was lost by the earlier generation (the change was applied again
/// after it vanished), a count past `end` was lost, and a count nobody named was applied twice
/// (charged to the generation of the answer just below it), unless `slack` changes were given
/// up on unanswered. Acknowledged changes are not counted here.
fn judge(
    claims: &[(i32, usize)],
    start: i32,
    end: i32,
    slack: &mut i32,
    generations: usize,
    tally: &mut Tally,
) {
    let mut named: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &(value, generation) in claims {
        named.entry(value).or_default().push(generation);
    }
    for (&value, gens) in named.iter_mut() {
        gens.sort_unstable();
        let kept = if value > start && value <= end { 1 } else { 0 };
        for &generation in &gens[..gens.len() - kept] {
            tally.lost(generation);
        }
    }
    for value in start + 1..=end {
        if named.contains_key(&value) {
            continue;
        }
        if *slack > 0 {
            *slack -= 1;
            continue;
        }
        let below = named
            .range(..value)
            .next_back()
            .and_then(|(_, gens)| gens.last().copied());
        tally.duplicated(below.unwrap_or(generations.saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(claims: &[(i32, usize)], start: i32, end: i32, slack: i32) -> (Vec<u64>, Vec<u64>) {
        let mut tally = Tally::new(3);
        let mut slack = slack;
        judge(claims, start, end, &mut slack, 3, &mut tally);
        (tally.lost, tally.duplicated)
    }

    #[test]
    fn every_count_named_once_is_clean() {
        let claims = [(1, 0), (2, 0), (3, 1), (4, 2)];
        assert_eq!(judged(&claims, 0, 4, 0), (vec![0; 3], vec![0; 3]));
        assert_eq!(judged(&[(6, 1)], 5, 6, 0), (vec![0; 3], vec![0; 3]));
    }

    #[test]
    fn a_count_named_twice_was_lost_by_the_earlier_generation() {
        // Generation 0 acknowledged count 3, the kill lost it, generation 1 gave 3 out again.
        let claims = [(1, 0), (2, 0), (3, 0), (3, 1), (4, 1)];
        assert_eq!(judged(&claims, 0, 4, 0), (vec![1, 0, 0], vec![0; 3]));
    }

    #[test]
    fn a_count_past_the_end_was_lost() {
        assert_eq!(
            judged(&[(1, 0), (2, 1)], 0, 1, 0),
            (vec![0, 1, 0], vec![0; 3])
        );
    }

    #[test]
    fn a_count_nobody_named_was_applied_twice_unless_given_up() {
        let claims = [(1, 0), (2, 1), (4, 1)];
        assert_eq!(judged(&claims, 0, 4, 0), (vec![0; 3], vec![0, 1, 0]));
        assert_eq!(judged(&claims, 0, 4, 1), (vec![0; 3], vec![0; 3]));
        assert_eq!(judged(&[], 0, 1, 0), (vec![0; 3], vec![0, 0, 1]));
    }
}

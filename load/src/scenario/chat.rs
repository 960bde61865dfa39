//! `chat` and `storm`: every member holds a chat WebSocket; families send messages at a target
//! rate (or as fast as acks come back, with a window of messages in flight). Measures send → ack
//! on the sender's session and send → `message` on the partner's, and checks from the clients'
//! side that each session gets every committed message exactly once, in `seq` order, with no gap
//! after a `resume`. `storm` also drops a share of the sessions every few seconds; they reconnect,
//! resume from the last seq they saw, and resend what was never acknowledged (same `client_id`,
//! so the server must not store it twice). The `crash` scenario drives the same engine
//! ([`ChatEngine`]) while it kills and restarts the server, and then reads the history back.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use awc::ws;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use super::board::{add_server_figures, add_usage_figures};
use super::crash::{self, Generations, Tally};
use super::{CONNECT_CONCURRENCY, Common, Counters, Pacer, Phases, Worker, per_family_interval};
use crate::client::{SseStream, Target, open_ws, request};
use crate::probe::Metrics;
use crate::report::{Latency, Report};

/// How long after the load stops sessions get to catch up before missing messages are counted.
const DRAIN: Duration = Duration::from_secs(10);
/// A session whose connection failed tries again after this long.
const CONNECT_RETRY: Duration = Duration::from_millis(500);
/// A session the server dropped reconnects after this long (storms pick their own delay).
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// History page size when the crash scenario reads every message back (the API's maximum).
const HISTORY_PAGE: usize = 200;
/// Tries for one history page before the family counts as unreadable.
const HISTORY_TRIES: usize = 20;

#[derive(Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second over all families (0: as fast as acks come back, `--window` in flight
    /// per family).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages in flight per family when `--rate 0`.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Length of each message text.
    #[arg(long, default_value_t = 40)]
    pub text_bytes: usize,
    /// Also hold one board SSE stream per member open (for connection counts).
    #[arg(long)]
    pub sse: bool,
    /// With `--rate`: send every message at its scheduled time even when behind (never wait,
    /// never skip ahead) and measure its latencies from that time, not from when it went out.
    #[arg(long)]
    pub open_loop: bool,
}

#[derive(Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub chat: ChatArgs,
    /// Share of the chat sessions dropped in each storm.
    #[arg(long, default_value_t = 30.0)]
    pub drop_percent: f64,
    /// Seconds between storms.
    #[arg(long, default_value_t = 4)]
    pub every: u64,
    /// A dropped session reconnects after a random delay up to this many milliseconds.
    #[arg(long, default_value_t = 500)]
    pub reconnect_ms: u64,
}

#[derive(Clone, Copy)]
pub struct Storm {
    drop_share: f64,
    every: Duration,
    reconnect: Duration,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame {
    Hello {
        last_seq: i64,
    },
    Message {
        seq: i64,
        sender_id: i64,
        client_id: String,
    },
    Ack {
        client_id: String,
        seq: i64,
    },
    Resumed {
        last_seq: i64,
    },
    Error {
        code: String,
    },
    #[serde(other)]
    Other,
}

/// Per-worker results and violation counts.
#[derive(Default)]
pub struct ChatStats {
    pub(super) ack: Latency,
    pub(super) partner: Latency,
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) delivered: u64,
    pub(super) skipped: u64,
    pub(super) late: u64,
    pub(super) sessions: u64,
    pub(super) reconnects: u64,
    pub(super) connect_failures: u64,
    pub(super) server_errors: u64,
    /// A message at or below the session's last seq (delivered twice, or out of order).
    pub(super) duplicates: u64,
    /// Seqs skipped over by a session.
    pub(super) gaps: u64,
    /// An ack that came after the sending session already had the message.
    pub(super) acks_after_message: u64,
    /// One client_id acknowledged or delivered under two seqs (stored twice).
    pub(super) double_stored: u64,
    /// Acknowledged messages a session still lacked when the run ended.
    pub(super) missing_at_end: u64,
    /// Messages sent but never acknowledged by the end.
    pub(super) unacked_at_end: u64,
    /// A reconnect's `hello` whose last_seq is below what the session had already been given:
    /// committed messages the server no longer has.
    pub(super) rewound: u64,
    /// Resends (after a reconnect) of messages that turned out to be stored already.
    pub(super) resent_found_stored: u64,
}

impl ChatStats {
    pub(super) fn merge(mut self, o: ChatStats) -> ChatStats {
        self.ack.merge(&o.ack);
        self.partner.merge(&o.partner);
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.skipped += o.skipped;
        self.late += o.late;
        self.sessions += o.sessions;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
        self.server_errors += o.server_errors;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
        self.acks_after_message += o.acks_after_message;
        self.double_stored += o.double_stored;
        self.missing_at_end += o.missing_at_end;
        self.unacked_at_end += o.unacked_at_end;
        self.rewound += o.rewound;
        self.resent_found_stored += o.resent_found_stored;
        self
    }
}

struct Sent {
    at: Instant,
    acked: bool,
    partner_seen: bool,
    /// Sent again after a reconnect: its latency and ack order no longer say anything.
    resent: bool,
}

#[derive(Default)]
struct FamilyState {
    sent: HashMap<String, Sent>,
    /// client_id → the seq it was first acknowledged or delivered under.
    seqs: HashMap<String, i64>,
    max_acked: i64,
    next_id: u64,
    in_flight: usize,
    /// Crash scenario only: client_id → (the seq of its first ack, the server generation that
    /// gave it).
    acks: HashMap<String, (i64, usize)>,
}

/// One member's chat session, which survives reconnects: `last_seq` carries over to `resume`.
struct Session {
    member: usize,
    token: String,
    /// This member's node ([`Worker::member_target`]).
    target: Target,
    tx: RefCell<Option<mpsc::UnboundedSender<ws::Message>>>,
    kill: Notify,
    last_seq: Cell<i64>,
    /// Between a `resume` and its `resumed`.
    resuming: Cell<bool>,
    /// Caught up at least once (a `resumed` came).
    ready: Cell<bool>,
    /// The current connection is caught up (its resume finished): sends are allowed.
    live: Cell<bool>,
    /// Sent on this member's session and not acknowledged yet: (client_id, text).
    unacked: RefCell<Vec<(String, String)>>,
    /// The server generation the current connection was made to (crash scenario; else 0).
    generation: Cell<usize>,
}

impl Session {
    fn send(&self, frame: String) -> bool {
        match &*self.tx.borrow() {
            Some(tx) => tx.send(ws::Message::Text(frame.into())).is_ok(),
            None => false,
        }
    }

    fn usable(&self) -> bool {
        self.tx.borrow().is_some() && self.live.get() && !self.resuming.get()
    }
}

struct ChatFamily {
    ids: [i64; 2],
    client: Rc<awc::Client>,
    sessions: [Rc<Session>; 2],
    state: RefCell<FamilyState>,
    acked: Notify,
}

struct Ctx {
    target: Target,
    counters: Arc<Counters>,
    phases: Arc<Phases>,
    stats: RefCell<ChatStats>,
    storm: Option<Storm>,
    text: String,
    /// Distinguishes this run's client_ids from earlier runs on the same families: the server
    /// answers a reused client_id with the original seq and stores nothing.
    run_id: u32,
    /// Crash scenario: which server process is up, when each first took a write, what is in
    /// flight. Reconnects are then quicker ([`crash::retry_pause`]).
    gens: Option<Arc<Generations>>,
    /// Latencies from the scheduled send time ([`ChatEngine::set_open_loop`]).
    open_loop: Cell<bool>,
}

impl Ctx {
    fn violation(&self, n: u64) {
        self.counters.violations.fetch_add(n, Relaxed);
    }

    fn connect_retry(&self) -> Duration {
        if self.gens.is_some() {
            crash::retry_pause()
        } else {
            CONNECT_RETRY
        }
    }

    fn reconnect_pause(&self) -> Duration {
        if self.gens.is_some() {
            crash::retry_pause()
        } else {
            RECONNECT_PAUSE
        }
    }
}

pub fn run_chat(args: ChatArgs) -> Result<Option<Report>, String> {
    run(args, None)
}

pub fn run_storm(args: StormArgs) -> Result<Option<Report>, String> {
    let storm = Storm {
        drop_share: (args.drop_percent / 100.0).clamp(0.0, 1.0),
        every: Duration::from_secs(args.every.max(1)),
        reconnect: Duration::from_millis(args.reconnect_ms),
    };
    run(args.chat, Some(storm))
}

fn run(args: ChatArgs, storm: Option<Storm>) -> Result<Option<Report>, String> {
    let common = args.common.clone();
    let families = common.load_families()?;
    let total = families.len();
    let interval = per_family_interval(args.rate, total);
    let window = args.window.max(1);
    let text: String = "podo-load "
        .chars()
        .cycle()
        .take(args.text_bytes.clamp(1, 2000))
        .collect();
    let sse = args.sse;
    let open_loop = args.open_loop && interval.is_some();
    let run_id = rand::random::<u32>();
    let (run, handles) = super::spawn_workers(&common, families, move |worker| {
        let text = text.clone();
        async move {
            work(
                worker, interval, window, sse, storm, text, run_id, open_loop,
            )
            .await
        }
    })?;
    let addrs = common.addrs()?;
    let watched = common.watched();
    run.gather(0, Duration::from_secs(170))?;
    let before = Metrics::scrape_all(&addrs)?;
    let proc_before = watched.sample();
    let started = Instant::now();
    run.phases.release(0);
    run.run_for(common.duration, common.json);
    let elapsed = started.elapsed().as_secs_f64();
    let after = Metrics::scrape_all(&addrs)?;
    let proc_after = watched.sample();
    let peak = run.counters.peak_open.load(Relaxed);
    let stats = super::join(handles)?
        .into_iter()
        .fold(ChatStats::default(), ChatStats::merge);

    let name = if storm.is_some() { "storm" } else { "chat" };
    let mut report = Report::new(name, common.json);
    report.figure("nodes", addrs.len() as f64, "");
    report.figure("families", total as f64, "");
    report.figure("chat sessions", stats.sessions as f64, "");
    report.figure("peak open connections", peak as f64, "");
    report.figure("target rate", args.rate, "messages/s");
    report.figure("sent", stats.sent as f64, "");
    report.figure(
        "acknowledged messages/s",
        stats.acked as f64 / common.duration as f64,
        "messages/s",
    );
    report.figure(
        "server committed messages/s",
        after.delta(&before, "podo_messages_committed_total") / elapsed,
        "messages/s",
    );
    report.figure("deliveries", stats.delivered as f64, "");
    add_server_figures(&mut report, &before, &after, elapsed, stats.acked);
    add_usage_figures(
        &mut report,
        &proc_after.usage_since(&proc_before),
        elapsed,
        stats.acked,
        "message",
    );
    report.figure("sends skipped (session down)", stats.skipped as f64, "");
    report.figure("families behind schedule", stats.late as f64, "");
    report.figure("reconnects", stats.reconnects as f64, "");
    report.figure("connect failures", stats.connect_failures as f64, "");
    report.figure("server error frames", stats.server_errors as f64, "");
    report.figure("unacknowledged at end", stats.unacked_at_end as f64, "");
    report.latency("send → ack", stats.ack);
    report.latency("send → partner message", stats.partner);
    report.check("duplicated or reordered", stats.duplicates);
    report.check("gaps (missing seqs)", stats.gaps);
    report.check("missing at end", stats.missing_at_end);
    report.check("stored twice", stats.double_stored);
    report.check("ack after message", stats.acks_after_message);
    report.check("seqs rewound on reconnect", stats.rewound);
    if open_loop {
        report.note(
            "open loop: every message goes at its scheduled time (never waiting for acks, \
             bursting when behind); latencies count from that time",
        );
    } else if interval.is_some() {
        report.note(
            "paced: messages never wait for acks, but latencies count from the actual send, and \
             a family more than a second behind skips ahead (--open-loop measures from the \
             schedule)",
        );
    }
    if addrs.len() > 1 {
        report.note(
            "several nodes: family i's parent on node i mod n, its child on node (i+1) mod n, \
             so every partner delivery crosses nodes",
        );
    }
    Ok(Some(report))
}

#[allow(clippy::too_many_arguments)]
async fn work(
    worker: Worker,
    interval: Option<Duration>,
    window: usize,
    sse: bool,
    storm: Option<Storm>,
    text: String,
    run_id: u32,
    open_loop: bool,
) -> ChatStats {
    let engine = ChatEngine::new(&worker, text, run_id, storm, None);
    engine.set_open_loop(open_loop);
    engine.connect(sse).await;
    worker.phases.arrive(0).await;
    engine.drive(interval, window).await;
    engine.drain().await
}

/// One worker's chat families: their sessions, what they sent and what came back.
pub struct ChatEngine {
    ctx: Rc<Ctx>,
    families: Vec<Rc<ChatFamily>>,
}

/// What reading the whole history back found (crash scenario).
#[derive(Default)]
pub struct HistoryCheck {
    /// Acknowledged / lost / duplicated, by the server generation that acknowledged them.
    pub tally: Tally,
    /// Seqs missing from a family's history (it must be 1..n).
    pub gaps: u64,
    /// Acknowledged messages found under another seq than their ack said.
    pub moved: u64,
    /// Messages in the history that no ack of this run named (sent, never acknowledged).
    pub unacked_stored: u64,
    /// Messages read back.
    pub messages: u64,
    /// Families whose history could not be read.
    pub unreadable: u64,
}

#[derive(Deserialize)]
struct HistoryMessage {
    seq: i64,
    client_id: String,
}

#[derive(Deserialize)]
struct HistoryPage {
    messages: Vec<HistoryMessage>,
}

impl ChatEngine {
    pub fn new(
        worker: &Worker,
        text: String,
        run_id: u32,
        storm: Option<Storm>,
        gens: Option<Arc<Generations>>,
    ) -> ChatEngine {
        let ctx = Rc::new(Ctx {
            target: worker.target.clone(),
            counters: worker.counters.clone(),
            phases: worker.phases.clone(),
            stats: RefCell::default(),
            storm,
            text,
            run_id,
            gens,
            open_loop: Cell::new(false),
        });
        let families = worker
            .families
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let session = |member, token: &str| {
                    Rc::new(Session {
                        member,
                        token: token.to_owned(),
                        target: worker.member_target(i, member).clone(),
                        tx: RefCell::new(None),
                        kill: Notify::new(),
                        last_seq: Cell::new(0),
                        resuming: Cell::new(false),
                        ready: Cell::new(false),
                        live: Cell::new(false),
                        unacked: RefCell::default(),
                        generation: Cell::new(0),
                    })
                };
                Rc::new(ChatFamily {
                    ids: [f.parent.id, f.child.id],
                    client: worker.client(i),
                    sessions: [session(0, &f.parent.token), session(1, &f.child.token)],
                    state: RefCell::default(),
                    acked: Notify::new(),
                })
            })
            .collect();
        ChatEngine { ctx, families }
    }

    /// Opens every session (a bounded number at a time) and waits for each to catch up once.
    pub async fn connect(&self, sse: bool) {
        let ctx = &self.ctx;
        let jobs: Vec<(Rc<ChatFamily>, usize)> = self
            .families
            .iter()
            .flat_map(|f| [(f.clone(), 0), (f.clone(), 1)])
            .collect();
        futures_util::stream::iter(jobs)
            .for_each_concurrent(CONNECT_CONCURRENCY, |(family, member)| async move {
                let session = family.sessions[member].clone();
                ctx.stats.borrow_mut().sessions += 1;
                actix_web::rt::spawn(run_session(family.clone(), session.clone(), ctx.clone()));
                if sse {
                    open_sse(&family, &session, ctx).await;
                }
                while !session.ready.get() && !ctx.phases.stopped() {
                    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
    }

    /// Paced sends keep to their schedule and measure from it (see [`Pacer`]).
    pub fn set_open_loop(&self, on: bool) {
        self.ctx.open_loop.set(on);
    }

    /// Sends until the coordinator says stop: at `interval` per family, or (None) keeping
    /// `window` messages in flight per family.
    pub async fn drive(&self, interval: Option<Duration>, window: usize) {
        if let Some(storm) = self.ctx.storm {
            actix_web::rt::spawn(storms(self.families.clone(), storm, self.ctx.clone()));
        }
        let n = self.families.len();
        let drivers: Vec<_> = self
            .families
            .iter()
            .enumerate()
            .map(|(i, family)| {
                let family = family.clone();
                let ctx = self.ctx.clone();
                actix_web::rt::spawn(async move {
                    let open_loop = ctx.open_loop.get();
                    let mut pacer = Pacer::new(interval, i as f64 / n as f64).open_loop(open_loop);
                    let mut turn = i;
                    while !ctx.phases.stopped() {
                        let mut at = None;
                        if interval.is_some() {
                            let scheduled = pacer.tick().await;
                            at = open_loop.then_some(scheduled);
                        } else if family.state.borrow().in_flight >= window {
                            let _ = actix_web::rt::time::timeout(
                                Duration::from_millis(50),
                                family.acked.notified(),
                            )
                            .await;
                            continue;
                        }
                        if ctx.phases.stopped() {
                            break;
                        }
                        turn += 1;
                        if !family.send_next(turn % 2, &ctx, at) {
                            ctx.stats.borrow_mut().skipped += 1;
                            if interval.is_none() {
                                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    ctx.stats.borrow_mut().late += pacer.late;
                })
            })
            .collect();
        futures_util::future::join_all(drivers).await;
    }

    /// Gives every session time to get everything acknowledged (resumes included), then counts
    /// what is still missing or unacknowledged.
    pub async fn drain(&self) -> ChatStats {
        let caught_up = |f: &ChatFamily| {
            let max = f.state.borrow().max_acked;
            f.sessions
                .iter()
                .all(|s| s.usable() && s.last_seq.get() >= max && s.unacked.borrow().is_empty())
        };
        let until = Instant::now() + DRAIN;
        while Instant::now() < until && !self.families.iter().all(|f| caught_up(f)) {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stats = std::mem::take(&mut *self.ctx.stats.borrow_mut());
        for f in &self.families {
            let max = f.state.borrow().max_acked;
            for s in &f.sessions {
                stats.missing_at_end += (max - s.last_seq.get()).max(0) as u64;
                stats.unacked_at_end += s.unacked.borrow().len() as u64;
            }
        }
        stats
    }

    /// Reads every family's whole history through the API and holds it against the acks:
    /// seqs 1..n without gaps, each client_id once, each acknowledged one under its seq.
    /// `generations` is how many server processes there were.
    pub async fn verify_history(&self, generations: usize) -> HistoryCheck {
        let mut check = HistoryCheck {
            tally: Tally::new(generations),
            ..HistoryCheck::default()
        };
        let check_cell = RefCell::new(&mut check);
        futures_util::stream::iter(self.families.iter())
            .for_each_concurrent(CONNECT_CONCURRENCY / 4, |family| {
                let check_cell = &check_cell;
                async move {
                    let history = family.read_history(&self.ctx).await;
                    family.compare(history, generations, &mut check_cell.borrow_mut());
                }
            })
            .await;
        check
    }
}

impl ChatFamily {
    /// Every message of the family in seq order, read page by page with the parent's token;
    /// None if a page kept failing.
    async fn read_history(&self, ctx: &Ctx) -> Option<Vec<HistoryMessage>> {
        let mut messages: Vec<HistoryMessage> = Vec::new();
        loop {
            let after = messages.last().map_or(0, |m| m.seq);
            let url = ctx.target.url(&format!(
                "/api/chat/messages?after_seq={after}&limit={HISTORY_PAGE}"
            ));
            let mut page = None;
            for _ in 0..HISTORY_TRIES {
                match request::<HistoryPage>(
                    &self.client,
                    awc::http::Method::GET,
                    &url,
                    &self.sessions[0].token,
                    None,
                )
                .await
                {
                    Ok(p) => {
                        page = Some(p);
                        break;
                    }
                    Err(err) => {
                        eprintln!("podo-load: chat history: {err}");
                        actix_web::rt::time::sleep(crash::retry_pause()).await;
                    }
                }
            }
            let page = page?;
            let full = page.messages.len() >= HISTORY_PAGE;
            messages.extend(page.messages);
            if !full {
                return Some(messages);
            }
        }
    }

    /// Holds one family's history against what its sessions were acknowledged.
    fn compare(
        &self,
        history: Option<Vec<HistoryMessage>>,
        generations: usize,
        check: &mut HistoryCheck,
    ) {
        let st = self.state.borrow();
        // Messages nobody acknowledged are charged to the last generation that could have
        // stored them: the one that was up when they were sent is unknown, the last is not.
        let unknown = generations.saturating_sub(1);
        for &(_, generation) in st.acks.values() {
            check.tally.acked(generation);
        }
        let Some(history) = history else {
            check.unreadable += 1;
            return;
        };
        check.messages += history.len() as u64;
        let mut stored: HashMap<&str, i64> = HashMap::new();
        let mut expected = 1;
        for m in &history {
            if m.seq > expected {
                check.gaps += (m.seq - expected) as u64;
            }
            expected = m.seq + 1;
            if stored.insert(&m.client_id, m.seq).is_some() {
                let generation = st.acks.get(&m.client_id).map_or(unknown, |a| a.1);
                check.tally.duplicated(generation);
            } else if !st.acks.contains_key(&m.client_id) {
                check.unacked_stored += 1;
            }
        }
        for (client_id, &(seq, generation)) in &st.acks {
            match stored.get(client_id.as_str()) {
                None => check.tally.lost(generation),
                Some(&s) if s != seq => check.moved += 1,
                Some(_) => {}
            }
        }
    }

    /// Sends the next message from `member`'s session; false if that session is down. `at`: the
    /// time its latencies count from (open loop); None: now.
    fn send_next(&self, member: usize, ctx: &Ctx, at: Option<Instant>) -> bool {
        let session = &self.sessions[member];
        if !session.usable() {
            return false;
        }
        let client_id = {
            let mut st = self.state.borrow_mut();
            st.next_id += 1;
            format!("{:x}-{member}-{}", ctx.run_id, st.next_id)
        };
        let frame = json!({"type": "send", "client_id": client_id, "text": ctx.text}).to_string();
        if !session.send(frame) {
            return false;
        }
        session
            .unacked
            .borrow_mut()
            .push((client_id.clone(), ctx.text.clone()));
        if let Some(gens) = &ctx.gens {
            gens.chat_in_flight.fetch_add(1, Relaxed);
        }
        let mut st = self.state.borrow_mut();
        st.in_flight += 1;
        st.sent.insert(
            client_id,
            Sent {
                at: at.unwrap_or_else(Instant::now),
                acked: false,
                partner_seen: false,
                resent: false,
            },
        );
        ctx.stats.borrow_mut().sent += 1;
        ctx.counters.sent.fetch_add(1, Relaxed);
        true
    }

    /// Remembers the seq a client_id got; a second, different seq means it was stored twice.
    fn note_seq(&self, client_id: &str, seq: i64, ctx: &Ctx) {
        let mut st = self.state.borrow_mut();
        match st.seqs.get(client_id) {
            Some(&first) if first != seq => {
                ctx.stats.borrow_mut().double_stored += 1;
                ctx.violation(1);
            }
            Some(_) => {}
            None => {
                st.seqs.insert(client_id.to_owned(), seq);
            }
        }
    }

    fn on_frame(&self, session: &Session, frame: ServerFrame, ctx: &Ctx) {
        match frame {
            ServerFrame::Hello { last_seq } => {
                // As the web client does: ask for everything after what this session has (on the
                // first connection, what `hello` says is there). Until then the server holds live
                // messages back, for up to a second, so that none comes before the history.
                if !session.ready.get() {
                    session.last_seq.set(last_seq);
                } else if last_seq < session.last_seq.get() {
                    // The room's last committed seq is below what this session was given.
                    let lost = (session.last_seq.get() - last_seq) as u64;
                    ctx.stats.borrow_mut().rewound += lost;
                    ctx.violation(lost);
                }
                session.resuming.set(true);
                session.send(
                    json!({"type": "resume", "after_seq": session.last_seq.get()}).to_string(),
                );
            }
            ServerFrame::Message {
                seq,
                sender_id,
                client_id,
            } => {
                let last = session.last_seq.get();
                if seq <= last {
                    ctx.stats.borrow_mut().duplicates += 1;
                    ctx.violation(1);
                    return;
                }
                if seq > last + 1 {
                    ctx.stats.borrow_mut().gaps += (seq - last - 1) as u64;
                    ctx.violation((seq - last - 1) as u64);
                }
                session.last_seq.set(seq);
                ctx.stats.borrow_mut().delivered += 1;
                ctx.counters.delivered.fetch_add(1, Relaxed);
                self.note_seq(&client_id, seq, ctx);
                let sender = if sender_id == self.ids[0] { 0 } else { 1 };
                if sender != session.member && !session.resuming.get() {
                    let mut st = self.state.borrow_mut();
                    if let Some(sent) = st.sent.get_mut(&client_id)
                        && !sent.partner_seen
                    {
                        sent.partner_seen = true;
                        if !sent.resent {
                            ctx.stats.borrow_mut().partner.record(sent.at.elapsed());
                        }
                        if sent.acked {
                            st.sent.remove(&client_id);
                        }
                    }
                }
            }
            ServerFrame::Ack { client_id, seq } => {
                session
                    .unacked
                    .borrow_mut()
                    .retain(|(c, _)| *c != client_id);
                self.note_seq(&client_id, seq, ctx);
                let mut st = self.state.borrow_mut();
                st.max_acked = st.max_acked.max(seq);
                if let Some(gens) = &ctx.gens {
                    let generation = session.generation.get();
                    gens.wrote(generation);
                    st.acks
                        .entry(client_id.clone())
                        .or_insert((seq, generation));
                }
                let Some(sent) = st.sent.get_mut(&client_id) else {
                    return;
                };
                if sent.acked {
                    return;
                }
                sent.acked = true;
                let (at, resent, partner_seen) = (sent.at, sent.resent, sent.partner_seen);
                if partner_seen {
                    st.sent.remove(&client_id);
                }
                st.in_flight = st.in_flight.saturating_sub(1);
                drop(st);
                if let Some(gens) = &ctx.gens {
                    gens.chat_in_flight.fetch_sub(1, Relaxed);
                }
                let mut stats = ctx.stats.borrow_mut();
                stats.acked += 1;
                if !resent {
                    stats.ack.record(at.elapsed());
                    if seq <= session.last_seq.get() {
                        stats.acks_after_message += 1;
                        ctx.violation(1);
                    }
                } else if seq <= session.last_seq.get() {
                    // The resume brought it before this resend's ack: it had been stored
                    // before the connection dropped, and the ack names that seq.
                    stats.resent_found_stored += 1;
                }
                ctx.counters.acked.fetch_add(1, Relaxed);
                self.acked.notify_one();
            }
            ServerFrame::Resumed { last_seq } => {
                session.resuming.set(false);
                session.ready.set(true);
                session.live.set(true);
                let have = session.last_seq.get();
                if last_seq > have {
                    ctx.stats.borrow_mut().gaps += (last_seq - have) as u64;
                    ctx.violation((last_seq - have) as u64);
                    session.last_seq.set(last_seq);
                }
                // Whatever was in flight when the connection dropped goes again under the same
                // client_id: the server must ack the original seq if it had committed it.
                let unacked = session.unacked.borrow().clone();
                let mut st = self.state.borrow_mut();
                for (client_id, text) in unacked {
                    if let Some(sent) = st.sent.get_mut(&client_id) {
                        sent.resent = true;
                    }
                    session.send(
                        json!({"type": "send", "client_id": client_id, "text": text}).to_string(),
                    );
                }
            }
            ServerFrame::Error { code } => {
                if ctx.counters.errors.fetch_add(1, Relaxed) < 5 {
                    eprintln!("podo-load: chat error frame: {code}");
                }
                ctx.stats.borrow_mut().server_errors += 1;
            }
            ServerFrame::Other => {}
        }
    }
}

/// Keeps one member's chat session connected until the worker ends: connects, reads frames,
/// and after a drop (storm or server) reconnects and resumes.
async fn run_session(family: Rc<ChatFamily>, session: Rc<Session>, ctx: Rc<Ctx>) {
    loop {
        let (mut sink, mut stream) =
            match open_ws(&family.client, &session.target, &session.token).await {
                Ok(halves) => halves,
                Err(err) => {
                    ctx.stats.borrow_mut().connect_failures += 1;
                    if ctx.counters.connect_failed.fetch_add(1, Relaxed) < 3 {
                        eprintln!("podo-load: chat connect failed: {err}");
                    }
                    actix_web::rt::time::sleep(ctx.connect_retry()).await;
                    continue;
                }
            };
        if let Some(gens) = &ctx.gens {
            session.generation.set(gens.current());
        }
        ctx.counters.opened();
        let (tx, mut rx) = mpsc::unbounded_channel::<ws::Message>();
        *session.tx.borrow_mut() = Some(tx.clone());
        let writer = actix_web::rt::spawn(async move {
            while let Some(message) = rx.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let killed = loop {
            tokio::select! {
                _ = session.kill.notified() => break true,
                frame = stream.next() => match frame {
                    Some(Ok(ws::Frame::Text(bytes))) => match serde_json::from_slice(&bytes) {
                        Ok(frame) => family.on_frame(&session, frame, &ctx),
                        Err(err) => {
                            ctx.stats.borrow_mut().server_errors += 1;
                            eprintln!("podo-load: unreadable chat frame: {err}");
                        }
                    },
                    Some(Ok(ws::Frame::Ping(bytes))) => {
                        let _ = tx.send(ws::Message::Pong(bytes));
                    }
                    Some(Ok(ws::Frame::Close(_))) | Some(Err(_)) | None => break false,
                    Some(Ok(_)) => {}
                },
            }
        };
        // Dropping both halves closes the socket at once, as a lost network would.
        *session.tx.borrow_mut() = None;
        session.live.set(false);
        drop(tx);
        writer.abort();
        drop(stream);
        ctx.counters.closed();
        session.resuming.set(false);
        ctx.stats.borrow_mut().reconnects += 1;
        ctx.counters.reconnects.fetch_add(1, Relaxed);
        let pause = match (killed, ctx.storm) {
            (true, Some(storm)) => storm.reconnect.mul_f64(rand::random::<f64>()),
            _ => ctx.reconnect_pause(),
        };
        actix_web::rt::time::sleep(pause).await;
    }
}

/// Every `storm.every`, drops a random share of this worker's chat sessions.
async fn storms(families: Vec<Rc<ChatFamily>>, storm: Storm, ctx: Rc<Ctx>) {
    loop {
        actix_web::rt::time::sleep(storm.every).await;
        if ctx.phases.stopped() {
            return;
        }
        for family in &families {
            for session in &family.sessions {
                if session.usable() && rand::random::<f64>() < storm.drop_share {
                    session.kill.notify_one();
                }
            }
        }
    }
}

/// Holds a board SSE stream open next to the chat session (it only counts as a connection).
async fn open_sse(family: &ChatFamily, session: &Session, ctx: &Rc<Ctx>) {
    match SseStream::open(&family.client, &session.target, &session.token).await {
        Ok(mut stream) => {
            ctx.counters.opened();
            let counters = ctx.counters.clone();
            actix_web::rt::spawn(async move {
                while stream.next_version().await.is_some() {}
                counters.closed();
            });
        }
        Err(err) => {
            if ctx.counters.connect_failed.fetch_add(1, Relaxed) < 3 {
                eprintln!("podo-load: SSE stream refused: {err}");
            }
        }
    }
}

//! `ws-idle`: many open chat WebSockets doing nothing, and with `--mixed` one SSE stream next to
//! each of them: what each connection costs the server in memory (issue #21). Every socket must
//! have had its `hello` (every stream its first board event) and still be open after the hold.
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use awc::ws;
use clap::Args;
use futures_util::{SinkExt, StreamExt};

use super::{CONNECT_CONCURRENCY, Common, Counters, Phases};
use crate::client::{SseStream, Target, WsSink, WsStream, open_ws};
use crate::probe::{self, Metrics};
use crate::report::Report;

#[derive(Args)]
pub struct WsIdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// One board SSE stream next to each member's socket (two connections per member).
    #[arg(long)]
    pub mixed: bool,
    /// Seconds the connections sit idle after they are all open (server RSS is read at the
    /// start and the end).
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
}

/// Lets the server settle (allocator, lazily started actors) before memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a socket may take from the upgrade to its `hello`, and a stream to its first event.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// How long all the connections of the run may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(170);

/// What one worker saw.
#[derive(Default, Clone, Copy)]
struct IdleStats {
    sockets: u64,
    hellos: u64,
    streams: u64,
    first_events: u64,
    failed: u64,
}

impl IdleStats {
    fn merge(mut self, o: IdleStats) -> IdleStats {
        self.sockets += o.sockets;
        self.hellos += o.hellos;
        self.streams += o.streams;
        self.first_events += o.first_events;
        self.failed += o.failed;
        self
    }
}

pub fn run(args: WsIdleArgs) -> Result<Option<Report>, String> {
    let common = args.common.clone();
    let families = common.load_families()?;
    let total = families.len();
    let mixed = args.mixed;
    let per_member = if mixed { 2 } else { 1 };
    let expected = (total * 2 * per_member) as i64;
    let (run, handles) = super::spawn_workers(&common, families, move |worker| async move {
        worker.phases.arrive(0).await;
        let stats = Rc::new(RefCell::new(IdleStats::default()));
        let jobs: Vec<(Rc<awc::Client>, String)> = worker
            .families
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                let client = worker.client(i);
                [
                    (client.clone(), f.parent.token.clone()),
                    (client, f.child.token.clone()),
                ]
            })
            .collect();
        let (target, counters, phases) = (&worker.target, &worker.counters, &worker.phases);
        futures_util::stream::iter(jobs)
            .for_each_concurrent(CONNECT_CONCURRENCY, |(client, token)| {
                let stats = stats.clone();
                async move {
                    open_socket(&client, target, &token, counters, phases, &stats).await;
                    if mixed {
                        open_stream(&client, target, &token, counters, phases, &stats).await;
                    }
                }
            })
            .await;
        worker.phases.arrive(1).await;
        *stats.borrow()
    })?;
    let target = common.target()?;
    let quiet = common.json;

    // Phase 0: the workers are up, nothing is open yet.
    run.gather(0, Duration::from_secs(60))?;
    std::thread::sleep(SETTLE);
    let rss_before = probe::sample(common.server_pid());
    let opening = Instant::now();
    run.phases.release(0);

    // Phase 1: every connection is open and has had its first frame.
    run.gather(1, OPEN_TIMEOUT)?;
    let open_secs = opening.elapsed().as_secs_f64();
    let opened = run.counters.open.load(Relaxed);
    if !quiet {
        eprintln!(
            "{opened} connections open in {open_secs:.1} s; idle for {} s",
            args.hold
        );
    }
    std::thread::sleep(SETTLE);
    let rss_open = probe::sample(common.server_pid());
    let server = Metrics::scrape(target.addr)?;
    std::thread::sleep(Duration::from_secs(args.hold));
    let rss_held = probe::sample(common.server_pid());
    let alive = run.counters.open.load(Relaxed);
    let closed_early = run.counters.errors.load(Relaxed);
    run.phases.stop();
    run.phases.release(1);
    let stats = super::join(handles)?
        .into_iter()
        .fold(IdleStats::default(), IdleStats::merge);

    let connections = (stats.sockets + stats.streams) as f64;
    let mut report = Report::new(if mixed { "ws-idle --mixed" } else { "ws-idle" }, quiet);
    report.figure("families", total as f64, "");
    report.figure("websockets open", stats.sockets as f64, "");
    report.figure("sse streams open", stats.streams as f64, "");
    report.figure("server ws sessions", server.get("podo_ws_sessions"), "");
    report.figure("server sse sessions", server.get("podo_sse_sessions"), "");
    report.figure("seconds to open all", open_secs, "s");
    if let (Some(before), Some(open)) = (rss_before, rss_open) {
        let per = (open.rss_kib as f64 - before.rss_kib as f64) / connections.max(1.0);
        report.figure("server RSS before", before.rss_kib as f64 / 1024.0, "MiB");
        report.figure(
            "server RSS with connections",
            open.rss_kib as f64 / 1024.0,
            "MiB",
        );
        report.figure("server RSS per idle connection", per, "KiB");
        if let Some(held) = rss_held {
            let per = (held.rss_kib as f64 - before.rss_kib as f64) / connections.max(1.0);
            report.figure("server RSS per idle connection after the hold", per, "KiB");
        }
    }
    if let (Some(start), Some(end)) = (rss_open, rss_held) {
        report.figure("server CPU while idle", end.cores_since(&start), "cores");
    }
    report.check("connections refused", stats.failed);
    report.check(
        "sockets without hello",
        stats.sockets.saturating_sub(stats.hellos),
    );
    report.check(
        "streams without a first event",
        stats.streams.saturating_sub(stats.first_events),
    );
    report.check("connections closed during the hold", closed_early);
    report.check(
        "connections missing at the end",
        expected.saturating_sub(alive).max(0) as u64,
    );
    Ok(Some(report))
}

/// Opens one chat socket, waits for its `hello`, and leaves a task that answers pings until the
/// worker's runtime ends (which drops the socket).
async fn open_socket(
    client: &awc::Client,
    target: &Target,
    token: &str,
    counters: &std::sync::Arc<Counters>,
    phases: &std::sync::Arc<Phases>,
    stats: &Rc<RefCell<IdleStats>>,
) {
    let (mut sink, mut stream) = match open_ws(client, target, token).await {
        Ok(halves) => halves,
        Err(err) => {
            stats.borrow_mut().failed += 1;
            if counters.connect_failed.fetch_add(1, Relaxed) < 3 {
                eprintln!("podo-load: chat connect failed: {err}");
            }
            return;
        }
    };
    stats.borrow_mut().sockets += 1;
    let hello =
        actix_web::rt::time::timeout(FIRST_FRAME_TIMEOUT, wait_for_hello(&mut sink, &mut stream))
            .await;
    if !matches!(hello, Ok(true)) {
        if counters.connect_failed.fetch_add(1, Relaxed) < 3 {
            eprintln!("podo-load: a chat socket had no hello");
        }
        return;
    }
    stats.borrow_mut().hellos += 1;
    counters.opened();
    let (counters, phases) = (counters.clone(), phases.clone());
    actix_web::rt::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(ws::Frame::Ping(payload)) => {
                    if sink.send(ws::Message::Pong(payload)).await.is_err() {
                        break;
                    }
                }
                Ok(ws::Frame::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        counters.closed();
        if !phases.stopped() {
            counters.errors.fetch_add(1, Relaxed);
        }
    });
}

/// Reads frames (answering pings) until the `hello`; false if the socket ended first.
async fn wait_for_hello(sink: &mut WsSink, stream: &mut WsStream) -> bool {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(ws::Frame::Text(bytes)) => {
                let kind = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned));
                if kind.as_deref() == Some("hello") {
                    return true;
                }
            }
            Ok(ws::Frame::Ping(payload)) => {
                if sink.send(ws::Message::Pong(payload)).await.is_err() {
                    return false;
                }
            }
            Ok(ws::Frame::Close(_)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    false
}

/// Opens one board SSE stream, waits for its first event, and leaves a task reading it until the
/// worker's runtime ends.
async fn open_stream(
    client: &awc::Client,
    target: &Target,
    token: &str,
    counters: &std::sync::Arc<Counters>,
    phases: &std::sync::Arc<Phases>,
    stats: &Rc<RefCell<IdleStats>>,
) {
    let mut stream = match SseStream::open(client, target, token).await {
        Ok(stream) => stream,
        Err(err) => {
            stats.borrow_mut().failed += 1;
            if counters.connect_failed.fetch_add(1, Relaxed) < 3 {
                eprintln!("podo-load: SSE stream refused: {err}");
            }
            return;
        }
    };
    stats.borrow_mut().streams += 1;
    let first = actix_web::rt::time::timeout(FIRST_FRAME_TIMEOUT, stream.next_version()).await;
    if !matches!(first, Ok(Some(_))) {
        if counters.connect_failed.fetch_add(1, Relaxed) < 3 {
            eprintln!("podo-load: an SSE stream had no first event");
        }
        return;
    }
    stats.borrow_mut().first_events += 1;
    counters.opened();
    let (counters, phases) = (counters.clone(), phases.clone());
    actix_web::rt::spawn(async move {
        while stream.next_version().await.is_some() {}
        counters.closed();
        if !phases.stopped() {
            counters.errors.fetch_add(1, Relaxed);
        }
    });
}

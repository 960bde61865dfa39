//! `sse-idle`: many open SSE streams doing nothing (what each costs the server in memory, and
//! that idle streams cost no database queries), then board changes at a target rate measured
//! from the change to its delivery on the last stream of the family.
use std::time::{Duration, Instant};

use clap::Args;

use super::board::{BoardEngine, BoardStats, add_server_figures, add_usage_figures};
use super::{Common, per_family_interval};
use crate::probe::{self, Metrics};
use crate::report::Report;

#[derive(Args)]
pub struct SseIdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// SSE streams per member (two members per family).
    #[arg(long, default_value_t = 1)]
    pub streams_per_member: usize,
    /// Seconds the streams sit idle while queries are counted.
    #[arg(long, default_value_t = 10)]
    pub idle: u64,
    /// Board changes per second after the idle window (0 skips the change phase).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
}

/// Lets the server settle (allocator, lazily loaded actors) before memory is read.
const SETTLE: Duration = Duration::from_secs(3);

pub fn run(args: SseIdleArgs) -> Result<Option<Report>, String> {
    let common = args.common.clone();
    let families = common.load_families()?;
    let total = families.len();
    let interval = per_family_interval(args.rate, total);
    let streams = args.streams_per_member.max(1);
    let change_phase = args.rate > 0.0;
    let (run, handles) = super::spawn_workers(&common, families, move |worker| async move {
        let engine = BoardEngine::new(&worker, streams);
        engine.load_states(&worker).await;
        worker.phases.arrive(0).await;
        engine.open_streams(&worker, Duration::from_secs(120)).await;
        worker.phases.arrive(1).await;
        if change_phase {
            engine.drive(&worker, interval, false).await;
        }
        engine.finish()
    })?;
    let addrs = common.addrs()?;
    // RSS and CPU while idle are one server's; with several nodes, the per-node figures of the
    // change phase say what each used.
    let pid = if addrs.len() == 1 {
        common.server_pid()
    } else {
        None
    };
    let watched = common.watched();
    let quiet = common.json;

    // Phase 0: every family's board is loaded on the server, no stream is open yet.
    run.gather(0, Duration::from_secs(120))?;
    std::thread::sleep(SETTLE);
    let rss_before = probe::sample(pid);
    let opening = Instant::now();
    run.phases.release(0);

    // Phase 1: every stream is open and has its first event.
    run.gather(1, Duration::from_secs(170))?;
    let open_secs = opening.elapsed().as_secs_f64();
    let open = run.counters.open.load(std::sync::atomic::Ordering::Relaxed);
    if !quiet {
        eprintln!(
            "{open} streams open in {open_secs:.1} s; idle for {} s",
            args.idle
        );
    }
    std::thread::sleep(SETTLE);
    let idle_start = Metrics::scrape_all(&addrs)?;
    let idle_started = Instant::now();
    let rss_open = probe::sample(pid);
    std::thread::sleep(Duration::from_secs(args.idle));
    let idle_end = Metrics::scrape_all(&addrs)?;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle_cpu = probe::sample(pid);

    // Phase 2: changes at the target rate.
    let before = Metrics::scrape_all(&addrs)?;
    let proc_before = watched.sample();
    let started = Instant::now();
    run.phases.release(1);
    if change_phase {
        run.run_for(common.duration, quiet);
    } else {
        run.phases.stop();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = Metrics::scrape_all(&addrs)?;
    let proc_after = watched.sample();
    let stats = super::join(handles)?
        .into_iter()
        .fold(BoardStats::default(), BoardStats::merge);

    let mut report = Report::new("sse-idle", quiet);
    report.figure("nodes", addrs.len() as f64, "");
    report.figure("families", total as f64, "");
    report.figure("sse streams open", open as f64, "");
    report.figure(
        "server sse sessions",
        idle_start.get("podo_sse_sessions"),
        "",
    );
    report.figure("seconds to open all", open_secs, "s");
    if let (Some(before), Some(open)) = (rss_before, rss_open) {
        let per = (open.rss_kib as f64 - before.rss_kib as f64) / (stats.streams as f64).max(1.0);
        report.figure(
            "server RSS before streams",
            before.rss_kib as f64 / 1024.0,
            "MiB",
        );
        report.figure(
            "server RSS with streams",
            open.rss_kib as f64 / 1024.0,
            "MiB",
        );
        report.figure("server RSS per idle stream", per, "KiB");
    }
    if let (Some(start), Some(end)) = (rss_open, idle_cpu) {
        report.figure("server CPU while idle", end.cores_since(&start), "cores");
    }
    report.figure(
        "db queries/s while idle",
        idle_end.delta(&idle_start, "podo_db_statements_total") / idle_secs,
        "",
    );
    if change_phase {
        report.figure("target rate", args.rate, "changes/s");
        report.figure(
            "acknowledged changes/s",
            stats.changes as f64 / common.duration as f64,
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
        report.figure("errors", stats.errors as f64, "");
        report.figure("streams ended early", stats.streams_ended as f64, "");
        report.latency("change → ack", stats.ack);
        report.latency("change → last SSE of family", stats.sse);
        report.check("undelivered changes", stats.undelivered);
        report.check("version regressions", stats.regressions);
    }
    Ok(Some(report))
}

//! `signup`: a burst of sign-ups and then logins through the API, `--concurrency` requests in
//! flight, and the server's memory after it. Every request costs an argon2id hash (19 MiB), so
//! this is what an unbounded hashing path would blow up: 1,000 families (2,000 sign-ups and
//! 2,000 logins) at 64 at once once left the server at ~10 GiB RSS.
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::client::{Target, make_client, source_ip};
use crate::probe;
use crate::report::{Latency, Report};

/// How often a request refused with 503 `busy` is tried again (after its `Retry-After`).
const BUSY_RETRIES: u32 = 5;
/// Past this the process exits whatever it is doing.
const HARD_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Args)]
pub struct SignupArgs {
    /// The server (loopback only), e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Families to create: a parent and a child each, so twice as many sign-ups and logins.
    #[arg(long, default_value_t = 1000)]
    pub families: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The server's pid, to read its RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct Phase {
    latency: Latency,
    ok: u64,
    busy: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// Peak resident memory (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn run(args: SignupArgs) -> Result<Option<Report>, String> {
    let target = Target::parse(&args.server)?;
    std::thread::spawn(|| {
        std::thread::sleep(HARD_DEADLINE);
        eprintln!("podo-load: hard deadline of {HARD_DEADLINE:?} passed; exiting");
        std::process::exit(2);
    });
    // Distinct logins per run, so that runs against one database do not collide.
    let run_id = format!("{:04x}", rand::random::<u16>());
    let logins: Vec<(String, &'static str)> = (0..args.families)
        .flat_map(|i| {
            [
                (format!("su{run_id}_{i}_p"), "parent"),
                (format!("su{run_id}_{i}_c"), "child"),
            ]
        })
        .collect();
    let concurrency = args.concurrency.max(1);
    let rss_before = probe::sample(args.server_pid);
    let started = Instant::now();
    let (signups, signup_secs, logins_phase, login_secs) =
        actix_web::rt::System::new().block_on(async {
            let client = make_client(source_ip(0, 1));
            let at = Instant::now();
            let signups = drive(&client, &target, "/api/auth/signup", &logins, concurrency, |login, role| {
                json!({"login": login, "name": "load", "password": "load-password", "role": role})
            })
            .await;
            let signup_secs = at.elapsed().as_secs_f64();
            let at = Instant::now();
            let logins_done = drive(&client, &target, "/api/auth/login", &logins, concurrency, |login, _| {
                json!({"login": login, "password": "load-password"})
            })
            .await;
            (signups, signup_secs, logins_done, at.elapsed().as_secs_f64())
        });
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = probe::sample(args.server_pid);

    let mut report = Report::new("signup", args.json);
    report.figure("families", args.families as f64, "");
    report.figure("concurrency", concurrency as f64, "");
    report.figure("sign-ups", signups.ok as f64, "");
    report.figure("logins", logins_phase.ok as f64, "");
    report.figure(
        "sign-ups/s",
        signups.ok as f64 / signup_secs.max(1e-9),
        "/s",
    );
    report.figure(
        "logins/s",
        logins_phase.ok as f64 / login_secs.max(1e-9),
        "/s",
    );
    report.figure("seconds", elapsed, "s");
    report.figure(
        "busy answers (503, retried)",
        (signups.busy + logins_phase.busy) as f64,
        "",
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.figure("server RSS before", before.rss_kib as f64 / 1024.0, "MiB");
        report.figure("server RSS after", after.rss_kib as f64 / 1024.0, "MiB");
        report.figure("server CPU", after.cores_since(&before), "cores");
    }
    if let Some(peak) = args.server_pid.and_then(peak_rss_kib) {
        report.figure("server peak RSS", peak as f64 / 1024.0, "MiB");
    }
    for (name, phase) in [("sign-up", &signups), ("login", &logins_phase)] {
        if let Some(failure) = &phase.first_failure {
            eprintln!("podo-load: first failed {name}: {failure}");
        }
    }
    report.check("failed sign-ups", signups.failed);
    report.check("failed logins", logins_phase.failed);
    report.latency("sign-up", signups.latency);
    report.latency("login", logins_phase.latency);
    Ok(Some(report))
}

/// POSTs one request per login, `concurrency` at a time; 503 `busy` is retried after its
/// `Retry-After`.
async fn drive(
    client: &awc::Client,
    target: &Target,
    path: &str,
    logins: &[(String, &'static str)],
    concurrency: usize,
    body: impl Fn(&str, &str) -> Value,
) -> Phase {
    let url = target.url(path);
    let results: Vec<_> = futures_util::stream::iter(logins.iter().map(|(login, role)| {
        let payload = body(login, role);
        let url = url.clone();
        async move {
            let mut busy = 0;
            loop {
                let at = Instant::now();
                let answer = client.post(&url).send_json(&payload).await;
                let took = at.elapsed();
                let mut res = match answer {
                    Ok(res) => res,
                    Err(err) => return (Err(format!("transport: {err}")), took, busy),
                };
                let status = res.status().as_u16();
                let bytes = res.body().limit(1 << 20).await.unwrap_or_default();
                if status == 503 && busy < BUSY_RETRIES {
                    busy += 1;
                    let wait = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(1);
                    actix_web::rt::time::sleep(Duration::from_secs(wait)).await;
                    continue;
                }
                if (200..300).contains(&status) {
                    return (Ok(()), took, busy);
                }
                let detail = String::from_utf8_lossy(&bytes).into_owned();
                return (Err(format!("{status} {detail}")), took, busy);
            }
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let mut phase = Phase::default();
    for (outcome, took, busy) in results {
        phase.busy += u64::from(busy);
        match outcome {
            Ok(()) => {
                phase.ok += 1;
                phase.latency.record(took);
            }
            Err(err) => {
                phase.failed += 1;
                phase.first_failure.get_or_insert(err);
            }
        }
    }
    phase
}

//! `push`: web push delivery at a target rate. podo-load runs an HTTPS push service on loopback
//! (certificate and key from `--sink-cert`/`--sink-key`, whose CA the server must trust through
//! `SSL_CERT_FILE`, with `PODO_PUSH_ALLOW_PRIVATE=true`), subscribes every family's child to it,
//! and has the parents send chat messages while the children are away, so that each message is
//! one push. The push service decrypts every body with the child's key (RFC 8291) and measures
//! send → push received, the whole path: commit, presence check, dispatcher, encryption, VAPID,
//! TLS, HTTP.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use super::{Common, Pacer, Worker, per_family_interval};
use crate::client::open_ws;
use crate::probe::{self, Metrics};
use crate::report::{Latency, Report};

/// How long after the load stops pushes may still arrive before they count as missing.
const DRAIN: Duration = Duration::from_secs(15);

#[derive(Args, Clone)]
pub struct PushArgs {
    #[command(flatten)]
    pub common: Common,
    /// Pushes (chat messages to an absent child) per second over all families.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// PEM certificate chain of the push service (for 127.0.0.1).
    #[arg(long)]
    pub sink_cert: PathBuf,
    /// PEM private key of the push service.
    #[arg(long)]
    pub sink_key: PathBuf,
}

/// What the push service shares with the workers.
#[derive(Default)]
struct Sink {
    /// family id → the child's subscription keys.
    keys: Mutex<HashMap<i64, (ece::EcKeyComponents, [u8; 16])>>,
    /// The text of each message → when it was sent.
    sent: Mutex<HashMap<String, Instant>>,
    latency: Mutex<Latency>,
    received: AtomicU64,
    /// Bodies that did not decrypt, or pushes of nothing sent (or of a message pushed twice).
    unknown: AtomicU64,
}

async fn receive(req: HttpRequest, body: web::Bytes, sink: web::Data<Sink>) -> HttpResponse {
    let arrived = Instant::now();
    let family: i64 = req
        .match_info()
        .get("family")
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let keys = sink.keys.lock().ok().and_then(|k| k.get(&family).cloned());
    let text = keys
        .and_then(|(components, auth)| ece::decrypt(&components, &auth, &body).ok())
        .and_then(|plain| serde_json::from_slice::<serde_json::Value>(&plain).ok())
        .and_then(|n| n["body"].as_str().map(str::to_owned));
    match text.and_then(|text| sink.sent.lock().ok()?.remove(&text)) {
        Some(at) => {
            sink.received.fetch_add(1, Relaxed);
            if let Ok(mut latency) = sink.latency.lock() {
                latency.record(arrived - at);
            }
        }
        None => {
            sink.unknown.fetch_add(1, Relaxed);
        }
    }
    HttpResponse::Created().finish()
}

fn tls_config(args: &PushArgs) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&args.sink_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", args.sink_cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.sink_key)
        .map_err(|e| format!("{}: {e}", args.sink_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("push service TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Starts the push service on its own thread; returns its base URL.
fn start_sink(sink: web::Data<Sink>, tls: rustls::ServerConfig) -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let base = format!(
        "https://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    std::thread::Builder::new()
        .name("push-sink".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(sink.clone())
                        .route("/p/{family}", web::post().to(receive))
                })
                .workers(1)
                .disable_signals()
                .listen_rustls_0_23(listener, tls);
                match server {
                    Ok(server) => {
                        let _ = server.run().await;
                    }
                    Err(err) => eprintln!("podo-load: push service: {err}"),
                }
            })
        })
        .map_err(|e| e.to_string())?;
    Ok(base)
}

#[derive(Default)]
struct PushStats {
    sent: u64,
    acked: u64,
    failed_setup: u64,
    late: u64,
}

pub fn run(args: PushArgs) -> Result<Option<Report>, String> {
    let common = args.common.clone();
    let families = common.load_families()?;
    let total = families.len();
    let sink = web::Data::new(Sink::default());
    let base = start_sink(sink.clone(), tls_config(&args)?)?;
    let interval = per_family_interval(args.rate, total);
    let shared = sink.clone().into_inner();
    // Texts (and client_ids) unique to this run: a client_id sent in an earlier run on the same
    // families is acknowledged with its old seq and stores (and pushes) nothing.
    let run_id = rand::random::<u32>();
    let (run, handles) = super::spawn_workers(&common, families, move |worker| {
        let sink = shared.clone();
        let base = base.clone();
        async move { work(worker, sink, base, interval, run_id).await }
    })?;
    let target = common.target()?;
    run.gather(0, Duration::from_secs(170))?;
    let before = Metrics::scrape(target.addr)?;
    let proc_before = probe::sample(common.server_pid());
    run.phases.release(0);
    run.run_for(common.duration, common.json);
    let proc_after = probe::sample(common.server_pid());
    let stats = super::join(handles)?
        .into_iter()
        .fold(PushStats::default(), |a, b| PushStats {
            sent: a.sent + b.sent,
            acked: a.acked + b.acked,
            failed_setup: a.failed_setup + b.failed_setup,
            late: a.late + b.late,
        });
    let drain_until = Instant::now() + DRAIN;
    while sink.received.load(Relaxed) < stats.acked && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = Metrics::scrape(target.addr)?;
    let received = sink.received.load(Relaxed);

    let mut report = Report::new("push", common.json);
    report.figure("families", total as f64, "");
    report.figure("target rate", args.rate, "pushes/s");
    report.figure("messages acknowledged", stats.acked as f64, "");
    report.figure(
        "pushes received/s",
        received as f64 / common.duration as f64,
        "pushes/s",
    );
    report.figure(
        "server pushes sent",
        after.delta(&before, "podo_pushes_sent_total"),
        "",
    );
    report.figure(
        "server pushes failed",
        after.delta(&before, "podo_pushes_failed_total"),
        "",
    );
    report.figure("families not set up", stats.failed_setup as f64, "");
    report.figure("families behind schedule", stats.late as f64, "");
    super::board::add_process_figures(&mut report, proc_before, proc_after);
    let latency = std::mem::take(&mut *sink.latency.lock().map_err(|e| e.to_string())?);
    report.latency("send → push received", latency);
    report.check("pushes missing", stats.acked.saturating_sub(received));
    report.check(
        "pushes undecryptable, unknown or twice",
        sink.unknown.load(Relaxed),
    );
    Ok(Some(report))
}

/// One worker: subscribes its families' children, opens their parents' chat sockets, then sends
/// at the paced rate until told to stop.
async fn work(
    worker: Worker,
    sink: Arc<Sink>,
    base: String,
    interval: Option<Duration>,
    run_id: u32,
) -> PushStats {
    let mut stats = PushStats::default();
    let mut sockets = Vec::new();
    for (i, family) in worker.families.iter().enumerate() {
        let client = worker.client(i);
        let Ok((pair, auth)) = ece::generate_keypair_and_auth_secret() else {
            stats.failed_setup += 1;
            continue;
        };
        let (Ok(components), Ok(public)) = (pair.raw_components(), pair.pub_as_raw()) else {
            stats.failed_setup += 1;
            continue;
        };
        let subscription = json!({
            "endpoint": format!("{base}/p/{}", family.id),
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(public), "auth": URL_SAFE_NO_PAD.encode(auth)},
        });
        let subscribed = client
            .post(worker.target.url("/api/push/subscriptions"))
            .bearer_auth(&family.child.token)
            .send_json(&subscription)
            .await;
        if !subscribed.is_ok_and(|res| res.status() == awc::http::StatusCode::CREATED) {
            stats.failed_setup += 1;
            continue;
        }
        if let Ok(mut keys) = sink.keys.lock() {
            keys.insert(family.id, (components, auth));
        }
        match open_ws(&client, &worker.target, &family.parent.token).await {
            Ok((tx, rx)) => sockets.push((family.id, tx, rx)),
            Err(_) => stats.failed_setup += 1,
        }
    }
    // Acks are read on their own so that the sockets never back up.
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (family, tx, mut rx) in sockets {
        let acked = acked.clone();
        actix_web::rt::spawn(async move {
            while let Some(Ok(frame)) = rx.next().await {
                if let awc::ws::Frame::Text(text) = frame
                    && text.starts_with(br#"{"type":"ack""#)
                {
                    acked.fetch_add(1, Relaxed);
                }
            }
        });
        senders.push((family, tx));
    }
    worker.phases.arrive(0).await;
    let count = senders.len().max(1);
    let mut tasks = Vec::new();
    for (i, (family, mut tx)) in senders.into_iter().enumerate() {
        let sink = sink.clone();
        let phases = worker.phases.clone();
        let mut pacer = Pacer::new(interval, i as f64 / count as f64);
        tasks.push(actix_web::rt::spawn(async move {
            let mut n = 0u64;
            while !phases.stopped() {
                pacer.tick().await;
                if phases.stopped() {
                    break;
                }
                n += 1;
                let text = format!("{run_id}:{family}:{n}");
                if let Ok(mut sent) = sink.sent.lock() {
                    sent.insert(text.clone(), Instant::now());
                }
                let frame = json!({"type": "send", "client_id": text, "text": text}).to_string();
                if tx.send(awc::ws::Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            (n, pacer.late)
        }));
    }
    for task in tasks {
        if let Ok((sent, late)) = task.await {
            stats.sent += sent;
            stats.late += late;
        }
    }
    // Let the last acks come in.
    let until = Instant::now() + Duration::from_secs(5);
    while acked.load(Relaxed) < stats.sent && Instant::now() < until {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    stats.acked = acked.load(Relaxed);
    stats
}

//! What every scenario shares: the common flags, worker threads (one single-threaded actix
//! runtime each, owning a shard of the families), phase barriers between the coordinating thread
//! and the workers, live counters for the progress bar, and the hard deadline.
pub mod board;
pub mod chat;
pub mod crash;
pub mod push;
pub mod signup;
pub mod sse_idle;
pub mod ws_idle;

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Target, make_client, source_ip};
use crate::seed::{SeededFamily, TokenFile};

/// Time allowed on top of `--duration` for connecting, draining and reporting; past it the
/// process exits whatever it is doing.
const HARD_DEADLINE_SLACK: Duration = Duration::from_secs(180);
/// Connections a worker opens at once while setting up.
pub const CONNECT_CONCURRENCY: usize = 128;

#[derive(Args, Clone)]
pub struct Common {
    /// The server (loopback only), e.g. http://127.0.0.1:8080. Give it (or `--url`) once per
    /// node of a cluster: `board`, `sse-idle`, `chat` and `storm` then put family i's parent on
    /// node i mod n and its child on node (i+1) mod n, so every delivery to the partner and
    /// every board update on the partner's stream crosses nodes. Other scenarios take one.
    #[arg(
        long = "server",
        visible_alias = "url",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: Vec<String>,
    /// Tokens written by `podo-load seed`.
    #[arg(long, default_value = "tokens.json")]
    pub tokens: PathBuf,
    /// Use the first N families of the token file (default: all).
    #[arg(long)]
    pub families: Option<usize>,
    /// Seconds of load (after set-up).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Worker threads, each with its own event loop and share of the families.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Loopback source addresses to spread client sockets over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 8)]
    pub source_addrs: usize,
    /// The server's pid, to sample its RSS and CPU from /proc; once per node (CPU is reported
    /// per node and summed).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// The pid of the Redis of a cluster run, to report the cores it used (repeatable).
    #[arg(long)]
    pub redis_pid: Vec<u32>,
    /// Also report the cores used by every `postgres` process on this machine during the run
    /// (the whole local PostgreSQL: an upper bound when something else uses it too).
    #[arg(long)]
    pub postgres_cpu: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Common {
    /// The one server of a scenario that drives a single node.
    pub fn target(&self) -> Result<Target, String> {
        match self.server.as_slice() {
            [server] => Target::parse(server),
            servers => Err(format!(
                "this scenario drives one server, --server/--url was given {} times",
                servers.len()
            )),
        }
    }

    /// Every node, in the order given.
    pub fn targets(&self) -> Result<Vec<Target>, String> {
        self.server.iter().map(|s| Target::parse(s)).collect()
    }

    /// The one server pid of a scenario that drives a single node.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid.first().copied()
    }

    /// The processes to sample during the run.
    pub fn watched(&self) -> crate::probe::Watched {
        crate::probe::Watched {
            servers: self.server_pid.clone(),
            redis: self.redis_pid.clone(),
            postgres: self.postgres_cpu,
        }
    }

    /// The nodes' addresses, for scraping their metrics.
    pub fn addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        Ok(self.targets()?.iter().map(|t| t.addr).collect())
    }

    pub fn load_families(&self) -> Result<Vec<SeededFamily>, String> {
        let mut families = TokenFile::load(&self.tokens)?.families;
        if let Some(n) = self.families {
            if n > families.len() {
                return Err(format!(
                    "--families {n} but {} has only {}",
                    self.tokens.display(),
                    families.len()
                ));
            }
            families.truncate(n);
        }
        if families.is_empty() {
            return Err("no families to drive".into());
        }
        Ok(families)
    }
}

/// Counters the workers bump and the progress bar reads.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub open: AtomicI64,
    pub peak_open: AtomicI64,
    pub connect_failed: AtomicU64,
    pub reconnects: AtomicU64,
    pub violations: AtomicU64,
}

impl Counters {
    pub fn opened(&self) {
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(now, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

/// Numbered barriers: workers `arrive(k)` and wait until the coordinator `release(k)`s.
#[derive(Default)]
pub struct Phases {
    arrived: [AtomicUsize; 4],
    released: [AtomicBool; 4],
    stop: AtomicBool,
}

impl Phases {
    pub async fn arrive(&self, k: usize) {
        self.arrived[k].fetch_add(1, Relaxed);
        while !self.released[k].load(Relaxed) {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Blocks the coordinator until `workers` arrived at `k` (or the deadline passed).
    pub fn wait_arrived(&self, k: usize, workers: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.arrived[k].load(Relaxed) < workers {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn release(&self, k: usize) {
        self.released[k].store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

/// What a worker is handed: its shard of the families and the shared state.
pub struct Worker {
    /// The first node (scenarios that drive one server use only this).
    pub target: Target,
    /// Every node; see [`Worker::member_target`].
    pub targets: Vec<Target>,
    /// This worker's number and how many there are: family `i` of the token file is this
    /// worker's family `i / shards` when `i % shards == shard`.
    pub shard: usize,
    pub shards: usize,
    pub families: Vec<SeededFamily>,
    /// One client per source address; family `i` uses `clients[i % len]`.
    pub clients: Vec<Rc<awc::Client>>,
    pub counters: Arc<Counters>,
    pub phases: Arc<Phases>,
}

/// Shared by the coordinator and every worker.
pub struct Run {
    pub counters: Arc<Counters>,
    pub phases: Arc<Phases>,
    pub threads: usize,
}

/// Starts `common.threads` workers, each on its own thread with its own actix runtime, and a
/// watchdog that ends the process if the run overstays its hard deadline.
pub fn spawn_workers<F, Fut, R>(
    common: &Common,
    families: Vec<SeededFamily>,
    work: F,
) -> Result<(Run, Vec<std::thread::JoinHandle<R>>), String>
where
    F: Fn(Worker) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let targets = common.targets()?;
    let target = targets.first().cloned().ok_or("no --server/--url given")?;
    let threads = common.threads.clamp(1, families.len());
    let counters = Arc::new(Counters::default());
    let phases = Arc::new(Phases::default());
    let deadline = Duration::from_secs(common.duration) + HARD_DEADLINE_SLACK;
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("podo-load: hard deadline of {deadline:?} passed; exiting");
        std::process::exit(2);
    });
    let mut shards: Vec<Vec<SeededFamily>> = vec![Vec::new(); threads];
    for (i, family) in families.into_iter().enumerate() {
        shards[i % threads].push(family);
    }
    let source_addrs = common.source_addrs.clamp(1, 250);
    let handles = shards
        .into_iter()
        .enumerate()
        .map(|(index, families)| {
            let work = work.clone();
            let target = target.clone();
            let targets = targets.clone();
            let counters = counters.clone();
            let phases = phases.clone();
            std::thread::Builder::new()
                .name(format!("podo-load-{index}"))
                .spawn(move || {
                    actix_web::rt::System::new().block_on(async move {
                        let clients = (0..source_addrs)
                            .map(|i| Rc::new(make_client(source_ip(i, source_addrs))))
                            .collect();
                        work(Worker {
                            target,
                            targets,
                            shard: index,
                            shards: threads,
                            families,
                            clients,
                            counters,
                            phases,
                        })
                        .await
                    })
                })
                .expect("spawn worker thread")
        })
        .collect();
    Ok((
        Run {
            counters,
            phases,
            threads,
        },
        handles,
    ))
}

impl Worker {
    pub fn client(&self, family_index: usize) -> Rc<awc::Client> {
        self.clients[family_index % self.clients.len()].clone()
    }

    /// The node this worker's family `family_index` talks to as `member` (0 the parent, 1 the
    /// child): family i of the token file has its parent on node i mod n and its child on node
    /// (i+1) mod n. With one node, that node.
    pub fn member_target(&self, family_index: usize, member: usize) -> &Target {
        let global = family_index * self.shards + self.shard;
        &self.targets[node_of(global, member, self.targets.len())]
    }
}

impl Run {
    /// Shows a progress bar (on a terminal, unless `quiet`) for `secs` seconds of load, then
    /// tells the workers to stop.
    pub fn run_for(&self, secs: u64, quiet: bool) {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(secs)
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let started = Instant::now();
        let mut last = (started, self.counters.acked.load(Relaxed));
        while started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(250));
            let now = Instant::now();
            let acked = self.counters.acked.load(Relaxed);
            let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, acked);
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(format!(
                "{rate:>8.0}/s acked {acked} delivered {} conns {} errors {} violations {}",
                self.counters.delivered.load(Relaxed),
                self.counters.open.load(Relaxed),
                self.counters.errors.load(Relaxed),
                self.counters.violations.load(Relaxed),
            ));
        }
        bar.finish_and_clear();
        self.phases.stop();
    }

    /// Waits for every worker at barrier `k`, failing if set-up takes longer than `within`.
    pub fn gather(&self, k: usize, within: Duration) -> Result<(), String> {
        if self.phases.wait_arrived(k, self.threads, within) {
            Ok(())
        } else {
            self.phases.stop();
            Err(format!(
                "set-up did not finish within {within:?} ({} connections open, {} failed)",
                self.counters.open.load(Relaxed),
                self.counters.connect_failed.load(Relaxed)
            ))
        }
    }
}

/// The node (index) of member `member` (0 the parent, 1 the child) of family `family` (its index
/// in the token file) among `nodes`: the parent on `family mod nodes`, the child on the next.
fn node_of(family: usize, member: usize, nodes: usize) -> usize {
    (family + member) % nodes.max(1)
}

/// Joins the workers and returns their results.
pub fn join<R>(handles: Vec<std::thread::JoinHandle<R>>) -> Result<Vec<R>, String> {
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a worker thread panicked".to_owned()))
        .collect()
}

/// The interval between operations of one family for a total rate over `families`, or None for
/// "as fast as possible".
pub fn per_family_interval(rate: f64, families: usize) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(families as f64 / rate))
}

/// A send more than this far behind its schedule counts as late; without `--open-loop` the
/// schedule then restarts from now.
const LATE: Duration = Duration::from_secs(1);

/// Paces one family's operations on a fixed schedule. When the schedule has fallen more than
/// [`LATE`] behind, it restarts from now instead of bursting to catch up, unless it is
/// [`Pacer::open_loop`]: then every scheduled operation happens, as soon as possible when late,
/// and latencies are measured from the scheduled time that [`Pacer::tick`] returns, so a stall
/// counts against every operation it held back (no coordinated omission).
pub struct Pacer {
    next: Instant,
    interval: Option<Duration>,
    open_loop: bool,
    /// Without open loop: times the schedule restarted. With it: operations more than
    /// [`LATE`] behind.
    pub late: u64,
}

impl Pacer {
    pub fn new(interval: Option<Duration>, phase: f64) -> Pacer {
        let offset = interval.map(|i| i.mul_f64(phase)).unwrap_or_default();
        Pacer {
            next: Instant::now() + offset,
            interval,
            open_loop: false,
            late: 0,
        }
    }

    /// Keeps to the schedule whatever happens (see [`Pacer`]).
    pub fn open_loop(mut self, on: bool) -> Pacer {
        self.open_loop = on;
        self
    }

    /// Waits for the next scheduled time and returns it (now, when there is no schedule).
    pub async fn tick(&mut self) -> Instant {
        let Some(interval) = self.interval else {
            return Instant::now();
        };
        let now = Instant::now();
        if self.next > now {
            actix_web::rt::time::sleep_until(self.next.into()).await;
        } else if now - self.next > LATE {
            self.late += 1;
            if !self.open_loop {
                self.next = now;
            }
        }
        let scheduled = self.next;
        self.next += interval;
        scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::node_of;

    #[test]
    fn partners_are_on_different_nodes() {
        for nodes in 2..=4 {
            for family in 0..20 {
                assert_ne!(node_of(family, 0, nodes), node_of(family, 1, nodes));
                assert_eq!(node_of(family, 0, nodes), family % nodes);
            }
        }
        assert_eq!(node_of(7, 1, 1), 0);
    }
}

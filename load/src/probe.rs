//! Looking at the server from outside: its `/metrics` counters and, when its pid is given, its
//! resident memory and CPU time from `/proc`.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// One scrape of `GET /metrics`: metric (with its labels) → value.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub HashMap<String, f64>);

impl Metrics {
    /// Scraped with a plain blocking socket so the coordinating thread needs no async runtime.
    pub fn scrape(addr: SocketAddr) -> Result<Metrics, String> {
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok(Metrics(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// How much a counter grew since `before`.
    pub fn delta(&self, before: &Metrics, name: &str) -> f64 {
        self.get(name) - before.get(name)
    }

    /// Persister batches since `before`: count, mean size and the bucket bound under which
    /// `q` of them fall (an upper bound, from the cumulative histogram).
    pub fn batches(&self, before: &Metrics) -> BatchFigures {
        let count = self.delta(before, "podo_persister_batch_size_count");
        let sum = self.delta(before, "podo_persister_batch_size_sum");
        let commit = self.delta(before, "podo_persister_commit_seconds_total");
        let quantile = |q: f64| {
            let mut bounds: Vec<(f64, f64)> = self
                .0
                .keys()
                .filter_map(|k| {
                    let le = k
                        .strip_prefix("podo_persister_batch_size_bucket{le=\"")?
                        .strip_suffix("\"}")?;
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, self.delta(before, k)))
                })
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            bounds
                .iter()
                .find(|(_, n)| count > 0.0 && *n >= q * count)
                .map(|(b, _)| *b)
                .unwrap_or(0.0)
        };
        BatchFigures {
            count,
            mean: if count > 0.0 { sum / count } else { 0.0 },
            p50_le: quantile(0.5),
            p99_le: quantile(0.99),
            commit_ms_mean: if count > 0.0 {
                commit * 1000.0 / count
            } else {
                0.0
            },
        }
    }
}

/// The status code of `GET path` (a blocking request, as [`Metrics::scrape`]); an error when the
/// server does not answer within a second or two (it is down or still starting).
pub fn status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&head)))
}

#[derive(Clone, Copy, Debug, Default)]
pub struct BatchFigures {
    pub count: f64,
    pub mean: f64,
    pub p50_le: f64,
    pub p99_le: f64,
    pub commit_ms_mean: f64,
}

/// The server process as `/proc` shows it.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_kib: u64,
    pub cpu_ticks: u64,
}

impl ProcSample {
    pub fn take(pid: u32) -> Result<ProcSample, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("server pid {pid}: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or("no VmRSS")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("server pid {pid}: {e}"))?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, s)| s).ok_or("bad stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample {
            at: Instant::now(),
            rss_kib,
            cpu_ticks: tick(11) + tick(12),
        })
    }

    /// CPU used between two samples, in cores (1.0 = one core busy).
    pub fn cores_since(&self, before: &ProcSample) -> f64 {
        let secs = self.at.duration_since(before.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (self.cpu_ticks.saturating_sub(before.cpu_ticks)) as f64 / CLK_TCK / secs
    }
}

/// Samples the server when a pid was given, and says nothing otherwise.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|pid| match ProcSample::take(pid) {
        Ok(sample) => Some(sample),
        Err(err) => {
            eprintln!("podo-load: cannot sample the server: {err}");
            None
        }
    })
}

impl Metrics {
    /// One scrape of every node, summed: counters and histogram buckets add up, so the figures
    /// of a cluster read like one server's. A node given twice (`--url X --url X`) is scraped
    /// once.
    pub fn scrape_all(addrs: &[SocketAddr]) -> Result<Metrics, String> {
        let mut seen = Vec::new();
        let mut total = Metrics::default();
        for &addr in addrs {
            if seen.contains(&addr) {
                continue;
            }
            seen.push(addr);
            for (name, value) in Metrics::scrape(addr)
                .map_err(|e| format!("metrics of {addr}: {e}"))?
                .0
            {
                *total.0.entry(name).or_insert(0.0) += value;
            }
        }
        Ok(total)
    }
}

/// CPU ticks (utime + stime) of one process from `/proc/<pid>/stat`; None when it is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may itself hold spaces).
    let (_, after) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(tick(11)? + tick(12)?)
}

/// Every process whose command name (`/proc/<pid>/comm`) is `name`, with its CPU ticks.
fn ticks_by_name(name: &str) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim_end() == name)
            .then(|| cpu_ticks(pid).map(|t| (pid, t)))
            .flatten()
    })
    .collect()
}

/// The processes a run watches besides the load: the nodes (`--server-pid`, once per node), the
/// bench's Redis (`--redis-pid`) and, with `--postgres-cpu`, every `postgres` process on the
/// machine (the local PostgreSQL is shared, so this is an upper bound of what the run cost it).
#[derive(Clone, Debug, Default)]
pub struct Watched {
    pub servers: Vec<u32>,
    pub redis: Vec<u32>,
    pub postgres: bool,
}

/// One look at the watched processes.
#[derive(Clone, Debug)]
pub struct WatchSample {
    at: Instant,
    servers: Vec<Option<ProcSample>>,
    redis: Vec<Option<u64>>,
    /// pid → ticks of every `postgres` process (matched by pid between two samples, so a
    /// backend that started during the run counts from zero and one that ended is lost).
    postgres: Option<HashMap<u32, u64>>,
}

impl Watched {
    pub fn sample(&self) -> WatchSample {
        WatchSample {
            at: Instant::now(),
            servers: self.servers.iter().map(|&pid| sample(Some(pid))).collect(),
            redis: self.redis.iter().map(|&pid| cpu_ticks(pid)).collect(),
            postgres: self
                .postgres
                .then(|| ticks_by_name("postgres").into_iter().collect()),
        }
    }
}

/// What the watched processes used between two samples.
pub struct Usage {
    /// Per node: cores used and RSS at the end (MiB); None where a sample failed.
    pub servers: Vec<Option<(f64, f64)>>,
    pub redis_cores: Option<f64>,
    pub postgres_cores: Option<f64>,
    /// `postgres` processes seen at the end.
    pub postgres_processes: usize,
}

impl WatchSample {
    pub fn usage_since(&self, before: &WatchSample) -> Usage {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |ticks: u64| ticks as f64 / CLK_TCK / secs;
        let servers = self
            .servers
            .iter()
            .zip(&before.servers)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some((a.cores_since(b), a.rss_kib as f64 / 1024.0)),
                _ => None,
            })
            .collect();
        let redis_cores = (!self.redis.is_empty()).then(|| {
            self.redis
                .iter()
                .zip(&before.redis)
                .map(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => cores(a.saturating_sub(*b)),
                    _ => 0.0,
                })
                .sum()
        });
        let (postgres_cores, postgres_processes) = match (&self.postgres, &before.postgres) {
            (Some(after), Some(prior)) => {
                let ticks = after
                    .iter()
                    .map(|(pid, t)| t.saturating_sub(prior.get(pid).copied().unwrap_or(0)))
                    .sum();
                (Some(cores(ticks)), after.len())
            }
            _ => (None, 0),
        };
        Usage {
            servers,
            redis_cores,
            postgres_cores,
            postgres_processes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_by_name() {
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let me = std::process::id();
        assert!(
            ticks_by_name(comm.trim_end())
                .iter()
                .any(|(pid, _)| *pid == me)
        );
        assert!(cpu_ticks(me).is_some());
    }
}

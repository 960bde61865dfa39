//! Results: latency histograms, the figures of a run, and how they are printed (a table for
//! people, `--json` for scripts such as bench/run.sh).
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds, 1 µs to 5 minutes, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, took: Duration) {
        self.0.saturating_record(took.as_micros().max(1) as u64);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count(),
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "max_ms": self.0.max() as f64 / 1000.0,
        })
    }
}

/// Everything a scenario found: named figures, latency summaries and correctness checks.
pub struct Report {
    scenario: String,
    json: bool,
    figures: Vec<(String, f64, &'static str)>,
    latencies: Vec<(String, Latency)>,
    checks: Vec<(String, u64)>,
    /// How to read the figures (e.g. how latencies were measured).
    notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, json: bool) -> Report {
        Report {
            scenario: scenario.to_owned(),
            json,
            figures: Vec::new(),
            latencies: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push((name.to_owned(), value, unit));
    }

    pub fn latency(&mut self, name: &str, latency: Latency) {
        self.latencies.push((name.to_owned(), latency));
    }

    /// A line printed with the results on how to read them.
    pub fn note(&mut self, text: &str) {
        self.notes.push(text.to_owned());
    }

    /// A count of correctness violations; any non-zero check makes the run fail.
    pub fn check(&mut self, name: &str, violations: u64) {
        self.checks.push((name.to_owned(), violations));
    }

    pub fn violations(&self) -> u64 {
        self.checks.iter().map(|(_, n)| n).sum()
    }

    pub fn print(&self) {
        if self.json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.table());
        }
    }

    pub fn to_json(&self) -> Value {
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|(name, value, _)| (name.clone(), json!(round(*value))))
            .collect();
        let latencies: serde_json::Map<String, Value> = self
            .latencies
            .iter()
            .map(|(name, l)| (name.clone(), l.json()))
            .collect();
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, n)| (name.clone(), json!(n)))
            .collect();
        json!({
            "scenario": self.scenario,
            "figures": figures,
            "latency": latencies,
            "checks": checks,
            "violations": self.violations(),
            "notes": self.notes,
        })
    }

    fn table(&self) -> String {
        let mut out = format!("\n== podo-load {} ==\n", self.scenario);
        for (name, value, unit) in &self.figures {
            out.push_str(&format!("  {name:<34} {:>14} {unit}\n", fmt_num(*value)));
        }
        if !self.latencies.is_empty() {
            out.push_str(&format!(
                "\n  {:<28} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "latency (ms)", "count", "p50", "p90", "p99", "max"
            ));
            for (name, l) in &self.latencies {
                let j = l.json();
                out.push_str(&format!(
                    "  {name:<28} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                    l.count(),
                    j["p50_ms"].as_f64().unwrap_or(0.0),
                    j["p90_ms"].as_f64().unwrap_or(0.0),
                    j["p99_ms"].as_f64().unwrap_or(0.0),
                    j["max_ms"].as_f64().unwrap_or(0.0),
                ));
            }
        }
        if !self.checks.is_empty() {
            out.push_str("\n  correctness\n");
            for (name, n) in &self.checks {
                let verdict = if *n == 0 { "ok" } else { "VIOLATED" };
                out.push_str(&format!("  {name:<34} {n:>14} {verdict}\n"));
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("  note: {note}\n"));
            }
        }
        out
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

//! podo-load: the load generator and benchmark of the podo server.
//!
//! `seed` writes families straight into the database and mints their tokens; the scenarios
//! (`board`, `sse-idle`, `ws-idle`, `chat`, `storm`, `push`, `signup`, `crash`) drive a running server over loopback
//! through the public API (REST, SSE, WebSocket), measure latencies with HDR histograms and check, from the clients'
//! side, that nothing acknowledged was lost, duplicated or reordered. Every run is bounded: it
//! stops after `--duration` and a hard deadline ends the process whatever happens.
mod client;
mod probe;
mod report;
mod scenario;
mod seed;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podo-load",
    about = "Load generator and benchmark for the podo server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create families (users, pairing, optionally a wish and an active board) straight in the
    /// database and write their access tokens to a JSON file.
    Seed(seed::SeedArgs),
    /// Grants and attaches at a target rate; board change → SSE delivery on every member's stream.
    Board(scenario::board::BoardArgs),
    /// Open many SSE streams, hold them idle (server RSS per stream, queries/s), then change boards
    /// at a target rate and measure change → delivery on the last stream of the family.
    SseIdle(scenario::sse_idle::SseIdleArgs),
    /// Open many idle chat WebSockets (with `--mixed` also one SSE stream per member), hold them,
    /// and report the server's RSS per connection.
    WsIdle(scenario::ws_idle::WsIdleArgs),
    /// Chat messages at a target rate over WebSocket: send → ack, send → partner delivery, order.
    Chat(scenario::chat::ChatArgs),
    /// Sign-ups and then logins through the API at a fixed concurrency (each an argon2id hash):
    /// throughput, latency and the server's RSS after.
    Signup(scenario::signup::SignupArgs),
    /// Chat under reconnect storms: drop a share of the sessions periodically, resume, check that
    /// nothing acknowledged is missing, duplicated or out of order.
    Storm(scenario::chat::StormArgs),
    /// Kill -9 under load: runs the server itself (`--serve`), SIGKILLs it at random moments
    /// while chat and board changes go on, restarts it on the same database, lets the clients
    /// reconnect and resume, then checks through the API that nothing acknowledged was lost or
    /// duplicated.
    Crash(scenario::crash::CrashArgs),
    /// Web push at a target rate to an HTTPS push service run by podo-load: chat messages to
    /// absent children, send → push received (decrypted).
    Push(scenario::push::PushArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Seed(args) => seed::run(args),
        Command::Board(args) => scenario::board::run(args),
        Command::SseIdle(args) => scenario::sse_idle::run(args),
        Command::WsIdle(args) => scenario::ws_idle::run(args),
        Command::Chat(args) => scenario::chat::run_chat(args),
        Command::Storm(args) => scenario::chat::run_storm(args),
        Command::Push(args) => scenario::push::run(args),
        Command::Signup(args) => scenario::signup::run(args),
        Command::Crash(args) => scenario::crash::run(args),
    };
    match outcome {
        Ok(report) => {
            let failed = report.as_ref().is_some_and(|r| r.violations() > 0);
            if let Some(report) = report {
                report.print();
            }
            if failed {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("podo-load: {err}");
            ExitCode::FAILURE
        }
    }
}

//! `podo serve` as a child process (the real binary): started from the caller's command with
//! stderr piped, its "listening" line read for the address, the rest drained so that the process
//! never blocks on a full pipe.
#![allow(dead_code)] // shared by test targets; not each uses every helper
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `podo serve --bind 127.0.0.1:0 --data-dir DIR`, logging at info.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_podo"));
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "info");
    command
}

/// Spawns `command` and waits up to 30 s for its "podo listening on" line; returns the child and
/// the address it listens on (`host:port`).
pub fn spawn_listening(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podo starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.split("podo listening on http://").nth(1) {
                let _ = tx.send(address.trim().to_owned());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("podo logs its address");
    (child, address)
}

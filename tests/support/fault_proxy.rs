//! A TCP fault proxy for the database: listens on 127.0.0.1:0 and forwards to the real server,
//! or fails the way networks and databases fail. It runs on a thread and a runtime of its own, so
//! it keeps working whatever the test's runtime does.
//!
//! - [`Mode::Pass`]: forward. Switching to it closes every connection left from a fault (a
//!   database that is back has forgotten them), so the client must notice and reconnect.
//! - [`Mode::Drop`]: close every connection (FIN) and each new one as soon as it is accepted.
//! - [`Mode::Reset`]: reset every connection (RST, `SO_LINGER` 0) and each new one.
//! - [`Mode::BlackHole`]: keep every connection and accept new ones, but forward nothing in
//!   either direction (a partition, or a database that hangs): nothing answers, nothing closes.
#![allow(dead_code)] // shared by test modules; not each uses every part
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Drop,
    Reset,
    BlackHole,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let (mode, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(mode);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let shared = mode.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("proxy listener");
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(client, upstream, shared.subscribe()));
                    }
                });
            })
            .expect("proxy thread");
        FaultProxy { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let mut black_holed = match *mode.borrow_and_update() {
        Mode::Drop => return drop(client),
        Mode::Reset => return reset(client),
        Mode::BlackHole => true,
        Mode::Pass => false,
    };
    let mut upstream = if black_holed {
        None
    } else {
        match TcpStream::connect(upstream).await {
            Ok(stream) => Some(stream),
            Err(_) => return reset(client),
        }
    };
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    let end = loop {
        tokio::select! {
            read = client.read(&mut from_client) => match read {
                Ok(0) | Err(_) => break None,
                Ok(n) if !black_holed => {
                    if let Some(up) = upstream.as_mut()
                        && up.write_all(&from_client[..n]).await.is_err()
                    {
                        break None;
                    }
                }
                Ok(_) => {} // swallowed
            },
            read = async {
                match upstream.as_mut() {
                    Some(up) => up.read(&mut from_server).await,
                    None => std::future::pending().await,
                }
            } => match read {
                Ok(0) | Err(_) => break None,
                Ok(n) if !black_holed => {
                    if client.write_all(&from_server[..n]).await.is_err() {
                        break None;
                    }
                }
                Ok(_) => {}
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    break None;
                }
                match *mode.borrow_and_update() {
                    Mode::BlackHole => black_holed = true,
                    Mode::Reset => break Some(Mode::Reset),
                    // Drop, or the end of any fault: this connection is gone.
                    other => break Some(other),
                }
            }
        }
    };
    if let Some(up) = upstream {
        reset(up);
    }
    match end {
        Some(Mode::Drop) | None => drop(client),
        Some(_) => reset(client),
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the URL with another `host:port`.
pub fn postgres_authority(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    Some((format!("{scheme}://{user}"), host, format!("/{path}")))
}

/// Waits until `check` is true, polling every 50 ms, for at most `wait`.
pub async fn eventually(wait: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

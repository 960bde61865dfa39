//! A WebSocket client by hand, for the limits tests: a TCP socket with a tiny receive buffer
//! that never reads unless told to, so the server's side of the connection fills up.
#![allow(dead_code)] // shared by tests/api and tests/chat_memory.rs; not each uses every helper
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::TestApp;

const WAIT: Duration = Duration::from_secs(10);
// told to, so the server's side of the connection fills up.

pub struct RawWs {
    stream: TcpStream,
    /// Bytes read past the handshake's head.
    read: Vec<u8>,
}

impl RawWs {
    pub async fn connect(app: &TestApp, token: &str) -> RawWs {
        let addr: SocketAddr = app
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("server address");
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET /api/chat/ws?access_token={token} HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade");
        let mut read = Vec::new();
        let mut chunk = [0u8; 512];
        let head_end = loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("handshake in time")
                .expect("handshake read");
            assert!(n > 0, "connection closed during the handshake");
            read.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        read.drain(..head_end);
        RawWs { stream, read }
    }

    /// Writes client frames; false when the server no longer takes them.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Starts reading: everything until the server ends the connection (or `wait` passes).
    /// Returns the close code the server sent, if any, and whether the connection ended.
    pub async fn read_to_end(&mut self, wait: Duration) -> (Option<u16>, bool) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = vec![0u8; 64 * 1024];
        let ended = loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => self.read.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
        };
        (close_code(&self.read), ended)
    }
}

/// A masked client frame (RFC 6455 5.2).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

pub fn text_frame(value: Value) -> Vec<u8> {
    client_frame(0x1, value.to_string().as_bytes())
}

/// The code of the first close frame among the server's (unmasked) frames.
pub fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, head) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if bytes.len() < head + len {
            return None;
        }
        if opcode == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([bytes[head], bytes[head + 1]]));
        }
        bytes = &bytes[head + len..];
    }
    None
}

/// This process's resident memory (the server runs in it), in bytes.
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub const MIB: f64 = 1024.0 * 1024.0;

pub async fn wait_for_sessions(app: &TestApp, sessions: f64, wait: Duration) -> f64 {
    let deadline = Instant::now() + wait;
    loop {
        let seen = app.metric("podo_ws_sessions").await;
        if seen == sessions || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a flood of pings from a client that never reads did.
pub struct Flood {
    pub sent: usize,
    /// After how many pings the server's session was gone.
    pub closed_after: Option<usize>,
    /// This process's RSS before the flood, at the close, and after 50,000 more pings.
    pub rss: [u64; 3],
    pub close_code: Option<u16>,
    pub ended: bool,
}

/// A parent that reads and a child that sends pings with 125-byte payloads (each asks for a
/// 127-byte pong) and never reads, until the server closes the child's session (at most
/// 200,000); then 50,000 more pings; then the child reads what is left.
pub async fn flood_with_pings(app: &TestApp, prefix: &str) -> Flood {
    let fam = app.family(prefix).await;
    let (_parent, _) = app.ws(&fam.parent.token).await;
    let mut raw = RawWs::connect(app, &fam.child.token).await;
    assert_eq!(wait_for_sessions(app, 2.0, WAIT).await, 2.0);
    let before = rss();
    let ping = client_frame(0x9, &[b'p'; 125]);
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let mut sent = 0;
    let mut closed_after = None;
    while sent < 200_000 {
        if !raw.write(&batch).await {
            break;
        }
        sent += 1000;
        if sent % 10_000 == 0 && app.metric("podo_ws_sessions").await == 1.0 {
            closed_after = Some(sent);
            break;
        }
    }
    if closed_after.is_none() && wait_for_sessions(app, 1.0, WAIT).await == 1.0 {
        closed_after = Some(sent);
    }
    let at_close = rss();
    for _ in 0..50 {
        if !raw.write(&batch).await {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss();
    log::info!(
        "closed after {closed_after:?} pings; RSS +{:.1} MiB until then, +{:.1} MiB for 50,000 more",
        (at_close as f64 - before as f64) / MIB,
        (after as f64 - at_close as f64) / MIB,
    );
    let (close_code, ended) = raw.read_to_end(WAIT).await;
    Flood {
        sent,
        closed_after,
        rss: [before, at_close, after],
        close_code,
        ended,
    }
}

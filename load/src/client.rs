//! The clients: target checks, one awc client per loopback source address, JSON requests, an SSE
//! reader that only extracts what the benchmark needs, and WebSocket connections.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::time::Duration;

use awc::ws;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long a request (up to the response head) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Chat frames are small; the server closes anything over 64 KiB anyway.
const MAX_WS_FRAME: usize = 128 * 1024;

/// The server under test. Only loopback addresses are accepted, so a mistyped flag can never
/// point a load run at somebody else's machine.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub base: String,
}

impl Target {
    pub fn parse(server: &str) -> Result<Target, String> {
        let rest = server
            .strip_prefix("http://")
            .ok_or_else(|| format!("--server must start with http:// (got {server})"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .map_err(|err| format!("--server {server}: {err}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("--server {server} resolves to nothing"))?;
        if addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "refusing --server {server}: podo-load only targets loopback addresses"
            ));
        }
        Ok(Target {
            addr,
            base: format!("http://{addr}"),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The `i`th source address: 127.0.0.1, 127.0.0.2, ... Each address has its own ephemeral port
/// range (~28k ports), so spreading sockets over several lets one run hold more connections than
/// one address could.
pub fn source_ip(i: usize, count: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % count.max(1)) as u8))
}

/// One client per source address: its connector binds every socket to that address. The pool has
/// no cap because a benchmark holds thousands of streams at once.
pub fn make_client(ip: IpAddr) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .local_address(ip)
                .limit(0)
                .timeout(Duration::from_secs(10))
                .conn_lifetime(Duration::from_secs(3600))
                .conn_keep_alive(Duration::from_secs(60)),
        )
        .timeout(REQUEST_TIMEOUT)
        .finish()
}

/// A request that failed: the status (0 for a transport error) and the error code or text.
#[derive(Debug)]
pub struct RequestError {
    pub status: u16,
    pub detail: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

fn transport(err: impl std::fmt::Display) -> RequestError {
    RequestError {
        status: 0,
        detail: err.to_string(),
    }
}

/// Sends `body` (or nothing) with the token and decodes a 2xx answer as `T`.
pub async fn request<T: DeserializeOwned>(
    client: &awc::Client,
    method: awc::http::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<T, RequestError> {
    let req = client.request(method, url).bearer_auth(token);
    let mut res = match body {
        Some(body) => req.send_json(body).await,
        None => req.send().await,
    }
    .map_err(transport)?;
    let bytes = res.body().limit(1 << 20).await.map_err(transport)?;
    let status = res.status();
    if !status.is_success() {
        let code = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(RequestError {
            status: status.as_u16(),
            detail: code,
        });
    }
    serde_json::from_slice(&bytes).map_err(transport)
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// An open `GET /api/board/events` stream that yields the version (`id:`) of each `board` event.
pub struct SseStream {
    body: ByteStream,
    buf: Vec<u8>,
}

impl SseStream {
    pub async fn open(
        client: &awc::Client,
        target: &Target,
        token: &str,
    ) -> Result<SseStream, RequestError> {
        let url = target.url(&format!("/api/board/events?access_token={token}"));
        let res = client
            .get(url)
            .insert_header(("Accept", "text/event-stream"))
            .send()
            .await
            .map_err(transport)?;
        if !res.status().is_success() {
            return Err(RequestError {
                status: res.status().as_u16(),
                detail: "sse refused".into(),
            });
        }
        Ok(SseStream {
            body: Box::pin(res),
            buf: Vec::with_capacity(1024),
        })
    }

    /// The next board version, or None when the stream ended or failed.
    pub async fn next_version(&mut self) -> Option<i64> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let version = board_version(&self.buf[..end]);
                self.buf.drain(..end + 2);
                if version.is_some() {
                    return version;
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

/// The `id:` of a `board` event block; None for pings, `retry:` and other events.
fn board_version(block: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(block).ok()?;
    let mut is_board = false;
    let mut id = None;
    for line in text.lines() {
        if line == "event: board" {
            is_board = true;
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().ok();
        }
    }
    if is_board { id } else { None }
}

pub type WsFramed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;
pub type WsSink = SplitSink<WsFramed, ws::Message>;
pub type WsStream = SplitStream<WsFramed>;

/// Opens `GET /api/chat/ws` with the token in the query (as a browser would).
pub async fn open_ws(
    client: &awc::Client,
    target: &Target,
    token: &str,
) -> Result<(WsSink, WsStream), RequestError> {
    let url = target.url(&format!("/api/chat/ws?access_token={token}"));
    let (_res, framed) = client
        .ws(url)
        .max_frame_size(MAX_WS_FRAME)
        .connect()
        .await
        .map_err(transport)?;
    Ok(framed.split())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert!(Target::parse("http://127.0.0.1:8080").is_ok());
        assert!(Target::parse("http://127.0.0.9:1/").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080").is_err());
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
    }

    #[test]
    fn board_blocks_yield_their_version() {
        assert_eq!(board_version(b"event: board\nid: 7\ndata: {}"), Some(7));
        assert_eq!(board_version(b": ping"), None);
        assert_eq!(board_version(b"retry: 2000"), None);
    }
}

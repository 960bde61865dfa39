//! Live board over Server-Sent Events: one SseSession actor per connection.
//!
//! The FamilyBoard sends every committed state to its sessions as one shared, pre-encoded event.
//! A session keeps only the latest event in a `watch` cell that the HTTP body reads, so a slow or
//! stalled reader costs one buffered event and never slows the FamilyBoard or other readers: it
//! skips intermediate versions and always ends on the current state.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::view::Snapshot;
use crate::metrics::Metrics;

/// Sent once at the start of every stream: how long a browser waits before reconnecting.
pub const RETRY_PREAMBLE: &str = "retry: 2000\n\n";
const PING: &str = ": ping\n\n";

/// One encoded `board` event, shared by every session of the family.
#[derive(Clone, Debug)]
pub struct BoardEvent {
    pub version: i64,
    pub bytes: Bytes,
}

impl Message for BoardEvent {
    type Result = ();
}

impl BoardEvent {
    pub fn encode(snapshot: &Snapshot) -> BoardEvent {
        let data = serde_json::to_string(snapshot).unwrap_or_else(|err| {
            log::error!("board snapshot did not serialize: {err}");
            r#"{"board":null}"#.to_owned()
        });
        BoardEvent {
            version: snapshot.version,
            bytes: Bytes::from(format!(
                "event: board\nid: {}\ndata: {data}\n\n",
                snapshot.version
            )),
        }
    }
}

/// Ends a session (server shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// Called when a session ends, to unregister it from its FamilyBoard.
pub type OnClose = Box<dyn FnOnce() + Send>;

pub struct SseSession {
    latest: watch::Sender<Option<BoardEvent>>,
    metrics: Arc<Metrics>,
    on_close: Option<OnClose>,
}

impl SseSession {
    pub fn new(
        latest: watch::Sender<Option<BoardEvent>>,
        metrics: Arc<Metrics>,
        on_close: OnClose,
    ) -> Self {
        SseSession {
            latest,
            metrics,
            on_close: Some(on_close),
        }
    }
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.sse_sessions.fetch_add(1, Ordering::Relaxed);
        // The HTTP body owns the receiver: when the client goes away, the body is dropped and
        // this session ends.
        let latest = self.latest.clone();
        ctx.spawn(
            async move { latest.closed().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.metrics.sse_sessions.fetch_sub(1, Ordering::Relaxed);
        if let Some(on_close) = self.on_close.take() {
            on_close();
        }
    }
}

impl Handler<BoardEvent> for SseSession {
    type Result = ();

    fn handle(&mut self, event: BoardEvent, _: &mut Context<Self>) {
        // Versions only move forward, even if events were to arrive out of order.
        self.latest.send_if_modified(|latest| match latest {
            Some(current) if current.version >= event.version => false,
            _ => {
                *latest = Some(event);
                true
            }
        });
    }
}

impl Handler<CloseSession> for SseSession {
    type Result = ();

    fn handle(&mut self, _: CloseSession, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The response body: the retry preamble, then the latest event whenever it changes, and a ping
/// comment after every `ping` of silence. Ends when the session ends.
pub fn event_stream(
    latest: watch::Receiver<Option<BoardEvent>>,
    ping: Duration,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let preamble =
        futures_util::stream::once(async { Ok(Bytes::from_static(RETRY_PREAMBLE.as_bytes())) });
    let pending = latest.borrow().is_some();
    let events =
        futures_util::stream::unfold((latest, pending), move |(mut rx, pending)| async move {
            if !pending {
                match tokio::time::timeout(ping, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some((Ok(Bytes::from_static(PING.as_bytes())), (rx, false))),
                }
            }
            let event = rx.borrow_and_update().as_ref().map(|e| e.bytes.clone());
            Some((Ok(event.unwrap_or_default()), (rx, false)))
        });
    futures_util::StreamExt::chain(preamble, events)
}

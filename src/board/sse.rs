//! Live board over Server-Sent Events: one SseSession actor per connection.
//!
//! The FamilyBoard sends every committed state to its sessions as one shared, pre-encoded event.
//! A session keeps only the newest event not yet written, in a [`SessionSlot`] that the HTTP body
//! reads, so a slow or stalled reader costs one buffered event and never slows the FamilyBoard or
//! other readers: it skips intermediate versions and always ends on the current state.
//!
//! Memory per idle stream is a goal (issue #5: ≤ 8 KiB with 10,000 streams), so a session holds
//! no more than it needs: the slot is a small mutex rather than a channel, and the body tells the
//! actor it went away by a message from its destructor rather than a future waiting on a channel.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::WeakAddr;
use actix::prelude::*;
use bytes::Bytes;
use futures_util::Stream;

use super::messages::{BoardEvent, SseFrame};
use crate::metrics::Metrics;

/// Sent once at the start of every stream: how long a browser waits before reconnecting.
pub const RETRY_PREAMBLE: &str = "retry: 2000\n\n";
const PING: &str = ": ping\n\n";

/// Ends a session: server shutdown, or the HTTP body went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession;

/// What a session has for its HTTP body: the newest event not yet written.
#[derive(Default)]
pub struct SessionSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    pending: Option<Bytes>,
    /// The version of the newest event offered.
    version: Option<i64>,
    waker: Option<Waker>,
    closed: bool,
}

impl SessionSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Nothing panics while the lock is held; a poisoned slot is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `event` the next thing the stream writes, replacing an unwritten older one. Versions
    /// only move forward, even if events were to arrive out of order.
    fn offer(&self, event: BoardEvent) {
        let mut state = self.lock();
        if state.version.is_some_and(|v| v >= event.version) {
            return;
        }
        state.version = Some(event.version);
        state.pending = Some(event.bytes);
        wake_reader(state);
    }

    /// Ends the stream once it has written what is pending.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        wake_reader(state);
    }

    /// The next event to write; `Ready(None)` once the session is closed.
    fn poll_next_event(&self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.lock();
        if let Some(bytes) = state.pending.take() {
            return Poll::Ready(Some(bytes));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Wakes the stream waiting on the slot, after letting go of the lock.
fn wake_reader(mut state: MutexGuard<'_, SlotState>) {
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub struct SseSession {
    slot: Arc<SessionSlot>,
    metrics: Arc<Metrics>,
}

impl SseSession {
    /// Starts a session and returns it with the body of its HTTP response, which ends the session
    /// when it is dropped (the client went away), and ends itself at `token_ends` (the token
    /// expired).
    pub fn start(
        metrics: Arc<Metrics>,
        ping: Duration,
        token_ends: tokio::time::Instant,
    ) -> (
        u64,
        Addr<SseSession>,
        impl Stream<Item = Result<Bytes, std::convert::Infallible>>,
    ) {
        let slot = Arc::new(SessionSlot::default());
        let session = SseSession {
            slot: slot.clone(),
            metrics,
        }
        .start();
        let body = event_stream(
            BodyEnd {
                slot,
                session: session.clone(),
            },
            ping,
            token_ends,
        );
        (NEXT_SESSION.fetch_add(1, Ordering::Relaxed), session, body)
    }

    /// What the session's token registration calls on revocation: the stream ends after what it
    /// has pending.
    pub fn revoked(session: WeakAddr<SseSession>) -> impl FnOnce() + Send + Sync + 'static {
        move || {
            if let Some(session) = session.upgrade() {
                session.do_send(CloseSession);
            }
        }
    }
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.metrics.sse_sessions.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.metrics.sse_sessions.fetch_sub(1, Ordering::Relaxed);
        self.slot.close();
    }
}

impl Handler<SseFrame> for SseSession {
    type Result = ();

    fn handle(&mut self, frame: SseFrame, ctx: &mut Context<Self>) {
        match frame {
            SseFrame::Board(event) => self.slot.offer(event),
            SseFrame::Close => ctx.stop(),
        }
    }
}

impl Handler<CloseSession> for SseSession {
    type Result = ();

    fn handle(&mut self, _: CloseSession, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The body's end of a session: stops the session when the body is dropped.
struct BodyEnd {
    slot: Arc<SessionSlot>,
    session: Addr<SseSession>,
}

impl Drop for BodyEnd {
    fn drop(&mut self) {
        self.session.do_send(CloseSession);
    }
}

/// The response body: the retry preamble, then the newest event whenever there is one, and a
/// ping comment after every `ping` of silence. Ends when the session ends or at `token_ends`.
fn event_stream(
    end: BodyEnd,
    ping: Duration,
    token_ends: tokio::time::Instant,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let preamble =
        futures_util::stream::once(async { Ok(Bytes::from_static(RETRY_PREAMBLE.as_bytes())) });
    let events = futures_util::stream::unfold(end, move |end| async move {
        // Checked before every event too: a stream that always has one ready never times out.
        let now = tokio::time::Instant::now();
        if now >= token_ends {
            log::info!("board stream: token expired, ending the stream");
            return None;
        }
        let next = std::future::poll_fn(|cx| end.slot.poll_next_event(cx));
        match tokio::time::timeout_at((now + ping).min(token_ends), next).await {
            Ok(Some(bytes)) => Some((Ok(bytes), end)),
            Ok(None) => None,
            Err(_) if tokio::time::Instant::now() >= token_ends => {
                log::info!("board stream: token expired, ending the stream");
                None
            }
            Err(_) => Some((Ok(Bytes::from_static(PING.as_bytes())), end)),
        }
    });
    futures_util::StreamExt::chain(preamble, events)
}

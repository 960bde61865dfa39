//! Actors whose panics are caught: a FamilyBoard, ChatRoom or the Persister that panics (a bug)
//! ends alone, its waiters are answered (their requests fail with 500 `internal`), the panic is
//! logged and counted in `podo_actor_restarts_total`, and a fresh actor takes its place: the
//! registry starts one at the family's next message, the Persister is restarted at once behind
//! the same [`Supervised`] handle. Other families never notice.
//!
//! actix does not catch panics: one in a handler unwinds out of the actor's task, which tokio
//! drops. The actor's state is dropped with it, so each actor's `Drop` ends its sessions (the
//! clients reconnect to the fresh actor and catch up from the database).
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;

use crate::metrics::Metrics;

/// Runs `actor` on the current arbiter. When it panics, `on_crash` runs before anything of the
/// actor is dropped (so a waiter woken by the drop can tell a crash from a stop), and the panic
/// is counted. The future resolves when the actor has ended, with whether it crashed.
pub fn run_caught<A>(
    actor: A,
    metrics: Arc<Metrics>,
    what: String,
    on_crash: impl FnOnce(&Addr<A>) + 'static,
) -> (Addr<A>, LocalBoxFuture<'static, bool>)
where
    A: Actor<Context = Context<A>>,
{
    let ctx = Context::new();
    let addr = ctx.address();
    let watched = addr.clone();
    let mut running = Box::pin(AssertUnwindSafe(ctx.into_future(actor)).catch_unwind());
    let ended = async move {
        let crashed = running.as_mut().await.is_err();
        if crashed {
            metrics.actor_restarts.fetch_add(1, Relaxed);
            log::error!("{what} panicked; a fresh one takes its place");
            on_crash(&watched);
        }
        drop(running);
        crashed
    };
    (addr, Box::pin(ended))
}

/// Starts `actor` with its panics caught (see [`run_caught`]).
pub fn start_caught<A>(
    actor: A,
    metrics: Arc<Metrics>,
    what: String,
    on_crash: impl FnOnce(&Addr<A>) + 'static,
) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    let (addr, ended) = run_caught(actor, metrics, what, on_crash);
    actix::spawn(async move {
        ended.await;
    });
    addr
}

/// The address of an actor that is made again by `make` whenever it panics: holders keep the
/// handle and always reach the current one.
pub struct Supervised<A: Actor> {
    current: Arc<RwLock<Addr<A>>>,
}

impl<A: Actor> Clone for Supervised<A> {
    fn clone(&self) -> Self {
        Supervised {
            current: self.current.clone(),
        }
    }
}

impl<A> Supervised<A>
where
    A: Actor<Context = Context<A>>,
{
    pub fn start(
        what: &'static str,
        metrics: Arc<Metrics>,
        make: impl Fn() -> A + 'static,
    ) -> Self {
        let (addr, mut ended) = run_caught(make(), metrics.clone(), what.into(), |_| {});
        let current = Arc::new(RwLock::new(addr));
        let slot = current.clone();
        actix::spawn(async move {
            // Restarted after each panic; a stop (the system ending) ends the loop.
            while ended.await {
                let (addr, next) = run_caught(make(), metrics.clone(), what.into(), |_| {});
                match slot.write() {
                    Ok(mut current) => *current = addr,
                    Err(poisoned) => *poisoned.into_inner() = addr,
                }
                ended = next;
            }
        });
        Supervised { current }
    }

    /// The current actor.
    pub fn addr(&self) -> Addr<A> {
        match self.current.read() {
            Ok(addr) => addr.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Panics injected by tests (through [`crate::Application::injected_panics`]; no request can set
/// them): the next command of a family's board, the next message posted in a family's room, or
/// the Persister's next board change panics once.
#[derive(Default)]
pub struct InjectedPanics {
    board: AtomicI64,
    room: AtomicI64,
    persister: AtomicBool,
}

impl InjectedPanics {
    pub fn board_once(&self, family_id: i64) {
        self.board.store(family_id, Relaxed);
    }
    pub fn room_once(&self, family_id: i64) {
        self.room.store(family_id, Relaxed);
    }
    pub fn persister_once(&self) {
        self.persister.store(true, Relaxed);
    }

    /// Panics if a panic was injected for this family's board.
    pub(crate) fn check_board(&self, family_id: i64) {
        if self
            .board
            .compare_exchange(family_id, 0, Relaxed, Relaxed)
            .is_ok()
        {
            panic!("injected panic in the FamilyBoard of family {family_id}");
        }
    }
    pub(crate) fn check_room(&self, family_id: i64) {
        if self
            .room
            .compare_exchange(family_id, 0, Relaxed, Relaxed)
            .is_ok()
        {
            panic!("injected panic in the ChatRoom of family {family_id}");
        }
    }
    pub(crate) fn check_persister(&self) {
        if self.persister.swap(false, Relaxed) {
            panic!("injected panic in the Persister");
        }
    }
}

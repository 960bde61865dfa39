//! Family id → actor address, created on demand (one FamilyBoard and one ChatRoom per family).
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::cluster::Cluster;
use crate::config::Timing;
use crate::fanout::Bus;
use crate::metrics::Metrics;
use crate::push::Push;
use crate::store::Db;
use crate::store::persister::Persister;
use crate::supervise::{InjectedPanics, Supervised, start_caught};

pub type Actors<A> = Arc<DashMap<i64, Addr<A>>>;

/// What every per-family actor (FamilyBoard, ChatRoom) needs from the application; `actors` is
/// its own registry's map, so that it can remove itself when it stops.
pub struct FamilyDeps<A: Actor> {
    pub db: Db,
    pub persister: Supervised<Persister>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub push: Push,
    /// The other nodes (cluster mode); `None` on a single node.
    pub cluster: Option<Cluster>,
    pub actors: Actors<A>,
    /// Panics injected by tests only.
    pub panics: Arc<InjectedPanics>,
}

/// The family's actor could not be reached: it stopped again and again, or its mailbox timed out.
#[derive(Debug, thiserror::Error)]
#[error("family {family_id}: actor unavailable")]
pub struct ActorGone {
    pub family_id: i64,
}

impl<A: Actor> FamilyDeps<A> {
    /// The fan-out seam's bus to the other nodes, in cluster mode.
    pub fn bus(&self) -> Option<Arc<dyn Bus>> {
        self.cluster
            .clone()
            .map(|cluster| Arc::new(cluster) as Arc<dyn Bus>)
    }
}

// Not derived: a derive would demand `A: Clone`, and actors are not.
impl<A: Actor> Clone for FamilyDeps<A> {
    fn clone(&self) -> Self {
        FamilyDeps {
            db: self.db.clone(),
            persister: self.persister.clone(),
            metrics: self.metrics.clone(),
            timing: self.timing.clone(),
            push: self.push.clone(),
            cluster: self.cluster.clone(),
            actors: self.actors.clone(),
            panics: self.panics.clone(),
        }
    }
}

pub struct Registry<A: Actor<Context = Context<A>>> {
    actors: Actors<A>,
    make: Box<dyn Fn(i64) -> A + Send + Sync>,
    metrics: Arc<Metrics>,
    /// Actors that panicked, remembered for the waiters that see their closed mailbox only after
    /// the crash took them out of `actors` (cleared at [`MAX_CRASHED`]): a message that met one
    /// is answered with an error, never sent again (it may have been half handled).
    crashed: Arc<DashMap<Addr<A>, ()>>,
    kind: &'static str,
}

/// Crashed actors remembered for their waiters; past it the oldest memory is dropped (its
/// waiters were answered long ago).
const MAX_CRASHED: usize = 1024;

impl<A: Actor<Context = Context<A>>> Registry<A> {
    /// `make` builds the actor of a family; the actor gets the shared map (see [`Self::actors`])
    /// so that it can remove itself when it stops.
    pub fn new(
        kind: &'static str,
        actors: Actors<A>,
        metrics: Arc<Metrics>,
        make: impl Fn(i64) -> A + Send + Sync + 'static,
    ) -> Self {
        Registry {
            actors,
            make: Box::new(make),
            metrics,
            crashed: Arc::new(DashMap::new()),
            kind,
        }
    }

    /// The family's actor, started (with its panics caught) if none runs.
    pub fn addr(&self, family_id: i64) -> Addr<A> {
        self.actors
            .entry(family_id)
            .or_insert_with(|| {
                let (actors, crashed) = (self.actors.clone(), self.crashed.clone());
                start_caught(
                    (self.make)(family_id),
                    self.metrics.clone(),
                    format!("the {} of family {family_id}", self.kind),
                    move |me| {
                        if crashed.len() >= MAX_CRASHED {
                            crashed.clear();
                        }
                        crashed.insert(me.clone(), ());
                        deregister(&actors, family_id, me);
                    },
                )
            })
            .clone()
    }

    /// Sends `msg` to every running actor.
    pub fn broadcast<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Clone + Send + 'static,
        A: Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
    {
        for entry in self.actors.iter() {
            entry.value().do_send(msg.clone());
        }
    }

    /// Sends `msg` to the family's actor, starting one if needed. An actor that stopped (idle)
    /// before it took the message is replaced and the message sent again: it was never handled.
    pub async fn send<M, R, E>(&self, family_id: i64, msg: M) -> Result<R, E>
    where
        M: Message<Result = Result<R, E>> + Clone + Send + 'static,
        E: From<ActorGone> + Send + 'static,
        R: Send + 'static,
        A: Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
    {
        for _ in 0..3 {
            let addr = self.addr(family_id);
            match addr.send(msg.clone()).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => {
                    // An actor that stops when idle leaves the map first; one that is still in
                    // it (or was taken out by its crash) panicked, maybe while handling this
                    // message: never send it again. Its waiters all get the error, and the
                    // next message starts a fresh actor.
                    let registered = self.actors.get(&family_id).is_some_and(|a| *a == addr);
                    if registered || self.crashed.contains_key(&addr) {
                        self.actors.remove_if(&family_id, |_, a| *a == addr);
                        break;
                    }
                }
                Err(MailboxError::Timeout) => break,
            }
        }
        Err(ActorGone { family_id }.into())
    }
}

/// Removes `me` from the map if it is still the registered actor of `family_id`.
pub fn deregister<A: Actor>(actors: &Actors<A>, family_id: i64, me: &Addr<A>) {
    actors.remove_if(&family_id, |_, addr| addr == me);
}

//! Family id → actor address, created on demand (one FamilyBoard and one ChatRoom per family).
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::config::Timing;
use crate::fanout::Bus;
use crate::metrics::Metrics;
use crate::push::Push;
use crate::store::Db;
use crate::store::persister::Persister;

pub type Actors<A> = Arc<DashMap<i64, Addr<A>>>;

/// What every per-family actor (FamilyBoard, ChatRoom) needs from the application; `actors` is
/// its own registry's map, so that it can remove itself when it stops.
pub struct FamilyDeps<A: Actor> {
    pub db: Db,
    pub persister: Addr<Persister>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub push: Push,
    /// The other nodes (cluster mode); `None` on a single node.
    pub bus: Option<Arc<dyn Bus>>,
    pub actors: Actors<A>,
}

/// The family's actor could not be reached: it stopped again and again, or its mailbox timed out.
#[derive(Debug, thiserror::Error)]
#[error("family {family_id}: actor unavailable")]
pub struct ActorGone {
    pub family_id: i64,
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
            bus: self.bus.clone(),
            actors: self.actors.clone(),
        }
    }
}

pub struct Registry<A: Actor<Context = Context<A>>> {
    actors: Actors<A>,
    make: Box<dyn Fn(i64) -> A + Send + Sync>,
}

impl<A: Actor<Context = Context<A>>> Registry<A> {
    /// `make` builds the actor of a family; the actor gets the shared map (see [`Self::actors`])
    /// so that it can remove itself when it stops.
    pub fn new(actors: Actors<A>, make: impl Fn(i64) -> A + Send + Sync + 'static) -> Self {
        Registry {
            actors,
            make: Box::new(make),
        }
    }

    pub fn addr(&self, family_id: i64) -> Addr<A> {
        self.actors
            .entry(family_id)
            .or_insert_with(|| (self.make)(family_id).start())
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
                    self.actors.remove_if(&family_id, |_, a| *a == addr);
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

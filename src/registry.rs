//! Family id → actor address, created on demand (one FamilyBoard and one ChatRoom per family).
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::config::Timing;
use crate::error::ApiError;
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
    pub actors: Actors<A>,
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

    pub fn actors(&self) -> &Actors<A> {
        &self.actors
    }

    pub fn addr(&self, family_id: i64) -> Addr<A> {
        self.actors
            .entry(family_id)
            .or_insert_with(|| (self.make)(family_id).start())
            .clone()
    }

    /// The family's actor if it is running.
    pub fn running(&self, family_id: i64) -> Option<Addr<A>> {
        self.actors.get(&family_id).map(|a| a.clone())
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
    pub async fn send<M, R>(&self, family_id: i64, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Result<R, ApiError>> + Clone + Send + 'static,
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
        Err(ApiError::internal(format!(
            "family {family_id}: actor unavailable"
        )))
    }
}

/// Removes `me` from the map if it is still the registered actor of `family_id`.
pub fn deregister<A: Actor>(actors: &Actors<A>, family_id: i64, me: &Addr<A>) {
    actors.remove_if(&family_id, |_, addr| addr == me);
}

//! Finds or starts the FamilyBoard actor of a family.
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;

use super::actor::{BoardDeps, CloseSessions, FamilyBoard};
use crate::error::ApiError;

pub struct BoardRegistry {
    deps: BoardDeps,
}

impl BoardRegistry {
    pub fn new(deps: BoardDeps) -> Self {
        BoardRegistry { deps }
    }

    pub fn actors(&self) -> &Arc<DashMap<i64, Addr<FamilyBoard>>> {
        &self.deps.actors
    }

    /// Ends every SSE stream (shutdown), so the HTTP server can finish its connections.
    pub fn close_sessions(&self) {
        for entry in self.deps.actors.iter() {
            entry.value().do_send(CloseSessions);
        }
    }

    fn addr(&self, family_id: i64) -> Addr<FamilyBoard> {
        self.deps
            .actors
            .entry(family_id)
            .or_insert_with(|| FamilyBoard::new(family_id, self.deps.clone()).start())
            .clone()
    }

    /// Sends `msg` to the family's actor, starting one if needed. An actor that stopped (idle)
    /// before it took the message is replaced and the message sent again: it was never handled.
    pub async fn send<M, R>(&self, family_id: i64, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Result<R, ApiError>> + Clone + Send + 'static,
        R: Send + 'static,
        FamilyBoard: Handler<M>,
    {
        for _ in 0..3 {
            let addr = self.addr(family_id);
            match addr.send(msg.clone()).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => {
                    self.deps.actors.remove_if(&family_id, |_, a| *a == addr);
                }
                Err(MailboxError::Timeout) => break,
            }
        }
        Err(ApiError::internal(format!(
            "family {family_id}: board actor unavailable"
        )))
    }
}

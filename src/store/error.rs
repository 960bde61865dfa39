//! The store layer's error: what went wrong with the database, classified once ([`fault_of`]) so
//! that every caller can tell a database that is away (503 `unavailable`), a full disk (507
//! `storage_full`) and a commit of unknown outcome from a bug (500). `api/` alone turns it into
//! HTTP.
use sea_orm::DbErr;

use super::fault::{Fault, fault_of};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database is not available (unreachable, timed out, refusing work): nothing was
    /// applied, or see [`StoreError::Uncertain`].
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The commit did not finish within `DB_TIMEOUT` or lost its connection on the way: it may
    /// or may not have been applied. Not acknowledged; the writer must reload before going on.
    #[error("the commit's outcome is unknown (timed out or connection lost)")]
    Uncertain,
    /// The database's disk is full; nothing was applied.
    #[error("database storage full: {0}")]
    StorageFull(String),
    /// An error of the statement itself (a constraint, a bug) or a row that must exist and does
    /// not.
    #[error("database: {0}")]
    Database(String),
    /// The Persister is gone (the process is stopping).
    #[error("the persister stopped")]
    Stopped,
}

impl StoreError {
    /// A row the schema promises is missing (a bug or a manual edit): 500.
    pub fn missing(what: impl std::fmt::Display) -> Self {
        StoreError::Database(format!("{what} missing"))
    }

    /// The database failed, rather than this one request.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Uncertain | StoreError::StorageFull(_)
        )
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match fault_of(&err) {
            Some(Fault::Unavailable) => StoreError::Unavailable(err.to_string()),
            Some(Fault::StorageFull) => StoreError::StorageFull(err.to_string()),
            None => StoreError::Database(err.to_string()),
        }
    }
}

/// Why the Persister did not commit a write: the write-specific refusals, found by the guards in
/// its statements, or the database's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("the family's board changed underneath (another server?)")]
    Conflict,
    #[error("the wish is no longer available")]
    WishNotAvailable,
    #[error("the mission is no longer submitted")]
    MissionLocked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PersistError {
    /// A failure of the database, not of the write.
    pub fn is_fault(&self) -> bool {
        matches!(self, PersistError::Store(err) if err.is_fault())
    }
}

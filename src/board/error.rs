//! The board layer's error: why a command was refused or failed. `api/` maps it to HTTP.
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    #[error("no such wish")]
    NoSuchWish,
    #[error("no such mission")]
    NoSuchMission,
    #[error("there is no active board")]
    NoBoard,
    /// Approving a mission needs an active board for the reward (API.md: a 409, not a 404).
    #[error("there is no active board for the reward")]
    NoBoardForReward,
    #[error("a board is already active")]
    BoardExists,
    #[error("this wish is not available for a board")]
    WishNotAvailable,
    #[error("the mission cannot change in its current state")]
    MissionLocked,
    #[error("that many grapes do not fit on the board")]
    BoardFull,
    #[error("there is no granted grape to attach")]
    NothingToAttach,
    /// A value the rules refuse, named by its request field.
    #[error("{field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    /// Another server process changed the board underneath, `CONFLICT_ATTEMPTS` times.
    #[error("the board kept changing underneath; try again")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The family's actor could not be reached (it stopped, or a bug).
    #[error("{0}")]
    Internal(String),
}

impl From<crate::registry::ActorGone> for BoardError {
    fn from(gone: crate::registry::ActorGone) -> Self {
        BoardError::Internal(gone.to_string())
    }
}

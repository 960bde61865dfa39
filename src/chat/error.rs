//! The chat layer's error. `api/` and the sessions turn it into what a client sees (a close code
//! 1011 when a room cannot be joined).
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The room could not read what it needs (its members, last seq, recent client ids).
    #[error(transparent)]
    Store(#[from] StoreError),
}

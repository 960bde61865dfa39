//! The grape board: pure rules, the FamilyBoard actor per family, its registry, reads, and the
//! live board over SSE.
pub mod actor;
pub mod error;
pub mod messages;
pub mod planner;
pub mod rules;
pub mod sse;
pub mod store;
pub mod view;

pub use actor::{BoardDeps, FamilyBoard};
pub use error::BoardError;
pub use messages::{CloseSessions, Command, GetBoard, Subscribe};

/// Family id → FamilyBoard.
pub type BoardRegistry = crate::registry::Registry<FamilyBoard>;
pub use view::{Board, Snapshot};

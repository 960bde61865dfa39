//! The grape board: pure rules, the FamilyBoard actor per family, its registry, reads.
pub mod actor;
pub mod registry;
pub mod rules;
pub mod store;
pub mod view;

pub use actor::{BoardDeps, Command, FamilyBoard, GetBoard};
pub use registry::BoardRegistry;
pub use view::{Board, Snapshot};

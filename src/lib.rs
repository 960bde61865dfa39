//! podo: a realtime family server. See docs/ARCHITECTURE.md for the architecture and docs/API.md
//! for the contract.
pub mod api;
pub mod app;
pub mod auth;
pub mod board;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod push;
pub mod registry;
pub mod store;

pub use app::Application;
pub use config::Config;

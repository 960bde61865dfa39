//! podo: a realtime family server. See docs/ARCHITECTURE.md for the architecture and docs/API.md
//! for the contract.
pub mod api;
pub mod app;
pub mod auth;
pub mod board;
pub mod chat;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod fanout;
pub mod metrics;
pub mod missions;
pub mod model;
pub mod push;
pub mod recent;
pub mod registry;
pub mod state;
pub mod status;
pub mod store;
pub mod supervise;

pub use app::Application;
pub use config::Config;

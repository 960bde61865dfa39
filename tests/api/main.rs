//! Integration tests over real HTTP against a real server (see helpers.rs).
mod accounts;
mod board;
mod chat;
mod errors;
mod helpers;
mod missions;
mod openapi;
mod pairing;
mod push;
#[path = "../support/push_service.rs"]
mod push_service;
mod sse;
mod wishes;

//! Integration tests over real HTTP against a real server (see helpers.rs).
mod accounts;
mod board;
mod chat;
mod errors;
mod helpers;
mod limits_auth;
mod missions;
mod openapi;
mod pairing;
mod push;
mod sse;
mod wishes;

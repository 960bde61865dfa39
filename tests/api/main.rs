//! Integration tests over real HTTP against a real server (see helpers.rs).
mod accounts;
mod errors;
mod helpers;
mod pairing;

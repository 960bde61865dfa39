//! Integration tests over real HTTP against a real server (see helpers.rs).
mod accounts;
mod board;
mod chat;
mod cluster;
mod errors;
#[path = "../support/fake_fcm.rs"]
mod fake_fcm;
#[path = "../support/fault_proxy.rs"]
mod fault_proxy;
mod faults;
mod fcm;
mod helpers;
mod limits_auth;
mod limits_chat;
mod missions;
mod openapi;
mod pairing;
#[path = "../support/podo_process.rs"]
mod podo_process;
mod push;
#[path = "../support/push_service.rs"]
mod push_service;
mod raw_ws;
#[path = "../support/redis.rs"]
mod redis_server;
mod sse;
mod supervision;
mod wishes;

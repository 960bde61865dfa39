//! HTTP handlers, one file per resource: parse, authorize, call, map.
pub mod accounts;
pub mod board;
pub mod chat;
pub mod extract;
pub mod family;
pub mod ops;
pub mod wishes;

use actix_web::web;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig, static_dir: &std::path::Path) {
    cfg.service(
        web::scope("/api")
            .configure(accounts::routes)
            .configure(family::routes)
            .configure(wishes::routes)
            .configure(board::routes)
            .configure(chat::routes)
            .default_service(web::to(not_found)),
    )
    .configure(ops::routes)
    // The web client: plain files, `/` serves index.html.
    .service(
        actix_files::Files::new("/", static_dir)
            .index_file("index.html")
            .prefer_utf8(true),
    )
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("no such resource"))
}

/// Length in Unicode scalar values (what API.md means by "chars").
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

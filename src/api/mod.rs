//! HTTP handlers, one file per resource: parse, authorize, call, map.
pub mod accounts;
pub mod board;
pub mod calendar;
pub mod chat;
pub mod extract;
pub mod family;
pub mod headers;
pub mod missions;
pub mod openapi;
pub mod ops;
pub mod push;
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
            .configure(push::routes)
            .configure(missions::routes)
            .configure(calendar::routes)
            .configure(openapi::routes)
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

const MAX_URL: usize = 2048;

/// An absolute http(s) URL with a host, no blanks or control characters, at most 2048 bytes.
pub fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    s.len() <= MAX_URL
        && !host.is_empty()
        && !host.starts_with(':')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::is_http_url;

    #[test]
    fn urls() {
        for ok in [
            "http://a.b",
            "https://shop.example:8443/x?y#z",
            "HTTPS://X.COM",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        let long = format!("https://a.com/{}", "x".repeat(2040));
        for bad in [
            "ftp://a.b",
            "https://",
            "http:///path",
            "https://a b.com",
            "javascript:alert(1)",
            "/relative",
            &long,
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}

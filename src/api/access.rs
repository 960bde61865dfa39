//! The access log, without secrets: the `access_token` query value is replaced.
//!
//! Most requests are logged by actix-web's `Logger` when their body has gone out. A chat
//! WebSocket's "body" is the socket itself, and the `Logger` would keep its rendered line (about
//! half a KiB) alive for the socket's whole life, so [`CHAT_WS_PATH`] is left out of it and
//! logged by [`log_answer`] when the upgrade is answered (101, or the refusal), with the time to
//! answer; the session's own lines tell how it ended.
use std::future::Future;
use std::time::Instant;

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::middleware::Logger;

/// The chat WebSocket's path, logged on answer rather than by the `Logger`.
pub const CHAT_WS_PATH: &str = "/api/chat/ws";

/// The `Logger` of every other request.
pub fn access_log() -> Logger {
    Logger::new("%{peer}xi \"%{request}xi\" %s %b %Dms")
        .exclude(CHAT_WS_PATH)
        .custom_request_replace("peer", |req| peer(req.peer_addr()))
        .custom_request_replace("request", |req| request_line(req.request()))
}

/// `wrap_fn` for the chat WebSocket's resource: one line in the `Logger`'s format (the body size
/// is `-`) as soon as the upgrade is answered; nothing is kept while the socket is open.
pub fn log_answer<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    let started = Instant::now();
    let line = format!(
        "{} \"{}\"",
        peer(req.peer_addr()),
        request_line(req.request())
    );
    let answer = srv.call(req);
    async move {
        let answer = answer.await;
        let status = match &answer {
            Ok(res) => res.status(),
            Err(err) => err.as_response_error().status_code(),
        };
        log::info!(
            target: "actix_web::middleware::logger",
            "{line} {} - {:.6}ms",
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        answer
    }
}

fn peer(addr: Option<std::net::SocketAddr>) -> String {
    addr.map(|a| a.ip().to_string()).unwrap_or_default()
}

fn request_line(req: &actix_web::HttpRequest) -> String {
    let query = redact_query(req.query_string());
    let sep = if query.is_empty() { "" } else { "?" };
    format!("{} {}{sep}{query}", req.method(), req.path())
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some(("access_token", _)) => "access_token=REDACTED",
            _ => pair,
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_token_is_redacted() {
        assert_eq!(
            super::redact_query("a=1&access_token=secret&b=2"),
            "a=1&access_token=REDACTED&b=2"
        );
    }
}

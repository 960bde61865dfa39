//! Chat: the WebSocket endpoint and the history.
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::access;
use super::identity::{AuthUser, StreamAuthUser};
use crate::auth::revocation::token_ends_at;
use crate::auth::sessions::SessionLease;
use crate::chat::frames::{ChatMessage, MAX_FRAME_BYTES};
use crate::chat::session::WsSession;
use crate::chat::store::{self, Page};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Logged when the upgrade is answered, not when the socket ends (see `access`).
    cfg.service(
        web::resource("/chat/ws")
            .wrap_fn(access::log_answer)
            .route(web::get().to(websocket)),
    )
    .route("/chat/messages", web::get().to(messages));
}

/// `GET /api/chat/ws`: identity, family and the per-user session limit are checked before the
/// upgrade, so a bad token is a plain 401, a user without a family a plain 403 and one with too
/// many sockets open a plain 429.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    StreamAuthUser(member, token): StreamAuthUser,
) -> Result<HttpResponse, actix_web::Error> {
    let family_id = member.family()?;
    let slot = state.chat_slots.take(member.id)?;
    let mut response = actix_http::ws::handshake(req.head())?;
    // actix-ws decodes the client's frames; the session's own body writes its frames (no
    // `actix_ws::Session`, its channel or a writer task: see `chat::session`).
    let incoming = actix_ws::MessageStream::new(body.into_inner()).max_frame_size(MAX_FRAME_BYTES);
    let room = state.chats.addr(family_id);
    // The socket closes with 4001 when the token expires or is revoked; the slot and the
    // token's registration go back when the connection ends.
    let (mut frames, session) = WsSession::start(
        member.id,
        family_id,
        room,
        state.chat_session_deps.clone(),
        incoming,
        token_ends_at(token.exp),
    );
    let watch = state
        .revocations
        .watch(&token.id, WsSession::revoked(session));
    frames.hold(SessionLease::new(slot, watch));
    Ok(HttpResponse::from(response.message_body(frames)?).map_into_boxed_body())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The first `limit` messages after this seq (not with `before_seq`).
    after_seq: Option<i64>,
    /// The newest `limit` messages before this seq, for scrolling back (not with `after_seq`).
    before_seq: Option<i64>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<u64>,
}

/// Which page of history, and how many messages.
fn history_page(query: &HistoryQuery) -> Result<(Page, u64), ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "1-200"));
    }
    let page = match (query.after_seq, query.before_seq) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "before_seq",
                "give after_seq or before_seq, not both",
            ));
        }
        (Some(after), None) => Page::After(after),
        (None, Some(before)) => Page::Before(before),
        (None, None) => Page::Newest,
    };
    Ok((page, limit))
}

/// A history item: exactly the WebSocket `message` frame, `{"type": "message", ...ChatMessage}`.
#[derive(Serialize, utoipa::ToSchema)]
struct MessageFrame {
    #[serde(rename = "type")]
    #[schema(inline)]
    kind: MessageType,
    #[serde(flatten)]
    message: ChatMessage,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum MessageType {
    Message,
}

/// The `GET /api/chat/messages` body.
#[derive(Serialize, utoipa::ToSchema)]
struct ChatHistory {
    /// Ascending by seq.
    messages: Vec<MessageFrame>,
    /// The family's last committed seq (0 before the first message).
    last_seq: i64,
}

#[utoipa::path(
    get,
    path = "/api/chat/messages",
    tag = "chat",
    operation_id = "chat_messages",
    summary = "Chat history",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of the family's chat history; with neither `after_seq` nor `before_seq`, the newest `limit` messages", body = ChatHistory),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `limit` out of 1-200, or both `after_seq` and `before_seq`", body = ErrorBody),
    )
)]
async fn messages(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let (page, limit) = history_page(&query)?;
    // Each item is exactly the `message` frame a live client gets.
    let messages = store::page(&state.db, family_id, page, limit)
        .await?
        .into_iter()
        .map(|message| MessageFrame {
            kind: MessageType::Message,
            message,
        })
        .collect();
    let last_seq = store::last_seq(&state.db, family_id).await?;
    Ok(HttpResponse::Ok().json(ChatHistory { messages, last_seq }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn history_queries_are_checked_or_refused(query in fuzz::query(&["after_seq", "before_seq", "limit"])) {
            let parsed = fuzz::parse_query::<HistoryQuery>(&query);
            fuzz::accepted_or_refused(parsed.and_then(|q| history_page(&q)))?;
        }
    }
}

//! Chat: the WebSocket endpoint and the history.
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{AuthUser, StreamAuthUser};
use crate::chat::WsSession;
use crate::chat::frames::{MAX_FRAME_BYTES, ServerFrame};
use crate::chat::store::{self, Page};
use crate::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat/ws", web::get().to(websocket))
        .route("/chat/messages", web::get().to(messages));
}

/// `GET /api/chat/ws`: identity and family are checked before the upgrade, so a bad token is a
/// plain 401 and a user without a family a plain 403.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    StreamAuthUser(member): StreamAuthUser,
) -> Result<HttpResponse, actix_web::Error> {
    let family_id = member.family()?;
    let (response, ws, incoming) = actix_ws::handle(&req, body)?;
    let room = state.chats.addr(family_id);
    WsSession::start(
        member.id,
        family_id,
        room,
        state.chat_deps.clone(),
        ws,
        incoming.max_frame_size(MAX_FRAME_BYTES),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct HistoryQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<u64>,
}

async fn messages(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
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
    // Each item is exactly the `message` frame a live client gets.
    let messages = store::page(&state.db, family_id, page, limit)
        .await?
        .iter()
        .map(|m| serde_json::to_value(ServerFrame::Message(m)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    let last_seq = store::last_seq(&state.db, family_id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "messages": messages, "last_seq": last_seq })))
}

//! The grape board: read, open, cancel, grant, attach, history. Changes go through the family's
//! FamilyBoard actor.
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::char_len;
use super::extract::{JsonBody, OptionalJsonBody};
use crate::app::AppState;
use crate::auth::{AuthUser, StreamAuthUser};
use crate::board::rules::{DEFAULT_SIZE, MAX_GRANT, MAX_SIZE};
use crate::board::sse::{self, SseSession};
use crate::board::{Command, GetBoard, Snapshot, Subscribe, Unsubscribe};
use crate::error::{ApiError, FieldErrors};
use crate::model::{Role, ts};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/board", web::get().to(get))
        .route("/board", web::post().to(create))
        .route("/board", web::delete().to(cancel))
        .route("/board/grant", web::post().to(grant))
        .route("/board/attach", web::post().to(attach))
        .route("/board/history", web::get().to(history))
        .route("/board/events", web::get().to(events));
}

async fn get(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let snapshot = state.boards.send(member.family()?, GetBoard).await?;
    Ok(HttpResponse::Ok().json(snapshot))
}

fn board_of(snapshot: Snapshot) -> Result<crate::board::Board, ApiError> {
    snapshot
        .board
        .ok_or_else(|| ApiError::internal("a change left no board"))
}

#[derive(Deserialize)]
struct CreateRequest {
    wish_id: Option<i64>,
    size: Option<i64>,
}

async fn create(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let size = body.size.unwrap_or(DEFAULT_SIZE.into());
    let mut errors = FieldErrors::default();
    errors.check(body.wish_id.is_some(), "wish_id", "required");
    errors.check((1..=MAX_SIZE.into()).contains(&size), "size", "1-100");
    errors.finish()?;
    let command = Command::Create {
        by: member.id,
        wish_id: body.wish_id.unwrap_or_default(),
        size: size as i32,
    };
    let board = board_of(state.boards.send(family_id, command).await?)?;
    Ok(HttpResponse::Created().json(board))
}

async fn cancel(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    state
        .boards
        .send(member.family()?, Command::Cancel { by: member.id })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

fn check_key(errors: &mut FieldErrors, key: &Option<String>) {
    if let Some(key) = key {
        errors.check((1..=64).contains(&char_len(key)), "key", "1-64 characters");
    }
}

#[derive(Deserialize)]
struct GrantRequest {
    count: Option<i64>,
    key: Option<String>,
}

async fn grant(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let mut errors = FieldErrors::default();
    let count = body.count.unwrap_or(0);
    errors.check((1..=MAX_GRANT.into()).contains(&count), "count", "1-100");
    check_key(&mut errors, &body.key);
    errors.finish()?;
    let command = Command::Grant {
        by: member.id,
        count: count as i32,
        key: body.key,
    };
    let board = board_of(state.boards.send(family_id, command).await?)?;
    Ok(HttpResponse::Ok().json(board))
}

#[derive(Deserialize, Default)]
struct AttachRequest {
    key: Option<String>,
}

async fn attach(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    OptionalJsonBody(body): OptionalJsonBody<AttachRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    let family_id = member.family()?;
    let mut errors = FieldErrors::default();
    check_key(&mut errors, &body.key);
    errors.finish()?;
    let command = Command::Attach {
        by: member.id,
        key: body.key,
    };
    let board = board_of(state.boards.send(family_id, command).await?)?;
    Ok(HttpResponse::Ok().json(board))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<u64>,
}

#[derive(Serialize)]
struct HistoryEvent {
    seq: i64,
    board_id: i64,
    kind: String,
    count: i32,
    by_user_id: i64,
    #[serde(serialize_with = "ts::serialize")]
    at: chrono::DateTime<chrono::Utc>,
}

async fn history(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "1-500"));
    }
    let events: Vec<HistoryEvent> = crate::board::store::history(&state.db, family_id, limit)
        .await?
        .into_iter()
        .map(|e| HistoryEvent {
            seq: e.id,
            board_id: e.board_id,
            kind: e.kind,
            count: e.count,
            by_user_id: e.by_user_id,
            at: e.at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}

/// `GET /api/board/events`: the live board (API.md "Live board"). Auth and family are checked
/// before the stream starts, so a bad token is a plain 401.
async fn events(
    state: web::Data<AppState>,
    StreamAuthUser(member): StreamAuthUser,
) -> Result<HttpResponse, ApiError> {
    use actix::Actor;
    let family_id = member.family()?;
    let (latest, receiver) = tokio::sync::watch::channel(None);
    let id = sse::next_session_id();
    let actors = state.boards.actors().clone();
    let session = SseSession::new(
        latest,
        state.metrics.clone(),
        Box::new(move || {
            if let Some(board) = actors.get(&family_id) {
                board.do_send(Unsubscribe { id });
            }
        }),
    )
    .start();
    state
        .boards
        .send(family_id, Subscribe { id, session })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(sse::event_stream(receiver, state.config.timing.sse_ping())))
}

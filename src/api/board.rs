//! The grape board: read, open, cancel, grant, attach, history. Changes go through the family's
//! FamilyBoard actor.
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, OptionalJsonBody};
use super::fields::char_len;
use super::identity::{AuthUser, StreamAuthUser};
use crate::auth::revocation::token_ends_at;
use crate::auth::sessions::SessionLease;
use crate::board::rules::{DEFAULT_SIZE, MAX_GRANT, MAX_SIZE};
use crate::board::sse::SseSession;
use crate::board::{Board, Command, GetBoard, Snapshot, Subscribe};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::model::{Role, ts};
use crate::state::AppState;
use crate::status::HistoryKind;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/board", web::get().to(get))
        .route("/board", web::post().to(create))
        .route("/board", web::delete().to(cancel))
        .route("/board/grant", web::post().to(grant))
        .route("/board/attach", web::post().to(attach))
        .route("/board/history", web::get().to(history))
        .route("/board/events", web::get().to(events));
}

#[utoipa::path(
    get,
    path = "/api/board",
    tag = "board",
    operation_id = "get_board",
    summary = "The current board",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The active board, else the latest completed one, else null", body = Snapshot),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
    )
)]
async fn get(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let snapshot = state.boards.send(member.family()?, GetBoard).await?;
    Ok(HttpResponse::Ok().json(snapshot))
}

fn board_of(snapshot: Snapshot) -> Result<Board, ApiError> {
    snapshot
        .board
        .ok_or_else(|| ApiError::internal("a change left no board"))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CreateRequest {
    /// A `wished` wish of the family's child.
    #[schema(value_type = i64)]
    wish_id: Option<i64>,
    #[schema(value_type = Option<i64>, nullable = false, minimum = 1, maximum = 100, default = 31)]
    size: Option<i64>,
}

/// The wish and the size of a new board.
fn check_create(body: &CreateRequest) -> Result<(i64, i32), ApiError> {
    let size = body.size.unwrap_or(DEFAULT_SIZE.into());
    let mut errors = FieldErrors::default();
    errors.check(body.wish_id.is_some(), "wish_id", "required");
    errors.check((1..=MAX_SIZE.into()).contains(&size), "size", "1-100");
    errors.finish()?;
    Ok((body.wish_id.unwrap_or_default(), size as i32))
}

#[utoipa::path(
    post,
    path = "/api/board",
    tag = "board",
    operation_id = "create_board",
    summary = "Open a board for a wish (parent)",
    security(("bearer" = [])),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The new active board; its wish is now `picked`", body = Board),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such wish in the family", body = ErrorBody),
        (status = 409, description = "`board_exists` while a board is active; `wish_not_available` unless the wish is `wished`; `conflict` when another server changed the board meanwhile", body = ErrorBody),
    )
)]
async fn create(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let (wish_id, size) = check_create(&body)?;
    let command = Command::Create {
        by: member.id,
        wish_id,
        size,
    };
    let board = board_of(state.boards.send(family_id, command).await?)?;
    Ok(HttpResponse::Created().json(board))
}

#[utoipa::path(
    delete,
    path = "/api/board",
    tag = "board",
    operation_id = "cancel_board",
    summary = "Cancel the active board (parent)",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The active board is cancelled; its wish is `wished` again"),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`no_board`: no active board", body = ErrorBody),
        (status = 409, description = "`conflict`: another server changed the board meanwhile", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
struct GrantRequest {
    #[schema(value_type = i64, minimum = 1, maximum = 100)]
    count: Option<i64>,
    /// Idempotency key: the same user repeating it gets the first answer's board back.
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 64)]
    key: Option<String>,
}

/// The grant's count (its key is checked too).
fn check_grant(body: &GrantRequest) -> Result<i32, ApiError> {
    let mut errors = FieldErrors::default();
    let count = body.count.unwrap_or(0);
    errors.check((1..=MAX_GRANT.into()).contains(&count), "count", "1-100");
    check_key(&mut errors, &body.key);
    errors.finish()?;
    Ok(count as i32)
}

#[utoipa::path(
    post,
    path = "/api/board/grant",
    tag = "board",
    operation_id = "grant_grapes",
    summary = "Grant grapes (parent)",
    security(("bearer" = [])),
    request_body = GrantRequest,
    responses(
        (status = 200, description = "The board after the grant; pushed to the child", body = Board),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`no_board`: no active board", body = ErrorBody),
        (status = 409, description = "`board_full`: `granted + count > size`; `conflict` when another server changed the board meanwhile", body = ErrorBody),
    )
)]
async fn grant(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let count = check_grant(&body)?;
    let command = Command::Grant {
        by: member.id,
        count,
        key: body.key,
    };
    let board = board_of(state.boards.send(family_id, command).await?)?;
    Ok(HttpResponse::Ok().json(board))
}

/// An empty body or `{}` is fine.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct AttachRequest {
    /// Idempotency key: the same user repeating it gets the first answer's board back.
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 64)]
    key: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/board/attach",
    tag = "board",
    operation_id = "attach_grape",
    summary = "Attach one granted grape (child)",
    security(("bearer" = [])),
    request_body(content = Option<AttachRequest>, description = "An empty body, `{}` or `{\"key\"}`"),
    responses(
        (status = 200, description = "The board after attaching one grape; the attach that fills it completes it (`complete`, its wish `given`)", body = Board),
        (status = 403, description = "`forbidden_role` (only the child) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`no_board`: no active board", body = ErrorBody),
        (status = 409, description = "`nothing_to_attach`: `unattached = 0`; `conflict` when another server changed the board meanwhile", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// How many events, newest first.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HistoryEvent {
    /// The ledger row id (ascending in commit order).
    seq: i64,
    board_id: i64,
    kind: HistoryKind,
    /// `created`: the board size; `granted`: grapes granted; `attached`: 1; else 0.
    count: i32,
    by_user_id: i64,
    #[serde(serialize_with = "ts::serialize")]
    at: chrono::DateTime<chrono::Utc>,
}

/// The `GET /api/board/history` body.
#[derive(Serialize, utoipa::ToSchema)]
struct BoardHistory {
    /// Newest first.
    events: Vec<HistoryEvent>,
}

fn history_limit(query: &HistoryQuery) -> Result<u64, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "1-500"));
    }
    Ok(limit)
}

#[utoipa::path(
    get,
    path = "/api/board/history",
    tag = "board",
    operation_id = "board_history",
    summary = "The family's board events, newest first",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "The family's board events, newest first", body = BoardHistory),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `limit` out of 1-500", body = ErrorBody),
    )
)]
async fn history(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let limit = history_limit(&query)?;
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
    Ok(HttpResponse::Ok().json(BoardHistory { events }))
}

/// `GET /api/board/events`: the live board (API.md "Live board"). Auth and family are checked
/// before the stream starts, so a bad token is a plain 401.
#[utoipa::path(
    get,
    path = "/api/board/events",
    tag = "board",
    operation_id = "board_events",
    summary = "The live board (Server-Sent Events)",
    description = "Every member's streams get every change as the full state. A client never sees an older \
        version after a newer one and may miss intermediate versions when slow (latest state wins); \
        a reconnect, with or without `Last-Event-ID`, gets the current state at once.",
    security(("bearer" = []), ("access_token" = [])),
    params(
        ("access_token" = Option<String>, Query, description = "The token, for EventSource clients that cannot set `Authorization`"),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, description = "Accepted on reconnect; the stream always starts with the current state"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events: `retry: 2000`, then at once and after every change `event: board`, \
                `id: <version>`, `data: {\"board\": Board|null}` (exactly what `GET /api/board` answers at that \
                version); a `: ping` comment every 15 s"),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
        (status = 429, description = "`too_many_sessions`: the user has `--max-sessions-per-user` (16) streams open", body = ErrorBody),
    )
)]
async fn events(
    state: web::Data<AppState>,
    StreamAuthUser(member, token): StreamAuthUser,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let slot = state.sse_slots.take(member.id)?;
    // The body exists before the FamilyBoard knows the session: if subscribing fails, dropping
    // the body ends the session. The stream ends when its token expires or is revoked.
    let (session_id, session, body) = SseSession::start(
        state.metrics.clone(),
        state.config.timing.sse_ping(),
        token_ends_at(token.exp),
    );
    let watch = state
        .revocations
        .watch(&token.id, SseSession::revoked(session.downgrade()));
    // The body holds the slot and the token's registration: both go back when it is dropped,
    // however the stream ended.
    let lease = SessionLease::new(slot, watch);
    let body = futures_util::StreamExt::map(body, move |chunk| {
        let _held = &lease;
        chunk
    });
    let subscribe = Subscribe {
        session_id,
        session: session.recipient(),
    };
    state.boards.send(family_id, subscribe).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn board_bodies_are_checked_or_refused(bytes in fuzz::body(&["wish_id", "size", "count", "key"])) {
            fuzz::accepted_or_refused(fuzz::parse::<CreateRequest>(&bytes).and_then(|b| check_create(&b)))?;
            fuzz::accepted_or_refused(fuzz::parse::<GrantRequest>(&bytes).and_then(|b| check_grant(&b)))?;
            let attach = fuzz::parse::<AttachRequest>(&bytes).and_then(|b| {
                let mut errors = FieldErrors::default();
                check_key(&mut errors, &b.key);
                errors.finish()
            });
            fuzz::accepted_or_refused(attach)?;
        }

        #[test]
        fn history_queries_are_checked_or_refused(query in fuzz::query(&["limit"])) {
            let parsed = fuzz::parse_query::<HistoryQuery>(&query);
            fuzz::accepted_or_refused(parsed.and_then(|q| history_limit(&q)))?;
        }
    }
}

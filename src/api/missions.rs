//! Missions: the parent creates chores with a grape reward, the child submits, the parent approves
//! (the reward is granted to the board in the same transaction) or rejects.
use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, OptionalJsonBody, nullable, required_text};
use super::fields::{char_len, date, parse_date};
use super::identity::AuthUser;
use crate::board::{Board, Command};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::missions;
use crate::model::{Role, ts};
use crate::push::Notification;
use crate::state::AppState;
use crate::status::MissionStatus;
use crate::store::entities::mission;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/missions", web::get().to(list))
        .route("/missions", web::post().to(create))
        .route("/missions/{id}", web::patch().to(update))
        .route("/missions/{id}", web::delete().to(delete))
        .route("/missions/{id}/submit", web::post().to(submit))
        .route("/missions/{id}/approve", web::post().to(approve))
        .route("/missions/{id}/reject", web::post().to(reject));
}

// `required = true` on the `Option` fields: they are always present, `null` when unset.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct Mission {
    id: i64,
    title: String,
    /// Grapes granted when approved.
    reward: i32,
    #[schema(required = true)]
    due_on: Option<NaiveDate>,
    status: MissionStatus,
    #[schema(required = true)]
    reject_reason: Option<String>,
    #[serde(serialize_with = "ts::serialize")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts::option::serialize")]
    #[schema(required = true)]
    submitted_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ts::option::serialize")]
    #[schema(required = true)]
    decided_at: Option<DateTime<Utc>>,
}

impl From<mission::Model> for Mission {
    fn from(m: mission::Model) -> Self {
        Mission {
            id: m.id,
            title: m.title,
            reward: m.reward,
            due_on: m.due_on,
            status: m.status,
            reject_reason: m.reject_reason,
            created_at: m.created_at,
            submitted_at: m.submitted_at,
            decided_at: m.decided_at,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only missions in this status.
    #[param(value_type = Option<MissionStatus>)]
    status: Option<String>,
    /// Only missions due on or after this date.
    #[param(value_type = Option<NaiveDate>)]
    from: Option<String>,
    /// Only missions due on or before this date.
    #[param(value_type = Option<NaiveDate>)]
    to: Option<String>,
}

type Filters = (Option<MissionStatus>, Option<NaiveDate>, Option<NaiveDate>);

/// The list's filters: a status, and the first and last due date.
fn list_filters(query: &ListQuery) -> Result<Filters, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|s| {
            MissionStatus::parse(s).ok_or_else(|| {
                ApiError::invalid_field("status", "open, submitted, approved or rejected")
            })
        })
        .transpose()?;
    let from = query
        .from
        .as_deref()
        .map(|d| parse_date("from", d))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|d| parse_date("to", d))
        .transpose()?;
    Ok((status, from, to))
}

/// The `GET /api/missions` body.
#[derive(Serialize, utoipa::ToSchema)]
struct MissionList {
    /// Newest first.
    missions: Vec<Mission>,
}

#[utoipa::path(
    get,
    path = "/api/missions",
    tag = "missions",
    operation_id = "list_missions",
    summary = "The family's missions, newest first",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The family's missions, newest first", body = MissionList),
        (status = 403, description = "`not_in_family`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad `status`, `from` or `to`", body = ErrorBody),
    )
)]
async fn list(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let family_id = member.family()?;
    let (status, from, to) = list_filters(&query)?;
    let filter = missions::Filter { status, from, to };
    let missions: Vec<Mission> = missions::list(&state.db, family_id, filter)
        .await?
        .into_iter()
        .map(Mission::from)
        .collect();
    Ok(HttpResponse::Ok().json(MissionList { missions }))
}

/// Creating needs `title`; an update changes the fields it has (`null` clears `due_on`, an
/// absent field stays as it is).
#[derive(Deserialize, utoipa::ToSchema)]
struct MissionFields {
    /// Required when creating.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    title: Option<Option<String>>,
    /// Grapes, default 1.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, nullable = false, minimum = 1, maximum = 100, default = 1)]
    reward: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    due_on: Option<Option<String>>,
}

struct Checked {
    title: Option<String>,
    reward: Option<i32>,
    due_on: Option<Option<NaiveDate>>,
}

fn check(fields: MissionFields, creating: bool) -> Result<Checked, ApiError> {
    let mut errors = FieldErrors::default();
    let title = required_text(&mut errors, "title", fields.title, 200, creating);
    let reward = match fields.reward {
        Some(Some(reward)) => {
            errors.check((1..=100).contains(&reward), "reward", "1-100 grapes");
            Some(reward.clamp(1, 100) as i32)
        }
        Some(None) => {
            errors.add("reward", "1-100 grapes");
            None
        }
        None => creating.then_some(1),
    };
    let due_on = match fields.due_on {
        Some(Some(text)) => match date(&text) {
            Some(date) => Some(Some(date)),
            None => {
                errors.add("due_on", "a date YYYY-MM-DD");
                None
            }
        },
        Some(None) => Some(None),
        None => None,
    };
    errors.finish()?;
    Ok(Checked {
        title,
        reward,
        due_on,
    })
}

#[utoipa::path(
    post,
    path = "/api/missions",
    tag = "missions",
    operation_id = "create_mission",
    summary = "Create a mission (parent)",
    security(("bearer" = [])),
    request_body = MissionFields,
    responses(
        (status = 201, description = "The new mission (`open`); pushed to the child", body = Mission),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
    )
)]
async fn create(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(fields): JsonBody<MissionFields>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let checked = check(fields, true)?;
    let row = missions::create(
        &state.db,
        family_id,
        checked.title.unwrap_or_default(),
        checked.reward.unwrap_or(1),
        checked.due_on.flatten(),
    )
    .await?;
    state.push.notify(
        missions::partner(&state.db, family_id, member.id).await?,
        Notification::mission_created(&row.title),
    );
    Ok(HttpResponse::Created().json(Mission::from(row)))
}

#[utoipa::path(
    patch,
    path = "/api/missions/{id}",
    tag = "missions",
    operation_id = "update_mission",
    summary = "Edit a mission while open or rejected (parent)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The mission's id")),
    request_body = MissionFields,
    responses(
        (status = 200, description = "The mission after the change", body = Mission),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such mission in the family", body = ErrorBody),
        (status = 409, description = "`mission_locked`: only while `open` or `rejected`", body = ErrorBody),
    )
)]
async fn update(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
    JsonBody(fields): JsonBody<MissionFields>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let id = path.into_inner();
    let checked = check(fields, false)?;
    let changes = missions::Changes {
        title: checked.title,
        reward: checked.reward,
        due_on: checked.due_on,
    };
    let row = missions::update(&state.db, family_id, id, changes).await?;
    Ok(HttpResponse::Ok().json(Mission::from(row)))
}

#[utoipa::path(
    delete,
    path = "/api/missions/{id}",
    tag = "missions",
    operation_id = "delete_mission",
    summary = "Delete a mission unless approved (parent)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The mission's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such mission in the family", body = ErrorBody),
        (status = 409, description = "`mission_locked`: an approved mission stays", body = ErrorBody),
    )
)]
async fn delete(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let id = path.into_inner();
    missions::delete(&state.db, family_id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// No parameters: an empty body or `{}`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct Empty {}

#[utoipa::path(
    post,
    path = "/api/missions/{id}/submit",
    tag = "missions",
    operation_id = "submit_mission",
    summary = "Report a mission done (child)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The mission's id")),
    request_body(content = Option<Empty>, description = "An empty body or `{}`"),
    responses(
        (status = 200, description = "The mission, now `submitted` (its `reject_reason` cleared); pushed to the parent", body = Mission),
        (status = 403, description = "`forbidden_role` (only the child) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such mission in the family", body = ErrorBody),
        (status = 409, description = "`mission_locked`: only while `open` or `rejected`", body = ErrorBody),
    )
)]
async fn submit(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
    _: OptionalJsonBody<Empty>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    let family_id = member.family()?;
    let id = path.into_inner();
    let row = missions::submit(&state.db, family_id, id).await?;
    state.push.notify(
        missions::partner(&state.db, family_id, member.id).await?,
        Notification::mission_submitted(&row.title),
    );
    Ok(HttpResponse::Ok().json(Mission::from(row)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Approved {
    mission: Mission,
    board: Board,
}

#[utoipa::path(
    post,
    path = "/api/missions/{id}/approve",
    tag = "missions",
    operation_id = "approve_mission",
    summary = "Approve a submitted mission and grant its reward (parent)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The mission's id")),
    request_body(content = Option<Empty>, description = "An empty body or `{}`"),
    responses(
        (status = 200, description = "The mission, now `approved`, and the board its reward was granted to in the same transaction; pushed to the child", body = Approved),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such mission in the family", body = ErrorBody),
        (status = 409, description = "`mission_locked` unless `submitted` (a second approve); `no_board` or `board_full` (nothing changes); `conflict` when another server changed the board meanwhile", body = ErrorBody),
    )
)]
async fn approve(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
    _: OptionalJsonBody<Empty>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let mission_id = path.into_inner();
    let command = Command::Approve {
        by: member.id,
        mission_id,
    };
    let snapshot = state.boards.send(family_id, command).await?;
    let board = snapshot
        .board
        .ok_or_else(|| ApiError::internal("an approval left no board"))?;
    let mission = mission::Entity::find_by_id(mission_id)
        .one(&state.db.write)
        .await?
        .ok_or_else(|| ApiError::internal("approved mission vanished"))?;
    Ok(HttpResponse::Ok().json(Approved {
        mission: Mission::from(mission),
        board,
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct RejectRequest {
    /// Trimmed; blank means none.
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// The rejection's reason, trimmed; blank means none.
fn check_reason(body: RejectRequest) -> Result<Option<String>, ApiError> {
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| char_len(r) > 200) {
        return Err(ApiError::invalid_field("reason", "at most 200 characters"));
    }
    Ok(reason)
}

#[utoipa::path(
    post,
    path = "/api/missions/{id}/reject",
    tag = "missions",
    operation_id = "reject_mission",
    summary = "Reject a submitted mission (parent)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The mission's id")),
    request_body(content = Option<RejectRequest>, description = "An empty body, `{}` or `{\"reason\"}`"),
    responses(
        (status = 200, description = "The mission, now `rejected`; pushed to the child", body = Mission),
        (status = 403, description = "`forbidden_role` (only a parent) or `not_in_family`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such mission in the family", body = ErrorBody),
        (status = 409, description = "`mission_locked` unless `submitted`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `reason` over 200 characters", body = ErrorBody),
    )
)]
async fn reject(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
    OptionalJsonBody(body): OptionalJsonBody<RejectRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    let family_id = member.family()?;
    let id = path.into_inner();
    let reason = check_reason(body)?;
    let row = missions::reject(&state.db, family_id, id, reason.clone()).await?;
    let text = reason.as_deref().unwrap_or(&row.title);
    state.push.notify(
        missions::partner(&state.db, family_id, member.id).await?,
        Notification::mission_rejected(text),
    );
    Ok(HttpResponse::Ok().json(Mission::from(row)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mission_bodies_are_checked_or_refused(
            bytes in fuzz::body(&["title", "reward", "due_on"]),
            creating: bool,
        ) {
            match fuzz::parse::<MissionFields>(&bytes).and_then(|f| check(f, creating)) {
                Ok(checked) => {
                    prop_assert!(!checked.title.unwrap_or_default().contains('\0'));
                    prop_assert!(checked.reward.is_none_or(|r| (1..=100).contains(&r)));
                }
                Err(err) => fuzz::assert_refusal(&err)?,
            }
        }

        #[test]
        fn reject_bodies_are_checked_or_refused(bytes in fuzz::body(&["reason"])) {
            match fuzz::parse::<RejectRequest>(&bytes).and_then(check_reason) {
                Ok(reason) => prop_assert!(!reason.unwrap_or_default().contains('\0')),
                Err(err) => fuzz::assert_refusal(&err)?,
            }
        }

        #[test]
        fn list_queries_are_checked_or_refused(query in fuzz::query(&["status", "from", "to"])) {
            let parsed = fuzz::parse_query::<ListQuery>(&query);
            fuzz::accepted_or_refused(parsed.and_then(|q| list_filters(&q).map(|_| ())))?;
        }
    }
}

//! Pairing: a parent's invite code, a child's join. One parent and one child per family.
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Duration;
use rand::Rng;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, OptionalJsonBody};
use super::identity::{AuthUser, client_ip};
use crate::auth::throttle::too_many;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::model::{self, Family, Role, User, ts};
use crate::state::AppState;
use crate::store::Db;
use crate::store::entities::{family, invite, user};

pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;
const INVITE_MINUTES: i64 = 10;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/family/invite", web::post().to(invite))
        .route("/family/join", web::post().to(join));
}

/// No parameters: an empty body or `{}`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct Empty {}

#[derive(Serialize, utoipa::ToSchema)]
struct InviteResponse {
    /// 8 characters of `ABCDEFGHJKLMNPQRSTUVWXYZ23456789`, single use.
    #[schema(
        pattern = "^[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{8}$",
        example = "K7QX2MPA"
    )]
    code: String,
    /// 10 minutes after the invite.
    #[serde(serialize_with = "ts::serialize")]
    expires_at: chrono::DateTime<chrono::Utc>,
}

fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

fn already_paired() -> ApiError {
    ApiError::conflict(ErrorCode::AlreadyPaired, "you are already in a family")
}

#[utoipa::path(
    post,
    path = "/api/family/invite",
    tag = "family",
    operation_id = "create_invite",
    summary = "Invite a child (parent): a single-use code valid 10 minutes",
    security(("bearer" = [])),
    request_body(content = Option<Empty>, description = "An empty body or `{}`"),
    responses(
        (status = 201, description = "A new invite code; it voids the parent's previous one", body = InviteResponse),
        (status = 403, description = "`forbidden_role`: only a parent invites", body = ErrorBody),
        (status = 409, description = "`already_paired`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not JSON", body = ErrorBody),
    )
)]
async fn invite(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    _: OptionalJsonBody<Empty>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Parent)?;
    if member.family_id.is_some() {
        return Err(already_paired());
    }
    let now = model::now();
    let expires_at = now + Duration::minutes(INVITE_MINUTES);
    // A new code voids the parent's earlier unused ones. A clash with an existing code (1 in 10^12)
    // is retried with a fresh one.
    for _ in 0..3 {
        let txn = state.db.write.begin().await?;
        invite::Entity::delete_many()
            .filter(invite::Column::ParentId.eq(member.id))
            .filter(invite::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        let code = new_code();
        let inserted = invite::ActiveModel {
            parent_id: Set(member.id),
            code: Set(code.clone()),
            expires_at: Set(expires_at),
            used_by: Set(None),
            used_at: Set(None),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await;
        match inserted {
            Ok(_) => {
                txn.commit().await?;
                return Ok(HttpResponse::Created().json(InviteResponse { code, expires_at }));
            }
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                txn.rollback().await?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal("could not find a free invite code"))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct JoinRequest {
    /// Any case, surrounding blanks ignored.
    #[schema(example = "K7QX2MPA")]
    code: String,
}

enum JoinOutcome {
    Joined(i64),
    NoInvite,
    AlreadyPaired,
}

#[utoipa::path(
    post,
    path = "/api/family/join",
    tag = "family",
    operation_id = "join_family",
    summary = "Join a parent's family with an invite code (child)",
    security(("bearer" = [])),
    request_body = JoinRequest,
    responses(
        (status = 200, description = "The new family", body = Family),
        (status = 403, description = "`forbidden_role`: only a child joins", body = ErrorBody),
        (status = 404, description = "`invite_not_found`: unknown, used or expired code", body = ErrorBody),
        (status = 409, description = "`already_paired`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: JSON of the wrong shape", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: 10 failed joins by this user, or 100 from this client address, in 10 minutes", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
    )
)]
async fn join(
    req: HttpRequest,
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    if member.family_id.is_some() {
        return Err(already_paired());
    }
    // As for logins: the failure slots are taken before the code is looked up, and given back
    // unless it turns out wrong.
    let address = client_ip(&req, state.config.trust_proxy);
    let address_attempt = state
        .join_address_throttle
        .attempt(&address)
        .map_err(too_many)?;
    let user_attempt = state.join_throttle.attempt(&member.id).map_err(too_many)?;
    let code = body.code.trim().to_ascii_uppercase();
    let valid_code = code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b));
    let outcome = if valid_code {
        join_family(&state, member.id, &code).await?
    } else {
        JoinOutcome::NoInvite
    };
    match outcome {
        JoinOutcome::Joined(family_id) => {
            user_attempt.clear();
            drop(address_attempt);
            let family = load_family(&state.db, family_id).await?;
            Ok(HttpResponse::Ok().json(family))
        }
        JoinOutcome::NoInvite => {
            user_attempt.failed();
            address_attempt.failed();
            Err(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                ErrorCode::InviteNotFound,
                "this code is unknown, used or expired",
            ))
        }
        JoinOutcome::AlreadyPaired => Err(already_paired()),
    }
}

/// Claims the invite and creates the family in one transaction. Of two joins racing for one code,
/// the conditional update lets exactly one claim it.
async fn join_family(state: &AppState, child_id: i64, code: &str) -> Result<JoinOutcome, ApiError> {
    let now = model::now();
    let txn = state.db.write.begin().await?;
    let Some(found) = invite::Entity::find()
        .filter(invite::Column::Code.eq(code))
        .one(&txn)
        .await?
    else {
        return Ok(JoinOutcome::NoInvite);
    };
    if found.used_at.is_some() || found.expires_at <= now {
        return Ok(JoinOutcome::NoInvite);
    }
    let claimed = invite::Entity::update_many()
        .col_expr(invite::Column::UsedBy, child_id.into())
        .col_expr(invite::Column::UsedAt, now.into())
        .filter(invite::Column::Id.eq(found.id))
        .filter(invite::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(JoinOutcome::NoInvite);
    }
    let inserted = family::ActiveModel {
        parent_id: Set(found.parent_id),
        child_id: Set(child_id),
        board_version: Set(0),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await;
    let family = match inserted {
        Ok(family) => family,
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            txn.rollback().await?;
            return Ok(JoinOutcome::AlreadyPaired);
        }
        Err(err) => return Err(err.into()),
    };
    let paired = user::Entity::update_many()
        .col_expr(user::Column::FamilyId, family.id.into())
        .filter(user::Column::Id.is_in([found.parent_id, child_id]))
        .filter(user::Column::FamilyId.is_null())
        .exec(&txn)
        .await?;
    if paired.rows_affected != 2 {
        txn.rollback().await?;
        return Ok(JoinOutcome::AlreadyPaired);
    }
    // The parent's other codes are void now that the family exists.
    invite::Entity::delete_many()
        .filter(invite::Column::ParentId.eq(found.parent_id))
        .filter(invite::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(JoinOutcome::Joined(family.id))
}

/// A family with both members.
pub async fn load_family(db: &Db, family_id: i64) -> Result<Family, ApiError> {
    let row = family::Entity::find_by_id(family_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| ApiError::internal(format!("family {family_id} missing")))?;
    let users = user::Entity::find()
        .filter(user::Column::Id.is_in([row.parent_id, row.child_id]))
        .all(&db.read)
        .await?;
    let find = |id: i64| {
        users
            .iter()
            .find(|u| u.id == id)
            .map(User::from)
            .ok_or_else(|| ApiError::internal(format!("member {id} of family {family_id} missing")))
    };
    Ok(Family {
        id: row.id,
        parent: find(row.parent_id)?,
        child: find(row.child_id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn join_bodies_parse_or_are_refused(bytes in fuzz::body(&["code"])) {
            fuzz::accepted_or_refused(fuzz::parse::<JoinRequest>(&bytes))?;
            fuzz::accepted_or_refused(fuzz::parse::<Empty>(&bytes))?;
        }
    }
}

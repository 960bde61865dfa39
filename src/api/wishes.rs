//! Wishlist: the child adds, edits and deletes wishes while they are `wished`; both members read.
use actix_web::{HttpResponse, web};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, nullable, required_text};
use super::fields::is_http_url;
use super::identity::AuthUser;
use crate::auth::Member;
use crate::error::{ApiError, ErrorBody, ErrorCode, FieldErrors};
use crate::model::{self, Role, Wish};
use crate::push::Notification;
use crate::state::AppState;
use crate::status::WishStatus;
use crate::store::entities::{family, wish};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/wishes", web::get().to(list))
        .route("/wishes", web::post().to(create))
        .route("/wishes/{id}", web::patch().to(update))
        .route("/wishes/{id}", web::delete().to(delete));
}

/// The child whose wishes the caller sees: their own, or their family's child.
async fn wishlist_owner(state: &AppState, member: &Member) -> Result<i64, ApiError> {
    match member.role {
        Role::Child => Ok(member.id),
        Role::Parent => {
            let family_id = member.family()?;
            let family = family::Entity::find_by_id(family_id)
                .one(&state.db.read)
                .await?
                .ok_or_else(ApiError::not_in_family)?;
            Ok(family.child_id)
        }
    }
}

/// The `GET /api/wishes` body.
#[derive(Serialize, utoipa::ToSchema)]
struct WishList {
    /// Newest first.
    wishes: Vec<Wish>,
}

#[utoipa::path(
    get,
    path = "/api/wishes",
    tag = "wishes",
    operation_id = "list_wishes",
    summary = "The child's wishlist, newest first",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The child's wishes (the caller's, or the family child's for a parent)", body = WishList),
        (status = 403, description = "`not_in_family`: a parent before pairing", body = ErrorBody),
    )
)]
async fn list(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let child_id = wishlist_owner(&state, &member).await?;
    let wishes: Vec<Wish> = wish::Entity::find()
        .filter(wish::Column::ChildId.eq(child_id))
        .order_by_desc(wish::Column::Id)
        .all(&state.db.read)
        .await?
        .into_iter()
        .map(Wish::from)
        .collect();
    Ok(HttpResponse::Ok().json(WishList { wishes }))
}

// `Some(None)` for an explicit `null`, `None` when the field is absent.
/// Creating needs `name`; an update changes the fields it has (`null` clears `link` or
/// `image_url`, an absent field stays as it is).
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct WishFields {
    /// Required when creating.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 100, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<Option<String>>,
    /// An absolute http(s) URL.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = "uri", max_length = 2048)]
    link: Option<Option<String>>,
    /// An absolute http(s) URL.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = "uri", max_length = 2048)]
    image_url: Option<Option<String>>,
}

/// `POST /api/wishes` as the document has it: the same fields, `name` required (the handler reads
/// [`WishFields`] and says which field is missing).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the request body in the document only
struct NewWish {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    name: String,
    /// An absolute http(s) URL.
    #[schema(format = "uri", max_length = 2048)]
    link: Option<String>,
    /// An absolute http(s) URL.
    #[schema(format = "uri", max_length = 2048)]
    image_url: Option<String>,
}

/// Checked fields: `None` = leave as is; `Some(None)` = clear.
struct Checked {
    name: Option<String>,
    link: Option<Option<String>>,
    image_url: Option<Option<String>>,
}

fn check(fields: WishFields, creating: bool) -> Result<Checked, ApiError> {
    let mut errors = FieldErrors::default();
    let name = required_text(&mut errors, "name", fields.name, 100, creating);
    // As the document says (`format: uri`): a URL as it is, no blank or padded one; `null`
    // clears the field.
    let mut url = |field: &'static str, value: Option<Option<String>>| match value {
        Some(Some(s)) => {
            errors.check(
                is_http_url(&s),
                field,
                "an absolute http(s) URL of at most 2048 characters (null clears it)",
            );
            Some(Some(s))
        }
        other => other,
    };
    let link = url("link", fields.link);
    let image_url = url("image_url", fields.image_url);
    errors.finish()?;
    Ok(Checked {
        name,
        link,
        image_url,
    })
}

#[utoipa::path(
    post,
    path = "/api/wishes",
    tag = "wishes",
    operation_id = "create_wish",
    summary = "Add a wish (child)",
    security(("bearer" = [])),
    request_body = NewWish,
    responses(
        (status = 201, description = "The new wish (`wished`); pushed to the parent", body = Wish),
        (status = 403, description = "`forbidden_role`: only the child adds wishes", body = ErrorBody),
    )
)]
async fn create(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(fields): JsonBody<WishFields>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    let checked = check(fields, true)?;
    let row = wish::ActiveModel {
        child_id: Set(member.id),
        name: Set(checked.name.unwrap_or_default()),
        link: Set(checked.link.flatten()),
        image_url: Set(checked.image_url.flatten()),
        status: Set(WishStatus::Wished),
        created_at: Set(model::now()),
        picked_at: Set(None),
        given_at: Set(None),
        ..Default::default()
    }
    .insert(&state.db.write)
    .await?;
    if let Some(family) = family::Entity::find()
        .filter(family::Column::ChildId.eq(member.id))
        .one(&state.db.read)
        .await?
    {
        state
            .push
            .notify(family.parent_id, Notification::wish_created(&row.name));
    }
    Ok(HttpResponse::Created().json(Wish::from(row)))
}

fn wish_locked() -> ApiError {
    ApiError::conflict(
        ErrorCode::WishLocked,
        "a wish can change only while it is wished",
    )
}

/// After a conditional write matched nothing: 404 for a wish that is not the caller's, else 409.
async fn explain_miss(state: &AppState, child_id: i64, id: i64) -> ApiError {
    match wish::Entity::find_by_id(id)
        .filter(wish::Column::ChildId.eq(child_id))
        .one(&state.db.write)
        .await
    {
        Ok(Some(_)) => wish_locked(),
        Ok(None) => ApiError::not_found("no such wish"),
        Err(err) => err.into(),
    }
}

#[utoipa::path(
    patch,
    path = "/api/wishes/{id}",
    tag = "wishes",
    operation_id = "update_wish",
    summary = "Edit a wish while it is `wished` (child)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The wish's id")),
    request_body = WishFields,
    responses(
        (status = 200, description = "The wish after the change (an empty `{}` changes nothing)", body = Wish),
        (status = 403, description = "`forbidden_role`: only the child edits wishes", body = ErrorBody),
        (status = 404, description = "`not_found`: no such wish of the caller", body = ErrorBody),
        (status = 409, description = "`wish_locked`: the wish is no longer `wished`", body = ErrorBody),
    )
)]
async fn update(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
    JsonBody(fields): JsonBody<WishFields>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    let id = path.into_inner();
    let checked = check(fields, false)?;
    let mut update = wish::Entity::update_many()
        .filter(wish::Column::Id.eq(id))
        .filter(wish::Column::ChildId.eq(member.id))
        .filter(wish::Column::Status.eq(WishStatus::Wished));
    // Writing the id onto itself keeps an empty PATCH a real, status-checked statement.
    update = update.col_expr(wish::Column::Id, Expr::col(wish::Column::Id));
    if let Some(name) = checked.name {
        update = update.col_expr(wish::Column::Name, Expr::value(name));
    }
    if let Some(link) = checked.link {
        update = update.col_expr(wish::Column::Link, Expr::value(link));
    }
    if let Some(image_url) = checked.image_url {
        update = update.col_expr(wish::Column::ImageUrl, Expr::value(image_url));
    }
    let result = update.exec(&state.db.write).await?;
    if result.rows_affected != 1 {
        return Err(explain_miss(&state, member.id, id).await);
    }
    let row = wish::Entity::find_by_id(id)
        .one(&state.db.write)
        .await?
        .ok_or_else(|| ApiError::not_found("no such wish"))?;
    Ok(HttpResponse::Ok().json(Wish::from(row)))
}

#[utoipa::path(
    delete,
    path = "/api/wishes/{id}",
    tag = "wishes",
    operation_id = "delete_wish",
    summary = "Delete a wish while it is `wished` (child)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The wish's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden_role`: only the child deletes wishes", body = ErrorBody),
        (status = 404, description = "`not_found`: no such wish of the caller", body = ErrorBody),
        (status = 409, description = "`wish_locked`: the wish is no longer `wished`", body = ErrorBody),
    )
)]
async fn delete(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    member.require(Role::Child)?;
    let id = path.into_inner();
    let result = wish::Entity::delete_many()
        .filter(wish::Column::Id.eq(id))
        .filter(wish::Column::ChildId.eq(member.id))
        .filter(wish::Column::Status.eq(WishStatus::Wished))
        .exec(&state.db.write)
        .await?;
    if result.rows_affected != 1 {
        return Err(explain_miss(&state, member.id, id).await);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn wish_bodies_are_checked_or_refused(
            bytes in fuzz::body(&["name", "link", "image_url"]),
            creating: bool,
        ) {
            match fuzz::parse::<WishFields>(&bytes).and_then(|f| check(f, creating)) {
                Ok(checked) => {
                    let stored = [checked.name, checked.link.flatten(), checked.image_url.flatten()];
                    prop_assert!(stored.iter().flatten().all(|s| !s.contains('\0')));
                }
                Err(err) => fuzz::assert_refusal(&err)?,
            }
        }
    }
}

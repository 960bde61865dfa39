//! Wishlist: the child adds, edits and deletes wishes while they are `wished`; both members read.
use actix_web::{HttpResponse, web};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Deserialize;

use super::extract::{JsonBody, nullable, required_text};
use super::is_http_url;
use crate::app::AppState;
use crate::auth::{AuthUser, Member};
use crate::error::{ApiError, FieldErrors};
use crate::model::{self, Role, Wish};
use crate::push::Notification;
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "wishes": wishes })))
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
#[derive(Deserialize, Default)]
struct WishFields {
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    link: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    image_url: Option<Option<String>>,
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
    let mut url = |field: &'static str, value: Option<Option<String>>| match value {
        Some(Some(s)) if s.trim().is_empty() => Some(None),
        Some(Some(s)) => {
            errors.check(
                is_http_url(s.trim()),
                field,
                "an absolute http(s) URL of at most 2048 characters",
            );
            Some(Some(s.trim().to_owned()))
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
        status: Set("wished".into()),
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
    ApiError::conflict("wish_locked", "a wish can change only while it is wished")
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
        .filter(wish::Column::Status.eq("wished"));
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
        .filter(wish::Column::Status.eq("wished"))
        .exec(&state.db.write)
        .await?;
    if result.rows_affected != 1 {
        return Err(explain_miss(&state, member.id, id).await);
    }
    Ok(HttpResponse::NoContent().finish())
}

//! Web push: the server's public key, and the caller's subscriptions.
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::Deserialize;

use super::extract::JsonBody;
use super::is_http_url;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, FieldErrors};
use crate::model;
use crate::store::entities::push_subscription;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/push/public-key", web::get().to(public_key))
        .route("/push/subscriptions", web::post().to(subscribe))
        .route("/push/subscriptions", web::delete().to(unsubscribe));
}

async fn public_key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "public_key": state.vapid.public_b64 }))
}

#[derive(Deserialize)]
struct Keys {
    p256dh: Option<String>,
    auth: Option<String>,
}

#[derive(Deserialize)]
struct Subscription {
    endpoint: Option<String>,
    keys: Option<Keys>,
}

/// Decodes base64url with or without padding (browsers' `toJSON()` gives it without).
fn decode(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

async fn subscribe(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<Subscription>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = body.endpoint.unwrap_or_default();
    let (p256dh, auth) = body.keys.map_or((None, None), |k| (k.p256dh, k.auth));
    let (p256dh, auth) = (p256dh.unwrap_or_default(), auth.unwrap_or_default());
    let mut errors = FieldErrors::default();
    errors.check(
        is_http_url(&endpoint),
        "endpoint",
        "an absolute http(s) URL",
    );
    errors.check(
        decode(&p256dh).is_some_and(|k| k.len() == 65 && k[0] == 4),
        "keys.p256dh",
        "an uncompressed P-256 point (65 bytes), base64url",
    );
    errors.check(
        decode(&auth).is_some_and(|k| k.len() == 16),
        "keys.auth",
        "16 bytes, base64url",
    );
    errors.finish()?;
    let row = push_subscription::ActiveModel {
        user_id: Set(member.id),
        endpoint: Set(endpoint),
        p256dh: Set(p256dh.trim_end_matches('=').to_owned()),
        auth: Set(auth.trim_end_matches('=').to_owned()),
        created_at: Set(model::now()),
        ..Default::default()
    };
    // Upsert by endpoint: a browser re-subscribing (or another user on the same browser) takes
    // the endpoint over.
    push_subscription::Entity::insert(row)
        .on_conflict(
            OnConflict::column(push_subscription::Column::Endpoint)
                .update_columns([
                    push_subscription::Column::UserId,
                    push_subscription::Column::P256dh,
                    push_subscription::Column::Auth,
                ])
                .to_owned(),
        )
        .exec(&state.db.write)
        .await?;
    Ok(HttpResponse::Created().finish())
}

#[derive(Deserialize)]
struct Unsubscribe {
    endpoint: String,
}

async fn unsubscribe(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<Unsubscribe>,
) -> Result<HttpResponse, ApiError> {
    push_subscription::Entity::delete_many()
        .filter(push_subscription::Column::Endpoint.eq(body.endpoint))
        .filter(push_subscription::Column::UserId.eq(member.id))
        .exec(&state.db.write)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

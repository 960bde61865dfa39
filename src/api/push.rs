//! Web push: the server's public key, and the caller's subscriptions; which push providers the
//! server delivers through (native devices are in `devices.rs`).
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::{OnConflict, Order, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};

use super::extract::JsonBody;
use super::fields::is_http_url;
use super::identity::AuthUser;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::model;
use crate::push::endpoint::EndpointPolicy;
use crate::state::AppState;
use crate::store::entities::push_subscription;

/// Subscriptions one user keeps (phones, browsers); a new one past this replaces their oldest,
/// so that the per-user delivery work stays bounded and a new phone is never an error.
pub const MAX_SUBSCRIPTIONS_PER_USER: u64 = 10;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/push/public-key", web::get().to(public_key))
        .route("/push/providers", web::get().to(providers))
        .route("/push/subscriptions", web::post().to(subscribe))
        .route("/push/subscriptions", web::delete().to(unsubscribe));
}

/// The `GET /api/push/public-key` body.
#[derive(Serialize, utoipa::ToSchema)]
struct PublicKey {
    /// The VAPID P-256 public key (uncompressed point), base64url without padding.
    public_key: String,
}

#[utoipa::path(
    get,
    path = "/api/push/public-key",
    tag = "push",
    operation_id = "push_public_key",
    summary = "The server's VAPID public key",
    responses((status = 200, description = "The server's VAPID key (the same after restarts)", body = PublicKey))
)]
async fn public_key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(PublicKey {
        public_key: state.vapid.public_b64.clone(),
    })
}

/// The `GET /api/push/providers` body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PushProviders)]
struct Providers {
    /// Always true: browsers subscribe with `POST /api/push/subscriptions`.
    web_push: bool,
    /// True when the server has FCM credentials (`PODO_FCM_CREDENTIALS`): the mobile app
    /// registers its token with `POST /api/push/devices`.
    fcm: bool,
}

#[utoipa::path(
    get,
    path = "/api/push/providers",
    tag = "push",
    operation_id = "push_providers",
    summary = "Which push providers the server delivers through",
    responses((status = 200, description = "Web push always; FCM when the server has credentials", body = Providers))
)]
async fn providers(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Providers {
        web_push: true,
        fcm: state.config.fcm_credentials.is_some(),
    })
}

// Optional in the code so that every missing field is reported; all required on the wire.
/// The Push API's `keys` record has exactly these two (anything else is refused, so that what is
/// accepted is what the document says).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PushKeys)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// An uncompressed P-256 point (65 bytes, the first 0x04), base64url, padded or not.
    #[schema(value_type = String, pattern = "^B[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]=?$")]
    p256dh: Option<String>,
    /// 16 bytes, base64url, padded or not.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{21}[AQgw](==)?$")]
    auth: Option<String>,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PushSubscription)]
struct Subscription {
    /// The push service URL: `https://` on a public host (any http(s) URL with
    /// `PODO_PUSH_ALLOW_PRIVATE=true`).
    #[schema(value_type = String, format = "uri")]
    endpoint: Option<String>,
    #[schema(value_type = Keys)]
    keys: Option<Keys>,
}

/// Decodes base64url with or without padding (browsers' `toJSON()` gives it without).
fn decode(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

#[utoipa::path(
    post,
    path = "/api/push/subscriptions",
    tag = "push",
    operation_id = "subscribe_push",
    summary = "Subscribe this browser to web push",
    security(("bearer" = [])),
    request_body = Subscription,
    responses(
        (status = 201, description = "Stored (an upsert by endpoint); past 10 subscriptions the user's oldest is removed"),
        (status = 422, description = "`validation_failed`, with `fields` (`endpoint`, `keys.p256dh`, `keys.auth`)", body = ErrorBody),
    )
)]
async fn subscribe(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<Subscription>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = body.endpoint.unwrap_or_default();
    let (p256dh, auth) = body.keys.map_or((None, None), |k| (k.p256dh, k.auth));
    let (p256dh, auth) = (p256dh.unwrap_or_default(), auth.unwrap_or_default());
    let mut errors = FieldErrors::default();
    let policy = EndpointPolicy::new(state.config.push_allow_private);
    match policy.check(&endpoint) {
        Ok(()) => errors.check(
            is_http_url(&endpoint),
            "endpoint",
            "an absolute URL of at most 2048 bytes without blanks",
        ),
        Err(why) => errors.check(false, "endpoint", why),
    }
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
    // the endpoint over, and it counts as the newest.
    let stored = push_subscription::Entity::insert(row)
        .on_conflict(
            OnConflict::column(push_subscription::Column::Endpoint)
                .update_columns([
                    push_subscription::Column::UserId,
                    push_subscription::Column::P256dh,
                    push_subscription::Column::Auth,
                    push_subscription::Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec(&state.db.write)
        .await;
    let trimmed = match stored {
        Ok(_) => keep_newest(&state, member.id).await,
        Err(err) => Err(err),
    };
    // Also after an error: the statements may have taken effect.
    state.push.targets_changed();
    trimmed?;
    Ok(HttpResponse::Created().finish())
}

/// Removes the user's subscriptions beyond the newest [`MAX_SUBSCRIPTIONS_PER_USER`], in one
/// statement (concurrent subscribes of one user agree on which are oldest).
async fn keep_newest(state: &AppState, user_id: i64) -> Result<(), sea_orm::DbErr> {
    use push_subscription::Column;
    let newest = Query::select()
        .column(Column::Id)
        .from(push_subscription::Entity)
        .and_where(Column::UserId.eq(user_id))
        .order_by(Column::CreatedAt, Order::Desc)
        .order_by(Column::Id, Order::Desc)
        .limit(MAX_SUBSCRIPTIONS_PER_USER)
        .to_owned();
    let removed = push_subscription::Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Id.not_in_subquery(newest))
        .exec(&state.db.write)
        .await?;
    if removed.rows_affected > 0 {
        log::info!(
            "push: user {user_id} has a new subscription; removed their {} oldest",
            removed.rows_affected
        );
    }
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PushUnsubscribe)]
struct Unsubscribe {
    endpoint: String,
}

#[utoipa::path(
    delete,
    path = "/api/push/subscriptions",
    tag = "push",
    operation_id = "unsubscribe_push",
    summary = "Remove a push subscription",
    security(("bearer" = [])),
    request_body = Unsubscribe,
    responses(
        (status = 204, description = "The caller's subscription with this endpoint is gone (if there was one)"),
        (status = 422, description = "`validation_failed`: JSON of the wrong shape", body = ErrorBody),
    )
)]
async fn unsubscribe(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<Unsubscribe>,
) -> Result<HttpResponse, ApiError> {
    let stored = push_subscription::Entity::delete_many()
        .filter(push_subscription::Column::Endpoint.eq(body.endpoint))
        .filter(push_subscription::Column::UserId.eq(member.id))
        .exec(&state.db.write)
        .await;
    // Also after an error: the statement may have taken effect.
    state.push.targets_changed();
    stored?;
    Ok(HttpResponse::NoContent().finish())
}

//! Native app devices (API.md "Native push (FCM)"): the mobile app registers the token its push
//! provider gave it, lists the caller's devices and removes one.
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Order, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::extract::JsonBody;
use super::identity::AuthUser;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::model::{self, ts};
use crate::state::AppState;
use crate::store::entities::push_device;

/// Devices one user keeps; a new one past this replaces their oldest (as with web
/// subscriptions: delivery work per user stays bounded, and a new phone is never an error).
pub const MAX_DEVICES_PER_USER: u64 = 10;
/// The longest token accepted (FCM's are about 160 characters).
pub const MAX_TOKEN_CHARS: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/push/devices", web::post().to(register))
        .route("/push/devices", web::get().to(list))
        .route("/push/devices/{id}", web::delete().to(remove));
}

/// The push provider of a device (only FCM, which reaches Android directly and iOS via APNs).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // describes the wire strings in the document only
pub enum DeviceProvider {
    Fcm,
}

/// The device's operating system.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // describes the wire strings in the document only
pub enum DevicePlatform {
    Android,
    Ios,
}

// Optional in the code so that every missing field is reported; all required on the wire.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PushDeviceRegistration)]
struct Registration {
    #[schema(value_type = DeviceProvider)]
    provider: Option<String>,
    /// The registration token the provider gave the app: 1-4,096 characters of
    /// `[A-Za-z0-9_:.-]`.
    #[schema(value_type = String, min_length = 1, max_length = 4096, pattern = "^[A-Za-z0-9_:.\\-]+$")]
    token: Option<String>,
    #[schema(value_type = DevicePlatform)]
    platform: Option<String>,
}

/// A registered device. The token itself is never shown again, only its last characters.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PushDevice)]
struct Device {
    id: i64,
    #[schema(value_type = DeviceProvider)]
    provider: String,
    #[schema(value_type = DevicePlatform)]
    platform: String,
    /// The token's last 6 characters, to tell the user's devices apart.
    token_tail: String,
    /// When it was registered last (registering again makes a device the newest).
    #[serde(serialize_with = "ts::serialize")]
    created_at: DateTime<Utc>,
}

impl From<&push_device::Model> for Device {
    fn from(row: &push_device::Model) -> Self {
        Device {
            id: row.id,
            provider: row.provider.clone(),
            platform: row.platform.clone(),
            token_tail: row.token_tail().to_owned(),
            created_at: row.created_at,
        }
    }
}

/// The `GET /api/push/devices` body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PushDeviceList)]
struct DeviceList {
    /// The caller's devices, newest first.
    devices: Vec<Device>,
}

fn is_token(token: &str) -> bool {
    (1..=MAX_TOKEN_CHARS).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}

/// The unique key of a token: its SHA-256 in lowercase hex.
pub fn token_key(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A checked registration: (provider, token, platform).
fn check(body: Registration) -> Result<(String, String, String), ApiError> {
    let provider = body.provider.unwrap_or_default();
    let token = body.token.unwrap_or_default();
    let platform = body.platform.unwrap_or_default();
    let mut errors = FieldErrors::default();
    errors.check(provider == "fcm", "provider", "\"fcm\"");
    errors.check(
        is_token(&token),
        "token",
        "1-4096 characters of A-Z, a-z, 0-9, _ : . -",
    );
    errors.check(
        matches!(platform.as_str(), "android" | "ios"),
        "platform",
        "\"android\" or \"ios\"",
    );
    errors.finish()?;
    Ok((provider, token, platform))
}

#[utoipa::path(
    post,
    path = "/api/push/devices",
    tag = "push",
    operation_id = "register_push_device",
    summary = "Register the mobile app's FCM token",
    description = "An upsert by token: the app registers again on every start and when FCM \
        rotates its token, and a token registered by another user (another account signed in on \
        the same phone) moves to the caller. The device counts as the caller's newest; past 10 \
        devices the caller's oldest is removed. Accepted also while the server has no FCM \
        credentials (`GET /api/push/providers`); nothing is sent to it then.",
    security(("bearer" = [])),
    request_body = Registration,
    responses(
        (status = 201, description = "Registered", body = Device),
        (status = 422, description = "`validation_failed`, with `fields` (`provider`, `token`, `platform`)", body = ErrorBody),
    )
)]
async fn register(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    JsonBody(body): JsonBody<Registration>,
) -> Result<HttpResponse, ApiError> {
    let (provider, token, platform) = check(body)?;
    use push_device::Column;
    let row = push_device::ActiveModel {
        user_id: Set(member.id),
        provider: Set(provider),
        platform: Set(platform),
        token_key: Set(token_key(&token)),
        token: Set(token),
        created_at: Set(model::now()),
        ..Default::default()
    };
    let stored = push_device::Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::TokenKey)
                .update_columns([
                    Column::UserId,
                    Column::Provider,
                    Column::Platform,
                    Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec_with_returning(&state.db.write)
        .await;
    let trimmed = match &stored {
        Ok(_) => keep_newest(&state, member.id).await,
        Err(_) => Ok(()),
    };
    // Also after an error: the statements may have taken effect.
    state.push.targets_changed();
    let stored = stored?;
    trimmed?;
    Ok(HttpResponse::Created().json(Device::from(&stored)))
}

/// Removes the user's devices beyond the newest [`MAX_DEVICES_PER_USER`], in one statement
/// (concurrent registrations of one user agree on which are oldest). The same rule as
/// `keep_newest` for web subscriptions in `push.rs`.
async fn keep_newest(state: &AppState, user_id: i64) -> Result<(), sea_orm::DbErr> {
    use push_device::Column;
    let newest = Query::select()
        .column(Column::Id)
        .from(push_device::Entity)
        .and_where(Column::UserId.eq(user_id))
        .order_by(Column::CreatedAt, Order::Desc)
        .order_by(Column::Id, Order::Desc)
        .limit(MAX_DEVICES_PER_USER)
        .to_owned();
    let removed = push_device::Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Id.not_in_subquery(newest))
        .exec(&state.db.write)
        .await?;
    if removed.rows_affected > 0 {
        log::info!(
            "push: user {user_id} has a new device; removed their {} oldest",
            removed.rows_affected
        );
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/push/devices",
    tag = "push",
    operation_id = "list_push_devices",
    summary = "The caller's registered devices, newest first",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's own devices (tokens shown by their last 6 characters)", body = DeviceList),
    )
)]
async fn list(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let devices = push_device::Entity::find()
        .filter(push_device::Column::UserId.eq(member.id))
        .order_by_desc(push_device::Column::CreatedAt)
        .order_by_desc(push_device::Column::Id)
        .all(&state.db.read)
        .await?;
    Ok(HttpResponse::Ok().json(DeviceList {
        devices: devices.iter().map(Device::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/push/devices/{id}",
    tag = "push",
    operation_id = "delete_push_device",
    summary = "Remove one of the caller's devices (the app signs out)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The device's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`not_found`: no such device of the caller", body = ErrorBody),
    )
)]
async fn remove(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let removed = push_device::Entity::delete_many()
        .filter(push_device::Column::Id.eq(path.into_inner()))
        .filter(push_device::Column::UserId.eq(member.id))
        .exec(&state.db.write)
        .await;
    // Also after an error: the statement may have taken effect.
    state.push.targets_changed();
    if removed?.rows_affected == 0 {
        return Err(ApiError::not_found("no such device"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fuzz;
    use proptest::prelude::*;

    #[test]
    fn tokens() {
        assert!(is_token("a"));
        assert!(is_token("fGx3:APA91b_-.Zz09"));
        assert!(is_token(&"x".repeat(MAX_TOKEN_CHARS)));
        for bad in [
            "",
            " a",
            "a/b",
            "a+b",
            "토큰",
            "a\0",
            "a=",
            &"x".repeat(4097),
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert_eq!(
            token_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest! {
        #[test]
        fn registrations_are_checked_or_refused(
            bytes in fuzz::body(&["provider", "token", "platform"]),
        ) {
            match fuzz::parse::<Registration>(&bytes).and_then(check) {
                Ok((provider, token, platform)) => {
                    prop_assert_eq!(provider, "fcm");
                    prop_assert!(is_token(&token));
                    prop_assert!(platform == "android" || platform == "ios");
                }
                Err(err) => fuzz::assert_refusal(&err)?,
            }
        }
    }
}

//! Accounts: signup, login, logout, me.
use actix_web::{HttpRequest, HttpResponse, web};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, SqlErr};
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, OptionalJsonBody};
use super::family::load_family;
use super::fields::char_len;
use super::identity::{AuthToken, AuthUser, client_ip};
use crate::auth::throttle::too_many;
use crate::error::{ApiError, ErrorBody, ErrorCode, FieldErrors};
use crate::model::{self, Family, Role, User, ts};
use crate::state::AppState;
use crate::store::entities::user;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/signup", web::post().to(signup))
        .route("/auth/login", web::post().to(login))
        .route("/auth/logout", web::post().to(logout))
        .route("/me", web::get().to(me));
}

// Optional in the code so that every missing field is reported; all required on the wire.
#[derive(Deserialize, utoipa::ToSchema)]
struct SignupRequest {
    /// Unique ignoring case.
    #[schema(value_type = String, min_length = 4, max_length = 20, pattern = "^[A-Za-z0-9_]{4,20}$")]
    login: Option<String>,
    #[schema(value_type = String, min_length = 1, max_length = 30, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    name: Option<String>,
    #[schema(value_type = String, min_length = 8, max_length = 128)]
    password: Option<String>,
    #[schema(value_type = Role)]
    role: Option<String>,
}

pub fn valid_login(login: &str) -> bool {
    (4..=20).contains(&login.len())
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "accounts",
    operation_id = "signup",
    summary = "Create an account",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The new account", body = User),
        (status = 409, description = "`login_taken` (logins are unique ignoring case)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: body not JSON", body = ErrorBody),
        (status = 503, description = "`busy`: too many passwords waiting to be hashed", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn signup(
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::default();
    let login = body.login.unwrap_or_default();
    let name = body.name.unwrap_or_default().trim().to_owned();
    let password = body.password.unwrap_or_default();
    let role = body.role.as_deref().and_then(Role::parse);
    errors.check(
        valid_login(&login),
        "login",
        "4-20 characters of A-Z, a-z, 0-9 and _",
    );
    errors.check(
        (1..=30).contains(&char_len(&name)),
        "name",
        "1-30 characters",
    );
    errors.check(
        (8..=128).contains(&char_len(&password)),
        "password",
        "8-128 characters",
    );
    errors.check(role.is_some(), "role", "\"parent\" or \"child\"");
    errors.finish()?;
    let role = role.ok_or_else(|| ApiError::internal("role checked above"))?;

    let password_hash = state.hasher.hash(password).await?;
    let row = user::ActiveModel {
        login_key: Set(login.to_ascii_lowercase()),
        login: Set(login),
        name: Set(name),
        role: Set(role.as_str().to_owned()),
        password_hash: Set(password_hash),
        family_id: Set(None),
        created_at: Set(model::now()),
        ..Default::default()
    }
    .insert(&state.db.write)
    .await
    .map_err(|err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            ApiError::conflict(ErrorCode::LoginTaken, "this login is already taken")
        }
        _ => err.into(),
    })?;
    Ok(HttpResponse::Created().json(User::from(&row)))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginRequest {
    login: String,
    password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LoginResponse {
    /// HS256 JWT for `Authorization: Bearer <token>`.
    token: String,
    #[serde(serialize_with = "ts::serialize")]
    expires_at: chrono::DateTime<chrono::Utc>,
    user: User,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidCredentials,
        "wrong login or password",
    )
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    operation_id = "login",
    summary = "Log in: get a bearer token",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A token valid 7 days", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: wrong login or password (same answer for both)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: body not JSON", body = ErrorBody),
        (status = 422, description = "`validation_failed`: JSON of the wrong shape", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: 10 failures for this login, or 100 from this client address, in 15 minutes", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
        (status = 503, description = "`busy`: too many passwords waiting to be checked", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    // Failure slots are taken before the password is checked, so parallel guesses cannot
    // overshoot the limits; a slot is given back when the check succeeds or never runs.
    let address = client_ip(&req, state.config.trust_proxy);
    let address_attempt = state
        .login_address_throttle
        .attempt(&address)
        .map_err(too_many)?;
    // A login or password that no account can have is wrong without a hash, and keys nothing.
    if !valid_login(&body.login) || !(8..=128).contains(&char_len(&body.password)) {
        address_attempt.failed();
        return Err(invalid_credentials());
    }
    let key = body.login.to_ascii_lowercase();
    let login_attempt = state.login_throttle.attempt(&key).map_err(too_many)?;
    let row = user::Entity::find()
        .filter(user::Column::LoginKey.eq(key.clone()))
        .one(&state.db.read)
        .await?;
    let stored = row.as_ref().map(|r| r.password_hash.clone());
    let matches = state.hasher.verify(body.password, stored).await?;
    let Some(row) = row.filter(|_| matches) else {
        login_attempt.failed();
        address_attempt.failed();
        return Err(invalid_credentials());
    };
    // A successful login forgives the login's failures; the address's stay (one valid account
    // must not reset a sprayer's count). Its own slot is given back.
    login_attempt.clear();
    drop(address_attempt);
    let (token, expires_at) = state
        .tokens
        .issue(row.id, model::now())
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        token,
        expires_at,
        user: User::from(&row),
    }))
}

/// No parameters: an empty body or `{}`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct LogoutRequest {}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    operation_id = "logout",
    summary = "Log out: revoke the presented token",
    description = "The token is refused from then on (401 `unauthorized`), also after a restart and on \
        every server of the database; its open board streams end and its chat sockets close with 4001 \
        within a second.",
    security(("bearer" = [])),
    request_body(content = Option<LogoutRequest>, description = "An empty body or `{}`"),
    responses(
        (status = 204, description = "The token is revoked"),
        (status = 401, description = "`unauthorized`: missing, malformed, expired or already revoked token", body = ErrorBody),
    )
)]
async fn logout(
    state: web::Data<AppState>,
    AuthToken(token): AuthToken,
    _: OptionalJsonBody<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .revocations
        .revoke(&token.id, token.user_id, token.exp)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
struct MeResponse {
    user: User,
    /// `null` until paired.
    #[schema(required = true)]
    family: Option<Family>,
}

#[utoipa::path(
    get,
    path = "/api/me",
    tag = "accounts",
    operation_id = "get_me",
    summary = "The caller and their family",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller and their family", body = MeResponse),
        (status = 401, description = "`unauthorized`: missing, malformed or expired token", body = ErrorBody),
    )
)]
async fn me(
    state: web::Data<AppState>,
    AuthUser(member): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let user = user::Entity::find_by_id(member.id)
        .one(&state.db.read)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user does not exist"))?;
    let family = match user.family_id {
        Some(family_id) => Some(load_family(&state.db, family_id).await?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(MeResponse {
        user: User::from(&user),
        family,
    }))
}

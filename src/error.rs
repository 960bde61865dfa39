//! The one API error type: every failure becomes a status code and
//! `{"error": "snake_case_code", "message": "...", "fields"?: {...}}`.
use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::board::BoardError;
use crate::missions::MissionError;
use crate::store::{Fault, StoreError, fault_of};

/// `Retry-After` of 503 `unavailable`: a database that is back is used again at once.
pub const UNAVAILABLE_RETRY_SECS: u64 = 1;
/// `Retry-After` of 507 `storage_full`: space comes back by hand, not within a second.
pub const STORAGE_FULL_RETRY_SECS: u64 = 30;

/// Every `error` code of the API (HTTP bodies and chat `error` frames): the OpenAPI schema of
/// `error`, and what the web client's message table is tested against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// a field is invalid (`fields` says which and why)
    ValidationFailed,
    /// the body is not JSON
    InvalidJson,
    /// a body that is not `application/json`
    UnsupportedMediaType,
    /// a request the framework could not read
    BadRequest,
    /// the path exists, the method does not (`Allow` lists the methods)
    MethodNotAllowed,
    /// the body is over its limit
    PayloadTooLarge,
    /// the request did not arrive in time
    RequestTimeout,
    /// no valid token
    Unauthorized,
    /// wrong login or password
    InvalidCredentials,
    /// the other role's action
    ForbiddenRole,
    /// not paired yet
    NotInFamily,
    /// no such resource (or not the family's)
    NotFound,
    /// unknown, used or expired invite code
    InviteNotFound,
    /// the login exists (ignoring case)
    LoginTaken,
    /// already in a family
    AlreadyPaired,
    /// the wish is on a board or given
    WishLocked,
    /// a board is already active
    BoardExists,
    /// the wish cannot be a board's gift
    WishNotAvailable,
    /// no active board
    NoBoard,
    /// that many grapes do not fit
    BoardFull,
    /// no granted grape to attach
    NothingToAttach,
    /// the mission cannot change in its status
    MissionLocked,
    /// another server changed the board meanwhile
    Conflict,
    /// throttled (`Retry-After`)
    TooManyRequests,
    /// the user has too many streams or sockets open
    TooManySessions,
    /// the server is at capacity for this work (`Retry-After`)
    Busy,
    /// the database is not available; nothing was stored (`Retry-After`)
    Unavailable,
    /// the database's disk is full; nothing was stored
    StorageFull,
    /// a bug
    Internal,
    /// chat: a frame that is not a known JSON frame
    InvalidFrame,
    /// chat: U+0000 in `text` or `client_id`
    InvalidText,
    /// chat: `client_id` missing or over 64 characters
    InvalidClientId,
    /// chat: blank text
    TextEmpty,
    /// chat: text over 1,000 characters
    TextTooLong,
    /// chat: the message could not be stored; send it again
    NotStored,
    /// chat: too many unanswered sends
    TooManyPending,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidJson,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BadRequest,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidCredentials,
        ErrorCode::ForbiddenRole,
        ErrorCode::NotInFamily,
        ErrorCode::NotFound,
        ErrorCode::InviteNotFound,
        ErrorCode::LoginTaken,
        ErrorCode::AlreadyPaired,
        ErrorCode::WishLocked,
        ErrorCode::BoardExists,
        ErrorCode::WishNotAvailable,
        ErrorCode::NoBoard,
        ErrorCode::BoardFull,
        ErrorCode::NothingToAttach,
        ErrorCode::MissionLocked,
        ErrorCode::Conflict,
        ErrorCode::TooManyRequests,
        ErrorCode::TooManySessions,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::StorageFull,
        ErrorCode::Internal,
        ErrorCode::InvalidFrame,
        ErrorCode::InvalidText,
        ErrorCode::InvalidClientId,
        ErrorCode::TextEmpty,
        ErrorCode::TextTooLong,
        ErrorCode::NotStored,
        ErrorCode::TooManyPending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::ForbiddenRole => "forbidden_role",
            ErrorCode::NotInFamily => "not_in_family",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InviteNotFound => "invite_not_found",
            ErrorCode::LoginTaken => "login_taken",
            ErrorCode::AlreadyPaired => "already_paired",
            ErrorCode::WishLocked => "wish_locked",
            ErrorCode::BoardExists => "board_exists",
            ErrorCode::WishNotAvailable => "wish_not_available",
            ErrorCode::NoBoard => "no_board",
            ErrorCode::BoardFull => "board_full",
            ErrorCode::NothingToAttach => "nothing_to_attach",
            ErrorCode::MissionLocked => "mission_locked",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::TextEmpty => "text_empty",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::NotStored => "not_stored",
            ErrorCode::TooManyPending => "too_many_pending",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Status {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    #[error("some fields are invalid")]
    Validation(BTreeMap<&'static str, String>),
    #[error("too many attempts, try again later")]
    TooManyRequests { retry_after_secs: u64 },
    /// A refusal the client should retry after `retry_after_secs` (`Retry-After`), such as 503
    /// `busy` when the password hashing queue is full.
    #[error("{message}")]
    RetryLater {
        status: StatusCode,
        code: ErrorCode,
        message: String,
        retry_after_secs: u64,
    },
    /// 408: the request body did not arrive in time; the connection is closed after the answer.
    #[error("the request body did not arrive within {secs} s")]
    RequestTimeout { secs: u64 },
    #[error("internal error")]
    Internal(String),
}

/// The body of every error answer (API.md "Errors").
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What went wrong, for programs (the `message` is for people).
    error: ErrorCode,
    /// Human text.
    #[schema(example = "some fields are invalid")]
    message: String,
    /// Only with `validation_failed`: the reason for each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>, nullable = false)]
    fields: Option<&'a BTreeMap<&'static str, String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Status {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    pub fn forbidden_role(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::ForbiddenRole, message)
    }
    pub fn not_in_family() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NotInFamily,
            "you are not paired with a family yet",
        )
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn invalid_field(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(field, reason.into())]))
    }
    /// 503 `busy`: the server is at capacity for this kind of work; try again shortly.
    pub fn busy(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError::RetryLater {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Busy,
            message: message.into(),
            retry_after_secs,
        }
    }
    /// 503 `unavailable`: the database is unreachable, timed out or refused the work; nothing
    /// was acknowledged, try again shortly.
    pub fn unavailable(context: impl std::fmt::Display) -> Self {
        log::warn!("database unavailable: {context}");
        ApiError::RetryLater {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unavailable,
            message: "the database is not available; nothing was stored, try again shortly".into(),
            retry_after_secs: UNAVAILABLE_RETRY_SECS,
        }
    }
    /// 507 `storage_full`: the database's disk is full; nothing was stored.
    pub fn storage_full(context: impl std::fmt::Display) -> Self {
        log::error!("database storage full: {context}");
        ApiError::RetryLater {
            status: StatusCode::INSUFFICIENT_STORAGE,
            code: ErrorCode::StorageFull,
            message: "the server's storage is full; nothing was stored, try again later".into(),
            retry_after_secs: STORAGE_FULL_RETRY_SECS,
        }
    }
    /// The answer for a database error: 503/507 when the database failed ([`fault_of`]), else
    /// 500 `internal`.
    pub fn database(err: &sea_orm::DbErr) -> Self {
        match fault_of(err) {
            Some(Fault::Unavailable) => ApiError::unavailable(err),
            Some(Fault::StorageFull) => ApiError::storage_full(err),
            None => ApiError::Internal(format!("database: {err}")),
        }
    }
    pub fn internal(context: impl std::fmt::Display) -> Self {
        ApiError::Internal(context.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Status { code, .. } => *code,
            ApiError::Validation(_) => ErrorCode::ValidationFailed,
            ApiError::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            ApiError::RetryLater { code, .. } => *code,
            ApiError::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        ApiError::database(&err)
    }
}

impl From<StoreError> for ApiError {
    /// The database failed: 503/507; anything else of the store is a bug (500).
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(context) => ApiError::unavailable(context),
            StoreError::Uncertain => {
                ApiError::unavailable("the commit did not finish in time; outcome unknown")
            }
            StoreError::StorageFull(context) => ApiError::storage_full(context),
            other @ (StoreError::Database(_) | StoreError::Stopped) => {
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<MissionError> for ApiError {
    fn from(err: MissionError) -> Self {
        match err {
            MissionError::NotFound => ApiError::not_found(err.to_string()),
            MissionError::Locked => ApiError::from(BoardError::MissionLocked),
            MissionError::Store(err) => err.into(),
        }
    }
}

impl From<BoardError> for ApiError {
    fn from(err: BoardError) -> Self {
        let message = err.to_string();
        let conflict = |code| ApiError::conflict(code, message.clone());
        match err {
            BoardError::NoSuchWish | BoardError::NoSuchMission => ApiError::not_found(message),
            BoardError::NoBoard => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NoBoard, message)
            }
            BoardError::NoBoardForReward => conflict(ErrorCode::NoBoard),
            BoardError::BoardExists => conflict(ErrorCode::BoardExists),
            BoardError::WishNotAvailable => conflict(ErrorCode::WishNotAvailable),
            BoardError::MissionLocked => conflict(ErrorCode::MissionLocked),
            BoardError::BoardFull => conflict(ErrorCode::BoardFull),
            BoardError::NothingToAttach => conflict(ErrorCode::NothingToAttach),
            BoardError::Conflict => conflict(ErrorCode::Conflict),
            BoardError::InvalidField { field, reason } => ApiError::invalid_field(field, reason),
            BoardError::Store(err) => err.into(),
            BoardError::Internal(context) => ApiError::Internal(context),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Status { status, .. } => *status,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RetryLater { status, .. } => *status,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(context) = self {
            log::error!("internal error: {context}");
        }
        let fields = match self {
            ApiError::Validation(fields) => Some(fields),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::RetryLater {
                retry_after_secs, ..
            } => {
                response.insert_header(("Retry-After", retry_after_secs.max(&1).to_string()));
            }
            // The rest of a late body may still be on its way: end the connection.
            ApiError::RequestTimeout { .. } => {
                response.force_close();
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
            fields,
        })
    }
}

/// Collects field errors so a request reports every invalid field at once.
#[derive(Default)]
pub struct FieldErrors(BTreeMap<&'static str, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, reason: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| reason.into());
    }
    pub fn check(&mut self, ok: bool, field: &'static str, reason: impl Into<String>) {
        if !ok {
            self.add(field, reason);
        }
    }
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

//! The one API error type: every failure becomes a status code and
//! `{"error": "snake_case_code", "message": "...", "fields"?: {...}}`.
use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::persister::PersistError;
use crate::store::{Fault, fault_of};

/// `Retry-After` of 503 `unavailable`: a database that is back is used again at once.
pub const UNAVAILABLE_RETRY_SECS: u64 = 1;
/// `Retry-After` of 507 `storage_full`: space comes back by hand, not within a second.
pub const STORAGE_FULL_RETRY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Status {
        status: StatusCode,
        code: &'static str,
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
        code: &'static str,
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
    /// A snake_case code such as `unauthorized`, `not_found` or `validation_failed`.
    #[schema(example = "validation_failed")]
    error: &'a str,
    /// Human text.
    #[schema(example = "some fields are invalid")]
    message: String,
    /// Only with `validation_failed`: the reason for each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>, nullable = false)]
    fields: Option<&'a BTreeMap<&'static str, String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Status {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden_role(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden_role", message)
    }
    pub fn not_in_family() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not_in_family",
            "you are not paired with a family yet",
        )
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn invalid_field(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(field, reason.into())]))
    }
    /// 503 `busy`: the server is at capacity for this kind of work; try again shortly.
    pub fn busy(message: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError::RetryLater {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
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
            code: "unavailable",
            message: "the database is not available; nothing was stored, try again shortly".into(),
            retry_after_secs: UNAVAILABLE_RETRY_SECS,
        }
    }
    /// 507 `storage_full`: the database's disk is full; nothing was stored.
    pub fn storage_full(context: impl std::fmt::Display) -> Self {
        log::error!("database storage full: {context}");
        ApiError::RetryLater {
            status: StatusCode::INSUFFICIENT_STORAGE,
            code: "storage_full",
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

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Status { code, .. } => code,
            ApiError::Validation(_) => "validation_failed",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::RetryLater { code, .. } => code,
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        ApiError::database(&err)
    }
}

impl From<PersistError> for ApiError {
    /// The Persister's database failures; the write-specific refusals (`Conflict`,
    /// `WishNotAvailable`, `MissionLocked`) are answered by the FamilyBoard before this.
    fn from(err: PersistError) -> Self {
        match err {
            PersistError::Unavailable(context) => ApiError::unavailable(context),
            PersistError::Uncertain => {
                ApiError::unavailable("the commit did not finish in time; outcome unknown")
            }
            PersistError::StorageFull(context) => ApiError::storage_full(context),
            other => ApiError::Internal(other.to_string()),
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

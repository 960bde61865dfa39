//! Request extraction with the API's error shape: JSON bodies, path and query parameters.
//! Every framework error leaves as `{"error","message"}` with the right status.
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, FieldErrors};

/// Bodies over this are refused with 413 `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The whole body must have arrived this long after the handler started reading it, else 408
/// `request_timeout` and the connection is closed: a client trickling a body a byte at a time
/// would otherwise hold a connection and a worker's attention for as long as it likes.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::not_found("no such resource").into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::invalid_field("query", err.to_string()).into())
}

/// A JSON body: 415 unless the content type is JSON, 400 `invalid_json` for malformed JSON,
/// 422 `validation_failed` for JSON of the wrong shape, 413 over 64 KiB.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body means `T::default()` (endpoints without parameters and
/// with only optional ones accept an empty body or `{}`).
pub struct OptionalJsonBody<T>(pub T);

fn parse<T: DeserializeOwned>(req: &HttpRequest, bytes: &[u8]) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        if err.is_data() {
            ApiError::Validation([("body", err.to_string())].into_iter().collect())
        } else {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {err}"))
        }
    })
}

fn payload_error(err: actix_web::Error) -> ApiError {
    match err.as_error::<actix_web::error::PayloadError>() {
        Some(actix_web::error::PayloadError::Overflow) => too_large(),
        _ => ApiError::bad_request("invalid_json", "the body could not be read"),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is larger than 64 KiB",
    )
}

fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<web::Bytes, ApiError>> {
    let bytes = web::Bytes::from_request(req, payload);
    Box::pin(async move {
        match tokio::time::timeout(BODY_TIMEOUT, bytes).await {
            Ok(read) => read.map_err(payload_error),
            Err(_) => Err(ApiError::RequestTimeout {
                secs: BODY_TIMEOUT.as_secs(),
            }),
        }
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = read_body(&req, payload);
        Box::pin(async move {
            let bytes = body.await?;
            parse(&req, &bytes).map(JsonBody)
        })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = read_body(&req, payload);
        Box::pin(async move {
            let bytes = body.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJsonBody(T::default()));
            }
            parse(&req, &bytes).map(OptionalJsonBody)
        })
    }
}

/// Gives framework-made error responses (unknown route, wrong method, ...) the JSON error shape.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || res.status().as_u16() < 400 {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found("no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this method is not allowed here",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        s if s.is_server_error() => ApiError::internal(format!("framework error {s}")),
        s => ApiError::new(
            s,
            "bad_request",
            s.canonical_reason().unwrap_or("bad request"),
        ),
    };
    let (req, _) = res.into_parts();
    let mut response: HttpResponse<BoxBody> = error.error_response();
    *response.status_mut() = status;
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body::<B>(),
    ))
}

/// For PATCH-style fields: `Some(None)` for an explicit `null`, `None` when the field is absent
/// (use with `#[serde(default, deserialize_with = "nullable")]`).
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A required text field of at most `max` characters, trimmed: on create it must be there, on
/// update it may be absent (`None` = leave as is) but never `null` or blank.
pub fn required_text(
    errors: &mut FieldErrors,
    field: &'static str,
    value: Option<Option<String>>,
    max: usize,
    creating: bool,
) -> Option<String> {
    let reason = format!("1-{max} characters");
    match value {
        Some(Some(text)) => {
            let text = text.trim().to_owned();
            errors.check((1..=max).contains(&super::char_len(&text)), field, reason);
            Some(text)
        }
        Some(None) => {
            errors.add(field, reason);
            None
        }
        None => {
            errors.check(!creating, field, "required");
            None
        }
    }
}

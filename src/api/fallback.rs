//! What the API answers when no handler does: unknown paths (404), documented paths asked with
//! another method (405 with `Allow`), and the framework's own error responses, all in the API's
//! JSON error shape.
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};

use super::extract::too_large;
use super::openapi;
use crate::error::{ApiError, ErrorCode};

/// An unknown path is 404; a documented path asked with another method is 405 with `Allow`.
pub async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    match openapi::allowed_methods(req.path()) {
        Some(allow) => {
            let mut response = ApiError::new(
                actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed here; use {allow}", req.method()),
            )
            .error_response();
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
        None => ApiError::not_found("no such resource").error_response(),
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
    let allow = (status == StatusCode::METHOD_NOT_ALLOWED)
        .then(|| openapi::allowed_methods(res.request().path()))
        .flatten();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found("no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            ErrorCode::MethodNotAllowed,
            "this method is not allowed here",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        s if s.is_server_error() => ApiError::internal(format!("framework error {s}")),
        s => ApiError::new(
            s,
            ErrorCode::BadRequest,
            s.canonical_reason().unwrap_or("bad request"),
        ),
    };
    let (req, _) = res.into_parts();
    let mut response: HttpResponse<BoxBody> = error.error_response();
    *response.status_mut() = status;
    if let Some(value) = allow.and_then(|allow| header::HeaderValue::from_str(allow).ok()) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body::<B>(),
    ))
}

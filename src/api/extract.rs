//! Request extraction with the API's error shape: JSON bodies, path and query parameters.
//! Every framework error leaves as `{"error","message"}` with the right status.
use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, ErrorCode, FieldErrors};

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
    web::QueryConfig::default().error_handler(|err, _| query_error(err).into())
}

/// A query string that does not fit the handler's parameters: 422 naming `query`.
pub fn query_error(err: actix_web::error::QueryPayloadError) -> ApiError {
    ApiError::invalid_field("query", err.to_string())
}

/// A JSON body: 415 unless the content type is JSON, 400 `invalid_json` for malformed JSON,
/// 422 `validation_failed` for JSON of the wrong shape, 413 over 64 KiB.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body or `null` means `T::default()` (endpoints without
/// parameters and with only optional ones accept an empty body, `null` or `{}`).
pub struct OptionalJsonBody<T>(pub T);

pub(crate) fn parse<T: DeserializeOwned>(req: &HttpRequest, bytes: &[u8]) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    let value = read_json(bytes)?;
    if !value.is_object() {
        return Err(ApiError::invalid_field("body", "a JSON object"));
    }
    if has_escaped_nul(bytes)
        && let Some(field) = nul_field::<T>(&value)
    {
        return Err(ApiError::invalid_field(field, "must not contain U+0000"));
    }
    T::deserialize(value)
        .map_err(|err| ApiError::Validation([("body", err.to_string())].into_iter().collect()))
}

/// JSON text as a value, with every number that is a whole number written as a fraction
/// (`52.0`) turned into that integer: JSON has one number type, and JSON Schema's `integer`
/// (what the OpenAPI document says) includes `52.0`. Anything but valid JSON is 400
/// `invalid_json`.
fn read_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
        ApiError::bad_request(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {err}"),
        )
    })?;
    whole_numbers_as_integers(&mut value);
    Ok(value)
}

fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// Whether valid JSON text holds U+0000 in a string. It can only be written as the escape
/// `\u0000` (JSON refuses raw control characters in strings), and that escape is real only
/// after an odd run of backslashes (`\\u0000` is a backslash and the text `u0000`).
///
/// Every stored string comes through here or the chat frame check: PostgreSQL refuses U+0000 in
/// `text`, and one family's row that fails would fail the Persister's whole batch, so it is
/// refused at the door (a byte scan, cheap on the hot path).
pub fn has_escaped_nul(json: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = json[at..].iter().position(|&b| b == b'\\') {
        let start = at + found;
        let run = json[start..].iter().take_while(|&&b| b == b'\\').count();
        at = start + run;
        if run % 2 == 1 && json[at..].starts_with(b"u0000") {
            return true;
        }
    }
    false
}

/// The request field that holds U+0000 (the top-level key whose value or name has it), named
/// as `T` names its fields. Fields `T` does not have are dropped unread, so U+0000 in them
/// harms nothing: `None` then.
fn nul_field<T: DeserializeOwned>(value: &serde_json::Value) -> Option<&'static str> {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }
    let (serde_json::Value::Object(map), Some(fields)) = (value, struct_fields::<T>()) else {
        return has_nul(value).then_some("body");
    };
    map.iter()
        .filter(|(_, v)| has_nul(v))
        .find_map(|(k, _)| fields.iter().find(|f| **f == k.as_str()).copied())
}

/// The field names of the struct `T` deserializes into: serde hands them to
/// `deserialize_struct`, which this deserializer records before it gives up. `None` when `T` is
/// not a struct.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{Error as _, Visitor, value::Error};

    struct Fields<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = Some(fields);
            Err(Error::custom("only the field names"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

fn payload_error(err: actix_web::Error) -> ApiError {
    match err.as_error::<actix_web::error::PayloadError>() {
        Some(actix_web::error::PayloadError::Overflow) => too_large(),
        _ => ApiError::bad_request(ErrorCode::InvalidJson, "the body could not be read"),
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
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
            // No body, or JSON `null`: no parameters given.
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() || trimmed == b"null" {
                return Ok(OptionalJsonBody(T::default()));
            }
            parse(&req, &bytes).map(OptionalJsonBody)
        })
    }
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
            errors.check(
                (1..=max).contains(&super::fields::char_len(&text)),
                field,
                reason,
            );
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::api::fuzz;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)] // only deserialized
    struct Sample {
        name: Option<String>,
        #[serde(rename = "keys")]
        nested: Option<serde_json::Value>,
    }

    #[test]
    fn u0000_is_found_only_where_json_means_it() {
        assert!(has_escaped_nul(br#"{"name":"bad\u0000name"}"#));
        assert!(has_escaped_nul(br#"{"name":"\\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"name":"\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"name":"ok"}"#));
        let refused = fuzz::parse::<Sample>(br#"{"name":"bad\u0000name"}"#).unwrap_err();
        assert!(matches!(&refused, ApiError::Validation(f) if f.contains_key("name")));
        let nested = fuzz::parse::<Sample>(br#"{"keys":{"p256dh":"\u0000"}}"#).unwrap_err();
        assert!(matches!(&nested, ApiError::Validation(f) if f.contains_key("keys")));
        // A field `Sample` does not have is dropped unread: its U+0000 harms nothing.
        let stranger = fuzz::parse::<Sample>(br#"{"other":"\u0000","name":"ok"}"#);
        assert!(stranger.is_ok_and(|s| s.name.as_deref() == Some("ok")));
    }

    proptest! {
        #[test]
        fn any_body_parses_or_is_refused_with_the_error_shape(
            bytes in fuzz::body(&["name", "keys", "link"]),
            content_type in prop_oneof![
                Just("application/json"),
                Just("application/merge-patch+json"),
                Just("text/plain"),
                Just(""),
                Just("application/json; charset=utf-8"),
            ],
        ) {
            let req = actix_web::test::TestRequest::default()
                .insert_header(("content-type", content_type))
                .to_http_request();
            match parse::<Sample>(&req, &bytes) {
                Ok(sample) => {
                    prop_assert!(!sample.name.unwrap_or_default().contains('\0'));
                }
                Err(err) => fuzz::assert_refusal(&err)?,
            }
            fuzz::accepted_or_refused(parse::<serde_json::Value>(&req, &bytes))?;
        }
    }
}

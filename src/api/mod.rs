//! HTTP handlers, one file per resource: parse, authorize, call, map.
pub mod access;
pub mod accounts;
pub mod board;
pub mod calendar;
pub mod chat;
pub mod devices;
pub mod extract;
pub mod fallback;
pub mod family;
pub mod fields;
pub mod headers;
pub mod identity;
pub mod missions;
pub mod openapi;
pub mod ops;
pub mod push;
pub mod wishes;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig, static_dir: &std::path::Path) {
    cfg.service(
        web::scope("/api")
            .configure(accounts::routes)
            .configure(family::routes)
            .configure(wishes::routes)
            .configure(board::routes)
            .configure(chat::routes)
            .configure(push::routes)
            .configure(devices::routes)
            .configure(missions::routes)
            .configure(calendar::routes)
            .configure(openapi::routes)
            .default_service(web::to(fallback::not_found)),
    )
    .configure(ops::routes)
    // The web client: plain files, `/` serves index.html.
    .service(
        actix_files::Files::new("/", static_dir)
            .index_file("index.html")
            .prefer_utf8(true),
    )
    .default_service(web::to(fallback::not_found));
}

/// Property-test support: inputs a hostile client may send, and the check that a refusal has
/// the API's error shape.
#[cfg(test)]
pub(crate) mod fuzz {
    use actix_web::ResponseError;
    use actix_web::body::MessageBody;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;

    use crate::error::ApiError;

    /// A JSON scalar of any kind, with strings that hit the limits: empty, blank, long, U+0000,
    /// escapes, dates at and past chrono's ends, URLs.
    fn scalar() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "[ a-z\\x00]{0,3}".prop_map(Value::String),
            "[\\x{ac00}-\\x{d7a3}]{95,105}".prop_map(Value::String),
            "[a-z]{2040,2060}".prop_map(Value::String),
            prop_oneof![
                Just("+262142-12-31"),
                Just("-262143-01-01"),
                Just("9999-12-31"),
                Just("0000-01-01"),
                Just("2026-02-29"),
                Just("2026-12-01"),
                Just("https://shop.example/x"),
                Just("http://"),
                Just("open"),
                Just("K7QX2MPA"),
            ]
            .prop_map(|s| Value::String(s.into())),
        ]
    }

    /// A JSON value: mostly an object whose keys are the request's own fields (and strangers).
    fn value(keys: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            proptest::sample::select(keys).prop_map(str::to_owned),
            ".{0,8}",
        ];
        let leaf = scalar().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(".{0,4}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            4 => proptest::collection::btree_map(key, leaf.clone(), 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            1 => leaf,
        ]
    }

    /// Request bodies: JSON built from the fields, or any bytes at all.
    pub fn body(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => value(keys).prop_map(|v| v.to_string().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
            1 => ".{0,64}".prop_map(String::into_bytes),
        ]
    }

    /// Query strings built from the parameters' names, or any text at all.
    pub fn query(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
        let raw = prop_oneof![
            ".{0,12}",
            "[0-9-]{0,14}",
            "%[0-9A-F]{2}",
            Just("%2B262142-12-31".to_owned()),
            Just("-262143-01-01".to_owned()),
            Just("9999-12-31".to_owned()),
            Just("99999999999999999999".to_owned()),
        ];
        let pair =
            (proptest::sample::select(keys), raw.clone()).prop_map(|(k, v)| format!("{k}={v}"));
        prop_oneof![
            4 => proptest::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&")),
            1 => raw,
        ]
    }

    /// Parses a body as a JSON request body is parsed (`application/json`).
    pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("content-type", "application/json"))
            .to_http_request();
        super::extract::parse(&req, bytes)
    }

    /// Parses a query string as `web::Query` does, with the API's error.
    pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
        actix_web::web::Query::<T>::from_query(query)
            .map(actix_web::web::Query::into_inner)
            .map_err(super::extract::query_error)
    }

    /// A refusal of input: a 4xx with `{"error": snake_case, "message"}`, never a 5xx.
    pub fn assert_refusal(err: &ApiError) -> Result<(), TestCaseError> {
        let status = err.status_code();
        prop_assert!(status.is_client_error(), "{status}: {err:?}");
        let code = err.code().as_str();
        prop_assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
        let body = err
            .error_response()
            .into_body()
            .try_into_bytes()
            .map_err(|_| TestCaseError::fail("an error body that is not bytes"))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
        prop_assert_eq!(json["error"].as_str(), Some(code));
        prop_assert!(json["message"].is_string());
        Ok(())
    }

    /// Either way is fine, as long as a refusal has the error shape.
    pub fn accepted_or_refused<T>(result: Result<T, ApiError>) -> Result<(), TestCaseError> {
        match result {
            Ok(_) => Ok(()),
            Err(err) => assert_refusal(&err),
        }
    }
}

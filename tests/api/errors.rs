use awc::http::StatusCode;

use crate::helpers::{error_code, spawn_app};

async fn raw_post(
    app: &crate::helpers::TestApp,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut res = app
        .client
        .post(app.url("/api/auth/signup"))
        .insert_header(("content-type", content_type))
        .send_body(body)
        .await
        .unwrap();
    let body: serde_json::Value = res.json().limit(1 << 20).await.expect("a JSON error body");
    (res.status(), body)
}

#[actix_web::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    let (status, body) = raw_post(&app, "application/json", b"{\"login\": ".to_vec()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    assert!(body["message"].is_string());
}

#[actix_web::test]
async fn json_of_the_wrong_shape_is_422() {
    let app = spawn_app().await;
    let (status, body) = raw_post(&app, "application/json", br#"{"login": 42}"#.to_vec()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
}

#[actix_web::test]
async fn wrong_content_type_is_415_with_the_json_shape() {
    let app = spawn_app().await;
    let body = br#"{"login":"abcd","name":"n","password":"password","role":"child"}"#.to_vec();
    let (status, answer) = raw_post(&app, "text/plain", body).await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
}

#[actix_web::test]
async fn a_70_kib_body_is_413_and_changes_nothing() {
    let app = spawn_app().await;
    let padding = "x".repeat(70 * 1024);
    let body = format!(
        r#"{{"login":"big_body","name":"n","password":"password","role":"child","pad":"{padding}"}}"#
    );
    let (status, answer) = raw_post(&app, "application/json", body.into_bytes()).await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Nothing was created: the login is still free.
    app.signup("big_body", "child").await;
}

#[actix_web::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let (status, body) = app.request("GET", "/api/nothing/here", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = app.request("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

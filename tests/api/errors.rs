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

/// Sends `method path` with a raw JSON body and the token; returns the status, the `Allow`
/// header and the JSON answer (Null when the body is not JSON).
async fn send_raw(
    app: &crate::helpers::TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut res = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .insert_header(("content-type", "application/json"))
        .send_body(body.to_owned())
        .await
        .unwrap();
    let allow = res
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = res.json().await.unwrap_or(serde_json::Value::Null);
    (res.status(), allow, answer)
}

#[actix_web::test]
async fn a_documented_path_asked_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    let fam = app.family("allow").await;
    for (method, path, allow) in [
        ("TRACE", "/api/board", "GET, POST, DELETE"),
        ("PUT", "/api/board/grant", "POST"),
        ("TRACE", "/api/missions/7/submit", "POST"),
        ("PUT", "/api/wishes/3", "PATCH, DELETE"),
        ("TRACE", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
    ] {
        let (status, got, body) = send_raw(&app, method, path, &fam.parent.token, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(error_code(&body), "method_not_allowed", "{method} {path}");
    }
    let (status, allow, _) = send_raw(&app, "TRACE", "/api/nothing", &fam.parent.token, "").await;
    assert_eq!((status, allow), (StatusCode::NOT_FOUND, None));
}

#[actix_web::test]
async fn bodies_are_read_as_the_openapi_document_describes_them() {
    let app = spawn_app().await;
    let fam = app.family("shapes").await;
    app.open_board(&fam, 10).await;
    // JSON Schema's integer includes 2.0.
    let (status, _, board) = send_raw(
        &app,
        "POST",
        "/api/board/grant",
        &fam.parent.token,
        r#"{"count": 2.0}"#,
    )
    .await;
    assert_eq!((status, &board["granted"]), (StatusCode::OK, &2.into()));
    let (status, _, body) = send_raw(
        &app,
        "POST",
        "/api/board/grant",
        &fam.parent.token,
        r#"{"count": 2.5}"#,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    // A parameterless action takes no body, `{}` or `null`; never an array.
    let (status, _, _) =
        send_raw(&app, "POST", "/api/board/attach", &fam.child.token, "null").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) =
        send_raw(&app, "POST", "/api/board/attach", &fam.child.token, "[]").await;
    assert_eq!(
        (status, body["fields"]["body"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("a JSON object"))
    );
    // U+0000 in a field the request does not have is never read, so it is no reason to refuse.
    let (status, _, wish) = send_raw(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        r#"{"name": "kite", "note": "a\u0000b"}"#,
    )
    .await;
    assert_eq!(
        (status, &wish["name"]),
        (StatusCode::CREATED, &"kite".into())
    );
    // In a field it has, it is.
    let (status, _, body) = send_raw(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        r#"{"name": "ki\u0000te"}"#,
    )
    .await;
    assert_eq!(
        (status, body["fields"]["name"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("must not contain U+0000")
        )
    );
    // A link is a URL as written (`format: uri`): blank or padded is refused; null clears.
    for link in [r#""""#, r#"" https://shop.example/x""#] {
        let body = format!(r#"{{"name": "bike", "link": {link}}}"#);
        let (status, _, answer) =
            send_raw(&app, "POST", "/api/wishes", &fam.child.token, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{link}: {answer}");
        assert!(answer["fields"]["link"].is_string(), "{link}: {answer}");
    }
    let (status, _, wish) = send_raw(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        r#"{"name": "bike", "link": null}"#,
    )
    .await;
    assert_eq!(
        (status, &wish["link"]),
        (StatusCode::CREATED, &serde_json::Value::Null)
    );
}

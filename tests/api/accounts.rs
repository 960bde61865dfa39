use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{JWT_SECRET, PASSWORD, error_code, spawn_app};

async fn signup_status(
    app: &crate::helpers::TestApp,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    app.request("POST", "/api/auth/signup", None, Some(body))
        .await
}

#[actix_web::test]
async fn signup_returns_the_user_and_login_returns_a_working_token() {
    let app = spawn_app().await;
    let user = app.signup("Grape_Mom", "parent").await;
    assert_eq!(user["login"], "Grape_Mom");
    assert_eq!(user["role"], "parent");
    assert_eq!(user["name"], "Grape_Mom");
    assert!(user.get("password_hash").is_none());

    let (status, body) = app
        .request(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"login": "grape_mom", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], user["id"]);
    let expires = body["expires_at"].as_str().unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!(
        (167..=168).contains(&days),
        "token lives 7 days, got {days} h"
    );

    let token = body["token"].as_str().unwrap();
    let (status, me) = app.get("/api/me", token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"], user);
    assert_eq!(me["family"], serde_json::Value::Null);
}

#[actix_web::test]
async fn signup_checks_every_field_bound() {
    let app = spawn_app().await;
    let ok = |login: &str, name: &str, password: &str, role: &str| json!({"login": login, "name": name, "password": password, "role": role});
    let long_name: String = "가".repeat(30);
    let cases = [
        (ok("abc", "n", "password", "child"), Some("login")),
        (ok("abcd", "n", "password", "child"), None),
        (ok(&"a".repeat(20), "n", "password", "child"), None),
        (ok(&"a".repeat(21), "n", "password", "child"), Some("login")),
        (ok("bad-char", "n", "password", "child"), Some("login")),
        (ok("한글로그인", "n", "password", "child"), Some("login")),
        (ok("name_ok30", &long_name, "password", "child"), None),
        (
            ok("name_31", &"가".repeat(31), "password", "child"),
            Some("name"),
        ),
        (ok("name_blank", "   ", "password", "child"), Some("name")),
        (ok("pw_short", "n", "1234567", "child"), Some("password")),
        (ok("pw_min", "n", "12345678", "child"), None),
        (ok("pw_max", "n", &"p".repeat(128), "child"), None),
        (
            ok("pw_long", "n", &"p".repeat(129), "child"),
            Some("password"),
        ),
        (ok("role_bad", "n", "password", "admin"), Some("role")),
        (json!({"login": "missing"}), Some("password")),
    ];
    for (body, bad_field) in cases {
        let (status, answer) = signup_status(&app, body.clone()).await;
        match bad_field {
            None => assert_eq!(status, StatusCode::CREATED, "{body} -> {answer}"),
            Some(field) => {
                assert_eq!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{body} -> {answer}"
                );
                assert_eq!(error_code(&answer), "validation_failed");
                assert!(answer["fields"][field].is_string(), "{field} in {answer}");
            }
        }
    }
}

#[actix_web::test]
async fn duplicate_login_in_another_case_is_taken() {
    let app = spawn_app().await;
    app.signup("podo_kid", "child").await;
    let (status, body) = signup_status(
        &app,
        json!({"login": "PODO_Kid", "name": "x", "password": PASSWORD, "role": "parent"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "login_taken");
}

#[actix_web::test]
async fn wrong_password_and_unknown_login_get_the_same_answer() {
    let app = spawn_app().await;
    app.signup("real_user", "child").await;
    let (s1, b1) = app
        .request(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"login": "real_user", "password": "wrong-password"})),
        )
        .await;
    let (s2, b2) = app
        .request(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"login": "ghost_user", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(error_code(&b1), "invalid_credentials");
}

#[actix_web::test]
async fn ten_failed_logins_lock_that_login_with_retry_after() {
    let app = spawn_app().await;
    app.signup("locked_out", "child").await;
    app.signup("other_one", "child").await;
    for _ in 0..10 {
        let (status, _) = app
            .request(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"login": "locked_out", "password": "nope-nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while locked.
    let mut res = app
        .client
        .post(app.url("/api/auth/login"))
        .send_json(&json!({"login": "LOCKED_OUT", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), "too_many_requests");
    // Another login is unaffected.
    app.login("other_one").await;
}

fn token_for(sub: &str, exp: i64) -> String {
    let claims = json!({"sub": sub, "iat": chrono::Utc::now().timestamp(), "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn missing_expired_tampered_and_foreign_tokens_are_unauthorized() {
    let app = spawn_app().await;
    let user = app.signup("token_kid", "child").await;
    let id = user["id"].as_i64().unwrap().to_string();
    let good = app.login("token_kid").await;
    assert_eq!(app.get("/api/me", &good).await.0, StatusCode::OK);

    let expired = token_for(&id, chrono::Utc::now().timestamp() - 5);
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": id, "exp": chrono::Utc::now().timestamp() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"some other key"),
    )
    .unwrap();
    let unknown_user = token_for("999999", chrono::Utc::now().timestamp() + 3600);
    for token in [
        expired,
        tampered,
        forged,
        unknown_user,
        "not.a.jwt".to_owned(),
    ] {
        let (status, body) = app.get("/api/me", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(error_code(&body), "unauthorized");
    }
    let (status, body) = app.request("GET", "/api/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
    // The query token is only for the streaming endpoints.
    let (status, _) = app
        .request("GET", &format!("/api/me?access_token={good}"), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

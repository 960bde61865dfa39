//! Hostile and careless clients: bounded hashing, atomic throttles (per login, per user and per
//! client address), sessions per user, logout and token expiry ending streams and sockets, slow
//! requests, browser hardening headers.
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{JWT_SECRET, PASSWORD, TestApp, WsEnd, error_code, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(5);

/// POSTs JSON with extra headers; returns status, headers and body.
async fn post_with(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, awc::http::header::HeaderMap, Value) {
    let mut req = app.client.post(app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = req.send_json(&body).await.expect("request sent");
    let bytes = res.body().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status(), res.headers().clone(), value)
}

async fn login_as(app: &TestApp, login: &str, password: &str) -> (StatusCode, Value) {
    app.request(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"login": login, "password": password})),
    )
    .await
}

fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<u64> {
    headers.get("retry-after")?.to_str().ok()?.parse().ok()
}

/// Counts the statuses of many answers.
fn tally(statuses: impl IntoIterator<Item = StatusCode>) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_u16()).or_insert(0) += 1;
    }
    counts
}

// ---- 1. hashing is bounded ----

#[actix_web::test]
async fn a_signup_flood_beyond_the_hashing_queue_is_refused_with_busy() {
    let app = spawn_app().await;
    // 256 may wait and one per core runs; 600 at once cannot all fit.
    let answers = join_all((0..600).map(|i| {
        let app = &app;
        async move {
            post_with(
                app,
                "/api/auth/signup",
                None,
                &[],
                json!({"login": format!("flood_{i}"), "name": "n", "password": PASSWORD, "role": "child"}),
            )
            .await
        }
    }))
    .await;
    let counts = tally(answers.iter().map(|a| a.0));
    let busy = counts.get(&503).copied().unwrap_or(0);
    let created = counts.get(&201).copied().unwrap_or(0);
    assert_eq!(busy + created, 600, "only 201 or 503: {counts:?}");
    assert!(busy > 0, "the queue is bounded: {counts:?}");
    assert!(created >= 256, "the queue is used: {counts:?}");
    for (status, headers, body) in &answers {
        if *status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(error_code(body), "busy");
            assert!(retry_after(headers).is_some_and(|s| s >= 1), "Retry-After");
        }
    }
    // Once the flood has drained, sign-ups work again.
    app.signup("after_flood", "parent").await;
}

// ---- 2. atomic, bounded throttles ----

#[actix_web::test]
async fn parallel_wrong_passwords_for_one_login_get_at_most_ten_401() {
    let app = spawn_app().await;
    app.signup("target_kid", "child").await;
    let answers = join_all((0..200).map(|_| {
        post_with(
            &app,
            "/api/auth/login",
            None,
            &[],
            json!({"login": "target_kid", "password": "wrong-password"}),
        )
    }))
    .await;
    let counts = tally(answers.iter().map(|a| a.0));
    assert!(
        counts.get(&401).copied().unwrap_or(0) <= 10,
        "at most 10 failures are checked: {counts:?}"
    );
    assert_eq!(
        counts.get(&401).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0),
        200,
        "{counts:?}"
    );
    for (status, headers, body) in &answers {
        if *status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(body), "too_many_requests");
            assert!(retry_after(headers).is_some_and(|s| (1..=900).contains(&s)));
        }
    }
    // Locked now, even with the right password.
    assert_eq!(
        login_as(&app, "target_kid", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[actix_web::test]
async fn logins_no_account_can_have_are_wrong_credentials() {
    let app = spawn_app().await;
    let long = "x".repeat(5000);
    for login in ["abc", "bad-char!", "한글로그인", long.as_str(), ""] {
        let (status, body) = login_as(&app, login, PASSWORD).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            "{login:.20}"
        );
    }
    let (status, body) = login_as(&app, "fine_login", &"p".repeat(60_000)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
}

#[actix_web::test]
async fn one_address_spraying_many_logins_is_stopped_after_100_failures() {
    let app = spawn_app().await;
    app.signup("sprayed_kid", "child").await;
    // One password tried on 100 logins (10 each at most would be allowed per login).
    let answers = join_all((0..100).map(|i| {
        let app = &app;
        async move { login_as(app, &format!("victim_{i}"), "Password123").await.0 }
    }))
    .await;
    assert_eq!(tally(answers), [(401, 100)].into());
    // The address is locked for any login, the right password too; a forwarded-for header
    // changes nothing without --trust-proxy.
    let (status, headers, body) = post_with(
        &app,
        "/api/auth/login",
        None,
        &[("x-forwarded-for", "203.0.113.9")],
        json!({"login": "sprayed_kid", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    assert!(retry_after(&headers).is_some_and(|s| (1..=900).contains(&s)));
}

#[actix_web::test]
async fn behind_a_trusted_proxy_the_last_forwarded_hop_is_the_address() {
    let app = spawn_app_with(|c| c.trust_proxy = true).await;
    app.signup("proxied_kid", "child").await;
    // The client may write anything before the proxy's hop; only the last one counts.
    let answers = join_all((0..100).map(|i| {
        let app = &app;
        async move {
            let spoofed = format!("10.9.{}.{}, 198.51.100.7", i / 200, i % 200);
            post_with(
                app,
                "/api/auth/login",
                None,
                &[("x-forwarded-for", spoofed.as_str())],
                json!({"login": format!("victim_{i}"), "password": "Password123"}),
            )
            .await
            .0
        }
    }))
    .await;
    assert_eq!(tally(answers), [(401, 100)].into());
    let login = json!({"login": "proxied_kid", "password": PASSWORD});
    let (status, _, _) = post_with(
        &app,
        "/api/auth/login",
        None,
        &[("x-forwarded-for", "1.1.1.1, 198.51.100.7")],
        login.clone(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "that address is locked"
    );
    let (status, _, body) = post_with(
        &app,
        "/api/auth/login",
        None,
        &[("x-forwarded-for", "198.51.100.8")],
        login,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "another address is not: {body}");
}

#[actix_web::test]
async fn parallel_wrong_joins_by_one_user_get_at_most_ten_404() {
    let app = spawn_app().await;
    let child = app.member("joiner_kid", "child").await;
    let answers = join_all((0..200).map(|i| {
        let code = format!("ABCD{:04}", 2000 + i).replace(['0', '1'], "Z");
        let token = child.token.clone();
        let app = &app;
        async move {
            post_with(
                app,
                "/api/family/join",
                Some(&token),
                &[],
                json!({ "code": code }),
            )
            .await
        }
    }))
    .await;
    let counts = tally(answers.iter().map(|a| a.0));
    assert!(counts.get(&404).copied().unwrap_or(0) <= 10, "{counts:?}");
    assert_eq!(
        counts.get(&404).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0),
        200,
        "{counts:?}"
    );
    for (status, headers, body) in &answers {
        if *status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(body), "too_many_requests");
            assert!(retry_after(headers).is_some_and(|s| (1..=600).contains(&s)));
        }
    }
}

#[actix_web::test]
async fn one_address_is_limited_to_100_failed_joins_across_users() {
    let app = spawn_app().await;
    let mut children = Vec::new();
    for i in 0..11 {
        children.push(app.member(&format!("many_kid{i}"), "child").await);
    }
    // Ten users, ten failures each: every user is at its own limit, the address at 100.
    for child in &children[..10] {
        for _ in 0..10 {
            let (status, body) = app
                .post(
                    "/api/family/join",
                    &child.token,
                    json!({"code": "ZZZZZZZZ"}),
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }
    }
    let (status, body) = app
        .post(
            "/api/family/join",
            &children[10].token,
            json!({"code": "ZZZZZZZZ"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
        "a fresh user from the same address"
    );
}

// ---- 3. sessions per user ----

/// Tries to open an SSE stream; the status (a stream that opened is dropped again).
async fn try_sse(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(app.url(&format!("/api/board/events?access_token={token}")))
        .send()
        .await
        .expect("SSE request")
        .status()
}

#[actix_web::test]
async fn a_user_may_hold_16_board_streams_and_a_closed_one_frees_its_slot() {
    let app = spawn_app_with(|c| c.timing.sse_ping_secs = 1).await;
    let fam = app.family("sse_slots").await;
    let mut streams = Vec::new();
    for _ in 0..16 {
        let mut stream = app.sse(&fam.child.token).await;
        stream.next_board(WAIT).await.expect("initial state");
        streams.push(stream);
    }
    let (status, body) = app
        .request(
            "GET",
            &format!("/api/board/events?access_token={}", fam.child.token),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions")
    );
    // The other member is counted apart.
    let mut parents = app.sse(&fam.parent.token).await;
    parents.next_board(WAIT).await.expect("initial state");
    // A closed stream gives its slot back (noticed at the next ping).
    streams.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if try_sse(&app, &fam.child.token).await == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn a_user_may_hold_16_chat_sockets_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let fam = app.family("ws_slots").await;
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(app.ws(&fam.child.token).await.0);
    }
    // Refused as plain HTTP, before any upgrade.
    let url = app.url(&format!("/api/chat/ws?access_token={}", fam.child.token));
    let refused = app.client.ws(url.clone()).connect().await;
    match refused {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok((res, _)) => panic!("upgraded: {}", res.status()),
    }
    let (status, body) = app
        .request(
            "GET",
            &format!("/api/chat/ws?access_token={}", fam.child.token),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions")
    );
    app.ws(&fam.parent.token).await;
    // A socket the client closes gives its slot back.
    let mut closing = sockets.pop().expect("a socket");
    {
        use futures_util::SinkExt;
        closing
            .conn
            .send(awc::ws::Message::Close(None))
            .await
            .expect("close");
    }
    assert!(closing.ended(WAIT).await.is_some());
    let deadline = Instant::now() + WAIT;
    loop {
        match app.client.ws(url.clone()).connect().await {
            Ok((res, _)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => break,
            _ => {
                assert!(Instant::now() < deadline, "the slot was never given back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[actix_web::test]
async fn the_session_limit_is_a_setting() {
    let app = spawn_app_with(|c| c.max_sessions_per_user = 2).await;
    let fam = app.family("two_slots").await;
    let _a = app.sse(&fam.child.token).await;
    let _b = app.sse(&fam.child.token).await;
    assert_eq!(
        try_sse(&app, &fam.child.token).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

// ---- 4. tokens end ----

fn token_for(user_id: i64, exp: i64, jti: Option<&str>) -> String {
    let mut claims =
        json!({"sub": user_id.to_string(), "iat": chrono::Utc::now().timestamp(), "exp": exp});
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token")
}

async fn logout(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.request("POST", "/api/auth/logout", Some(token), None)
        .await
}

#[actix_web::test]
async fn logout_revokes_the_token_and_ends_its_streams_and_sockets_at_once() {
    let mut app = spawn_app().await;
    let fam = app.family("bye").await;
    let other_token = app.login(&fam.child.login).await;
    let token = fam.child.token.clone();
    let mut stream = app.sse(&token).await;
    stream.next_board(WAIT).await.expect("initial state");
    let mut other_stream = app.sse(&other_token).await;
    other_stream.next_board(WAIT).await.expect("initial state");
    let (mut socket, _) = app.ws(&token).await;
    let (mut other_socket, _) = app.ws(&other_token).await;

    let (status, body) = logout(&app, &token).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let logged_out = Instant::now();
    assert_eq!(
        socket.ended(Duration::from_secs(1)).await,
        Some(WsEnd::Closed(Some(4001)))
    );
    assert!(
        stream.next_block(Duration::from_secs(1)).await.is_none(),
        "the stream ended"
    );
    assert!(logged_out.elapsed() < Duration::from_millis(1500));
    let (status, body) = app.get("/api/me", &token).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(logout(&app, &token).await.0, StatusCode::UNAUTHORIZED);
    // The user's other token, its stream and its socket are untouched.
    assert_eq!(app.get("/api/me", &other_token).await.0, StatusCode::OK);
    other_socket.send_message("still-here", "hello").await;
    other_socket.expect("ack", WAIT).await;
    let still_in = crate::helpers::TestFamily {
        id: fam.id,
        parent: fam.parent.clone(),
        child: crate::helpers::Member {
            token: other_token.clone(),
            ..fam.child.clone()
        },
    };
    app.open_board(&still_in, 3).await;
    assert_eq!(other_stream.next_board(WAIT).await.map(|b| b.0), Some(1));

    // The revocation survives a restart.
    drop((other_stream, other_socket));
    app.restart().await;
    assert_eq!(app.get("/api/me", &token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/me", &other_token).await.0, StatusCode::OK);
    let (status, _) = app
        .request(
            "GET",
            &format!("/api/board/events?access_token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn a_logout_on_one_server_holds_on_another_of_the_same_database() {
    let app_a = spawn_app().await;
    let app_b = spawn_app_with(|c| *c = app_a.config.clone()).await;
    let fam = app_a.family("two_servers").await;
    let token = fam.parent.token.clone();
    assert_eq!(app_b.get("/api/me", &token).await.0, StatusCode::OK);
    let mut stream_b = app_b.sse(&token).await;
    stream_b.next_board(WAIT).await.expect("initial state");
    assert_eq!(logout(&app_a, &token).await.0, StatusCode::NO_CONTENT);
    // B reads new revocations at most a second apart, when a request asks.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = app_b.get("/api/me", &token).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert!(
        stream_b.next_block(Duration::from_secs(1)).await.is_none(),
        "B's stream of the token ended too"
    );
}

#[actix_web::test]
async fn streams_and_sockets_end_when_their_token_expires() {
    let app = spawn_app().await;
    let fam = app.family("expiring").await;
    let exp = chrono::Utc::now().timestamp() + 3;
    let token = token_for(fam.child.id, exp, Some("short-lived-token"));
    let mut stream = app.sse(&token).await;
    stream.next_board(WAIT).await.expect("initial state");
    let (mut socket, _) = app.ws(&token).await;
    let started = Instant::now();
    assert_eq!(
        socket.ended(Duration::from_secs(5)).await,
        Some(WsEnd::Closed(Some(4001)))
    );
    assert!(stream.next_block(Duration::from_secs(2)).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(app.get("/api/me", &token).await.0, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn tokens_from_before_jti_still_work_and_can_be_revoked() {
    let app = spawn_app().await;
    let user = app.signup("old_client", "parent").await;
    let id = user["id"].as_i64().expect("id");
    let legacy = token_for(id, chrono::Utc::now().timestamp() + 3600, None);
    assert_eq!(app.get("/api/me", &legacy).await.0, StatusCode::OK);
    assert_eq!(logout(&app, &legacy).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/me", &legacy).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A token of ours carries a jti; one with an oversized jti is not ours.
    let fresh = app.login("old_client").await;
    assert_eq!(app.get("/api/me", &fresh).await.0, StatusCode::OK);
    let bloated = token_for(
        id,
        chrono::Utc::now().timestamp() + 3600,
        Some(&"j".repeat(500)),
    );
    assert_eq!(
        app.get("/api/me", &bloated).await.0,
        StatusCode::UNAUTHORIZED
    );
}

// ---- 5. slow clients ----

fn address(app: &TestApp) -> std::net::SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// Reads until the server closes the connection (or `within` passes); returns what came.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

#[actix_web::test]
async fn a_body_trickled_a_byte_a_second_is_answered_408_and_closed() {
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(address(&app))
        .await
        .expect("connect");
    slow.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .expect("head");
    let started = Instant::now();
    // One byte a second; the wait for an answer is the pause between bytes.
    let trickle = async {
        let mut answer = String::new();
        for byte in br#"{"login":"slow_one","password":"#.iter().cycle() {
            if started.elapsed() > Duration::from_secs(15)
                || slow.write_all(&[*byte]).await.is_err()
            {
                break;
            }
            let (seen, closed) = read_until_closed(&mut slow, Duration::from_secs(1)).await;
            answer.push_str(&seen);
            if closed {
                return (answer, true);
            }
        }
        (answer, false)
    };
    // Meanwhile the server answers others.
    let others = async {
        for _ in 0..5 {
            let (status, _) = app.request("GET", "/healthz", None, None).await;
            assert_eq!(status, StatusCode::OK);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let ((answer, closed), ()) = tokio::join!(trickle, others);
    assert!(closed, "the connection is closed: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[actix_web::test]
async fn headers_trickled_a_byte_a_second_get_408_and_a_closed_connection() {
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(address(&app))
        .await
        .expect("connect");
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ";
    slow.write_all(head).await.expect("head");
    let mut answered = String::new();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(15) && !closed {
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let (seen, ended) = read_until_closed(&mut slow, Duration::from_secs(1)).await;
        answered.push_str(&seen);
        closed = ended;
    }
    assert!(closed, "the connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        answered.is_empty() || answered.starts_with("HTTP/1.1 408"),
        "{answered}"
    );
}

// ---- 6. browser hardening ----

#[actix_web::test]
async fn every_response_is_hardened_and_html_has_a_strict_csp() {
    let app = spawn_app().await;
    let csp_of = |res: &awc::ClientResponse<_>| {
        res.headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    for path in ["/", "/index.html"] {
        let res = app.client.get(app.url(path)).send().await.expect("page");
        assert_eq!(res.status(), StatusCode::OK);
        let csp = csp_of(&res).expect("HTML has a CSP");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "img-src 'self' https: data:",
        ] {
            assert!(csp.contains(part), "{part} in {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    }
    for path in [
        "/",
        "/js/app.js",
        "/api/me",
        "/healthz",
        "/api/nope",
        "/metrics",
    ] {
        let res = app.client.get(app.url(path)).send().await.expect("answer");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        if path != "/" {
            assert!(csp_of(&res).is_none(), "no CSP on {path}");
        }
    }
}

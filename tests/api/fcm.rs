//! Native push through a fake FCM HTTP v1 (tests/support/fake_fcm.rs): the devices API, the
//! providers endpoint, the OAuth 2.0 JWT bearer grant, the message shape and texts, deleting
//! devices FCM calls gone, retries after `Retry-After`, a new access token after a 401, and web
//! push to the same member going on beside it.
use std::time::Duration;

use awc::http::StatusCode;
use serde_json::{Value, json};

use crate::fake_fcm::{Answer, EXPIRES_IN, FakeFcm, MAX_MESSAGE};
use crate::helpers::{Member, TestApp, TestFamily, error_code, spawn_app, spawn_app_with};
use crate::push_service::{PushService, SUBJECT, Subscriber, TestCa};

const WAIT: Duration = Duration::from_secs(5);
const GRANTED: &str = "포도알이 발급되었어요! 지금 확인해보세요.";

/// A server with FCM credentials for the fake FCM, trusting the test CA, private addresses
/// allowed (the fake runs on 127.0.0.1).
async fn fcm_app(fcm: &FakeFcm, ca: &TestCa) -> TestApp {
    let (credentials, endpoint, ca_file) = (
        fcm.credentials.clone(),
        fcm.base.clone(),
        ca.ca_file.clone(),
    );
    spawn_app_with(|c| {
        c.vapid_subject = SUBJECT.into();
        c.push_allow_private = true;
        c.push_ca_file = Some(ca_file);
        c.fcm_credentials = Some(credentials);
        c.fcm_endpoint = endpoint;
    })
    .await
}

async fn setup(prefix: &str) -> (TestApp, TestFamily, FakeFcm) {
    let ca = TestCa::new();
    let fcm = FakeFcm::start(ca.clone()).await;
    let app = fcm_app(&fcm, &ca).await;
    let fam = app.family(prefix).await;
    (app, fam, fcm)
}

async fn register(app: &TestApp, member: &Member, token: &str, platform: &str) -> Value {
    let (status, body) = app
        .post(
            "/api/push/devices",
            &member.token,
            json!({"provider": "fcm", "token": token, "platform": platform}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn devices(app: &TestApp, member: &Member) -> Vec<Value> {
    let (status, body) = app.get("/api/push/devices", &member.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["devices"].as_array().expect("devices").clone()
}

fn tails(devices: &[Value]) -> Vec<String> {
    devices
        .iter()
        .map(|d| d["token_tail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A token as FCM gives them (~160 characters of base64url and a colon), ending in `name`.
fn fcm_token(name: &str) -> String {
    format!("APA91b{}:{name}", "xY-_9".repeat(30))
}

async fn grant(app: &TestApp, fam: &TestFamily, count: i64) {
    let (status, body) = app
        .post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": count}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[actix_web::test]
async fn devices_are_validated_upserted_listed_and_deleted() {
    let (app, fam, _fcm) = setup("dev_api").await;
    let good = json!({"provider": "fcm", "token": "abc:DEF_1.2-3", "platform": "android"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("token", json!("")), vec!["token"]),
        (with("token", json!("a".repeat(4097))), vec!["token"]),
        (with("token", json!("has/slash")), vec!["token"]),
        (with("token", json!("space d")), vec!["token"]),
        (with("token", json!("토큰")), vec!["token"]),
        (with("provider", json!("apns")), vec!["provider"]),
        (with("platform", json!("web")), vec!["platform"]),
        (json!({}), vec!["platform", "provider", "token"]),
    ];
    for (body, fields) in cases {
        let (status, answer) = app
            .post("/api/push/devices", &fam.child.token, body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert_eq!(error_code(&answer), "validation_failed");
        let named: Vec<&str> = answer["fields"]
            .as_object()
            .expect("fields")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    let (status, _) = app
        .request("POST", "/api/push/devices", None, Some(good.clone()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(devices(&app, &fam.child).await.is_empty(), "nothing stored");

    // The longest token, and the answer's shape.
    let longest = format!("{}tail42", "k".repeat(4090));
    let created = register(&app, &fam.child, &longest, "ios").await;
    assert_eq!(created["provider"], "fcm");
    assert_eq!(created["platform"], "ios");
    assert!(created["id"].is_i64());
    assert!(
        created["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let listed = devices(&app, &fam.child).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["token_tail"], "tail42");
    assert!(
        !listed[0].to_string().contains(&longest),
        "the token is never echoed in full"
    );

    // An upsert by token: the same app again (now on Android) keeps its id.
    let phone = fcm_token("phone");
    let first = register(&app, &fam.child, &phone, "ios").await;
    let again = register(&app, &fam.child, &phone, "android").await;
    assert_eq!(first["id"], again["id"]);
    let listed = devices(&app, &fam.child).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], again["id"], "newest first");
    assert_eq!(listed[0]["platform"], "android");

    // The parent signs in on the same phone: the token moves to them.
    let moved = register(&app, &fam.parent, &phone, "android").await;
    assert_eq!(moved["id"], first["id"]);
    assert_eq!(tails(&devices(&app, &fam.child).await), ["tail42"]);
    assert_eq!(devices(&app, &fam.parent).await.len(), 1);

    // Another user's device answers 404, and stays.
    let path = format!("/api/push/devices/{}", moved["id"]);
    let (status, body) = app
        .request("DELETE", &path, Some(&fam.child.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");
    assert_eq!(devices(&app, &fam.parent).await.len(), 1);
    let (status, _) = app
        .request("DELETE", &path, Some(&fam.parent.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(devices(&app, &fam.parent).await.is_empty());
    let (status, _) = app
        .request("DELETE", &path, Some(&fam.parent.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone");
    let (status, _) = app
        .request(
            "DELETE",
            "/api/push/devices/x",
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn the_eleventh_device_replaces_the_oldest() {
    let (app, fam, fcm) = setup("dev_eleven").await;
    let tokens: Vec<String> = (0..12).map(|i| format!("device-{i:02}")).collect();
    for token in &tokens[..11] {
        register(&app, &fam.child, token, "android").await;
    }
    let tail = |i: usize| tokens[i][tokens[i].len() - 6..].to_owned();
    let mut expected: Vec<String> = (1..11).rev().map(tail).collect();
    assert_eq!(tails(&devices(&app, &fam.child).await), expected);
    // Registering again makes a device the newest: the next one replaces device-02, not -01.
    register(&app, &fam.child, &tokens[1], "android").await;
    register(&app, &fam.child, &tokens[11], "android").await;
    expected = [11, 1, 10, 9, 8, 7, 6, 5, 4, 3]
        .into_iter()
        .map(tail)
        .collect();
    assert_eq!(tails(&devices(&app, &fam.child).await), expected);

    app.open_board(&fam, 10).await;
    grant(&app, &fam, 1).await;
    for i in [1, 3, 4, 5, 6, 7, 8, 9, 10, 11] {
        assert_eq!(
            fcm.wait_for(&tokens[i], 1, WAIT).await.len(),
            1,
            "{}",
            tokens[i]
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fcm.sent_to(&tokens[0]).is_empty());
    assert!(fcm.sent_to(&tokens[2]).is_empty());
}

#[actix_web::test]
async fn providers_say_whether_fcm_is_on() {
    let plain = spawn_app().await;
    let (status, body) = plain
        .request("GET", "/api/push/providers", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"web_push": true, "fcm": false}));
    let (app, _, _fcm) = setup("providers").await;
    let (_, body) = app.request("GET", "/api/push/providers", None, None).await;
    assert_eq!(body, json!({"web_push": true, "fcm": true}));
}

#[actix_web::test]
async fn grants_chat_and_missions_reach_the_childs_token() {
    let (app, fam, fcm) = setup("fcm_texts").await;
    let phone = fcm_token("kid");
    register(&app, &fam.child, &phone, "android").await;
    let parent_phone = fcm_token("mom");
    register(&app, &fam.parent, &parent_phone, "ios").await;
    app.open_board(&fam, 10).await;
    grant(&app, &fam, 3).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    parent.send_message("c1", "숙제했니?").await;
    parent.expect("ack", WAIT).await;
    parent
        .send_message("c2", "/static/media/grape-happy.svg")
        .await;
    parent.expect("ack", WAIT).await;
    let (_, mission) = app
        .post(
            "/api/missions",
            &fam.parent.token,
            json!({"title": "양치하기", "reward": 2}),
        )
        .await;
    let path = |action: &str| format!("/api/missions/{}/{action}", mission["id"]);
    app.request("POST", &path("submit"), Some(&fam.child.token), None)
        .await;
    app.request("POST", &path("approve"), Some(&fam.parent.token), None)
        .await;

    let got = fcm.wait_for(&phone, 5, WAIT).await;
    let texts: Vec<_> = got.iter().map(|sent| sent.texts()).collect();
    let t =
        |kind: &str, title: &str, body: &str| (kind.to_owned(), title.to_owned(), body.to_owned());
    // One member's notifications leave in the order they were made.
    assert_eq!(
        texts,
        [
            t("grant", GRANTED, "포도알 3개"),
            t("chat", "새로운 메시지가 도착했습니다.", "숙제했니?"),
            t(
                "chat",
                "새로운 메시지가 도착했습니다.",
                "이모티콘을 보냈습니다."
            ),
            t("mission", "미션이 등록되었습니다!", "양치하기"),
            t("grant", GRANTED, "양치하기"),
        ]
    );
    // The fake checked the shape; these are the rest of the promise.
    let message = &got[1].message["message"];
    assert_eq!(message["token"], json!(phone));
    assert_eq!(message["data"], json!({"kind": "chat", "url": "/#/chat"}));
    assert_eq!(message["android"], json!({"priority": "HIGH"}));
    assert_eq!(message["apns"]["headers"], json!({"apns-priority": "10"}));
    let message = &got[0].message["message"];
    assert_eq!(
        message["android"],
        json!({"priority": "NORMAL", "collapse_key": "grant"})
    );
    assert_eq!(
        message["apns"],
        json!({"headers": {"apns-priority": "5", "apns-collapse-id": "grant"}, "payload": {"aps": {"sound": "default"}}})
    );
    assert!(
        got.iter().all(|sent| sent.http2),
        "HTTP/2 negotiated by ALPN"
    );

    let to_parent: Vec<_> = fcm
        .wait_for(&parent_phone, 2, WAIT)
        .await
        .iter()
        .map(|sent| sent.texts())
        .collect();
    assert_eq!(
        to_parent,
        [
            t("wish", "위시리스트가 등록되었습니다!", "gift"),
            t("mission", "자녀가 미션을 완료했어요!", "양치하기"),
        ]
    );
    // One access token served them all; the server signed its grant as Google wants. (The fake
    // records a message before the server has its answer: metrics are waited for.)
    assert_eq!(fcm.tokens_issued(), 1);
    assert!(
        fcm.refused_token_requests().is_empty(),
        "{:?}",
        fcm.refused_token_requests()
    );
    assert_eq!(app.wait_for_metric("podo_fcm_sent_total", 7.0).await, 7.0);
    assert_eq!(
        app.wait_for_metric("podo_fcm_token_fetches_total", 1.0)
            .await,
        1.0
    );
    assert_eq!(app.metric("podo_pushes_sent_total").await, 0.0);
}

#[actix_web::test]
async fn a_child_in_the_chat_room_gets_no_fcm_message() {
    let (app, fam, fcm) = setup("fcm_room").await;
    let phone = fcm_token("kid");
    register(&app, &fam.child, &phone, "android").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let (mut child, _) = app.ws(&fam.child.token).await;
    parent.expect("presence", WAIT).await;
    parent.send_message("r1", "보고 있구나").await;
    child.expect("message", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fcm.sent_to(&phone).is_empty(), "in the room: none");
    // The app goes to the background: it is not in the room any more.
    child
        .send_json(json!({"type": "visibility", "visible": false}))
        .await;
    parent.expect("presence", WAIT).await;
    parent.send_message("r2", "숨었네").await;
    let got = fcm.wait_for(&phone, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].texts().2, "숨었네");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fcm.sent_to(&phone).len(),
        1,
        "one message per absent message"
    );
}

#[actix_web::test]
async fn web_subscriptions_of_the_same_member_keep_getting_theirs() {
    let ca = TestCa::new();
    let service = PushService::start_with(ca.clone()).await;
    let fcm = FakeFcm::start(ca.clone()).await;
    let app = fcm_app(&fcm, &ca).await;
    let fam = app.family("fcm_web").await;
    let (_, key) = app.request("GET", "/api/push/public-key", None, None).await;
    let key = key["public_key"].as_str().unwrap().to_owned();
    service.require_vapid_key(&key);
    let laptop = Subscriber::new(&service.base, "kid-laptop");
    let (status, body) = app
        .post("/api/push/subscriptions", &fam.child.token, laptop.json())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let phone = fcm_token("kid");
    register(&app, &fam.child, &phone, "android").await;
    // A second phone that FCM no longer knows: it must not hold the others back.
    let old_phone = fcm_token("old");
    fcm.answer(&old_phone, [Answer::Unregistered]);
    register(&app, &fam.child, &old_phone, "ios").await;

    app.open_board(&fam, 10).await;
    grant(&app, &fam, 2).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    parent.send_message("w1", "저녁 먹자").await;
    parent.expect("ack", WAIT).await;

    let web: Vec<(String, String)> = service
        .wait_for("kid-laptop", 2, WAIT)
        .await
        .iter()
        .map(|request| {
            let n = laptop.open(request, &key, &service.base);
            (
                n["title"].as_str().unwrap().to_owned(),
                n["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let native: Vec<(String, String)> = fcm
        .wait_for(&phone, 2, WAIT)
        .await
        .iter()
        .map(|sent| {
            let (_, title, body) = sent.texts();
            (title, body)
        })
        .collect();
    let expected = vec![
        (GRANTED.to_owned(), "포도알 2개".to_owned()),
        (
            "새로운 메시지가 도착했습니다.".to_owned(),
            "저녁 먹자".to_owned(),
        ),
    ];
    assert_eq!(web, expected, "the browser got the same texts");
    assert_eq!(native, expected, "the phone got the same texts");
    assert_eq!(fcm.sent_to(&old_phone).len(), 1, "tried once, then deleted");
    assert_eq!(
        app.wait_for_metric("podo_pushes_sent_total", 2.0).await,
        2.0
    );
    assert_eq!(app.wait_for_metric("podo_fcm_sent_total", 2.0).await, 2.0);
}

#[actix_web::test]
async fn an_unregistered_token_is_deleted_after_its_first_failure() {
    let (app, fam, fcm) = setup("fcm_gone").await;
    let gone = fcm_token("gone");
    let mismatch = fcm_token("mismatch");
    let live = fcm_token("live");
    fcm.answer(&gone, [Answer::Unregistered]);
    fcm.answer(&mismatch, [Answer::SenderIdMismatch]);
    for token in [&gone, &mismatch, &live] {
        register(&app, &fam.child, token, "android").await;
    }
    app.open_board(&fam, 10).await;
    grant(&app, &fam, 1).await;
    assert_eq!(fcm.wait_for(&live, 1, WAIT).await.len(), 1);
    let deleted = app
        .wait_for_metric("podo_fcm_devices_deleted_total", 2.0)
        .await;
    assert_eq!(deleted, 2.0);
    let statuses =
        |token: &str| -> Vec<u16> { fcm.sent_to(token).iter().map(|s| s.status).collect() };
    assert_eq!(statuses(&gone), [404]);
    assert_eq!(statuses(&mismatch), [403]);
    let live_tail = &live[live.len() - 6..];
    assert_eq!(tails(&devices(&app, &fam.child).await), [live_tail]);
    grant(&app, &fam, 1).await;
    assert_eq!(fcm.wait_for(&live, 2, WAIT).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(statuses(&gone), [404], "never tried again");
    assert_eq!(statuses(&mismatch), [403]);
    assert_eq!(app.metric("podo_fcm_failed_total").await, 0.0);
}

#[actix_web::test]
async fn a_429_is_tried_again_after_its_retry_after_and_503s_at_most_three_times() {
    let (app, fam, fcm) = setup("fcm_retry").await;
    let busy = fcm_token("busy");
    let down = fcm_token("down");
    // Retry-After: 2 s, where the default first delay is 1 s.
    fcm.answer(&busy, [Answer::TooMany { retry_after: 2 }]);
    fcm.answer(
        &down,
        (0..3).map(|_| Answer::Unavailable { retry_after: None }),
    );
    register(&app, &fam.child, &busy, "android").await;
    register(&app, &fam.child, &down, "ios").await;
    app.open_board(&fam, 10).await;
    grant(&app, &fam, 1).await;
    let got = fcm.wait_for(&busy, 2, WAIT).await;
    assert_eq!(got.iter().map(|s| s.status).collect::<Vec<_>>(), [429, 200]);
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "tried again after {waited:?}"
    );
    assert_eq!(got[1].texts().2, "포도알 1개");
    // 503 without Retry-After: 1 s, then 3 s, then given up.
    let failed = app.wait_for_metric("podo_fcm_failed_total", 1.0).await;
    assert_eq!(failed, 1.0);
    let got = fcm.sent_to(&down);
    assert_eq!(
        got.iter().map(|s| s.status).collect::<Vec<_>>(),
        [503, 503, 503]
    );
    let gaps: Vec<Duration> = got
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(
        gaps[0] >= Duration::from_millis(900) && gaps[1] >= Duration::from_millis(2900),
        "{gaps:?}"
    );
    assert_eq!(devices(&app, &fam.child).await.len(), 2, "both kept");
    assert_eq!(app.wait_for_metric("podo_fcm_sent_total", 1.0).await, 1.0);
}

#[actix_web::test]
async fn a_401_makes_the_server_fetch_a_new_access_token_once() {
    let (app, fam, fcm) = setup("fcm_401").await;
    let phone = fcm_token("kid");
    register(&app, &fam.child, &phone, "android").await;
    app.open_board(&fam, 10).await;
    grant(&app, &fam, 1).await;
    assert_eq!(fcm.wait_for(&phone, 1, WAIT).await.len(), 1);
    grant(&app, &fam, 1).await;
    assert_eq!(fcm.wait_for(&phone, 2, WAIT).await.len(), 2);
    assert_eq!(fcm.tokens_issued(), 1, "cached (expires_in {EXPIRES_IN} s)");
    // The access token expires early (revoked, or the clocks disagree): FCM answers 401.
    fcm.expire_tokens();
    grant(&app, &fam, 1).await;
    let got = fcm.wait_for(&phone, 4, WAIT).await;
    assert_eq!(
        got.iter().map(|s| s.status).collect::<Vec<_>>(),
        [200, 200, 401, 200]
    );
    assert!(
        got[3].at.duration_since(got[2].at) < Duration::from_millis(900),
        "sent again at once with the new token, not after a retry delay"
    );
    assert_eq!(fcm.tokens_issued(), 2, "fetched exactly once more");
    assert_eq!(app.metric("podo_fcm_token_fetches_total").await, 2.0);
    grant(&app, &fam, 1).await;
    assert_eq!(fcm.wait_for(&phone, 5, WAIT).await.len(), 5);
    assert_eq!(fcm.tokens_issued(), 2, "the new token is cached");
    assert!(fcm.refused_token_requests().is_empty());
}

#[actix_web::test]
async fn a_long_message_is_cut_to_fit_4096_bytes() {
    let (app, fam, fcm) = setup("fcm_long").await;
    let phone = fcm_token("kid");
    register(&app, &fam.child, &phone, "android").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let text = "포도".repeat(1000); // 2,000 characters, 6,000 bytes of UTF-8
    parent.send_message("long", &text).await;
    parent.expect("ack", WAIT).await;
    let got = fcm.wait_for(&phone, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].bytes <= MAX_MESSAGE, "{} bytes", got[0].bytes);
    let (_, _, body) = got[0].texts();
    let kept = body.strip_suffix('…').expect("ends with …");
    assert!(text.starts_with(kept), "cut at a character boundary");
    assert!(
        kept.chars().count() > 900,
        "{} characters",
        kept.chars().count()
    );
}

#[actix_web::test]
async fn bad_credentials_stop_the_start_with_a_clear_error() {
    let ca = TestCa::new();
    let fcm = FakeFcm::start(ca.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = crate::fake_fcm::key_json(&fcm.token_uri);
    let without = |field: &str| {
        let mut key = good.clone();
        key.as_object_mut().unwrap().remove(field);
        key.to_string()
    };
    let mut bad_pem = good.clone();
    bad_pem["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not JSON"),
        (without("private_key"), "`private_key` is missing"),
        (without("client_email"), "`client_email` is missing"),
        (without("token_uri"), "`token_uri` is missing"),
        (without("project_id"), "`project_id` is missing"),
        (without("private_key_id"), "`private_key_id` is missing"),
        (bad_pem.to_string(), "not an RSA private key"),
    ];
    for (i, (content, expected)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("key{i}.json"));
        std::fs::write(&file, content).unwrap();
        let err = start_error(|c| {
            c.push_allow_private = true;
            c.fcm_credentials = Some(file.clone());
        })
        .await;
        assert!(
            err.contains("PODO_FCM_CREDENTIALS") && err.contains(expected),
            "{expected}: {err}"
        );
        assert!(
            !err.contains("BEGIN PRIVATE KEY"),
            "no key in the error: {err}"
        );
    }
    let missing = dir.path().join("missing.json");
    let err = start_error(|c| c.fcm_credentials = Some(missing.clone())).await;
    assert!(err.contains("cannot read it"), "{err}");
    // Without PODO_PUSH_ALLOW_PRIVATE, a token_uri or FCM endpoint on 127.0.0.1 is refused.
    let err = start_error(|c| c.fcm_credentials = Some(fcm.credentials.clone())).await;
    assert!(err.contains("`token_uri`"), "{err}");
    let public = dir.path().join("public.json");
    std::fs::write(
        &public,
        crate::fake_fcm::key_json("https://oauth2.googleapis.com/token").to_string(),
    )
    .unwrap();
    let err = start_error(|c| {
        c.fcm_credentials = Some(public.clone());
        c.fcm_endpoint = "http://127.0.0.1:9".into();
    })
    .await;
    assert!(err.contains("PODO_FCM_ENDPOINT"), "{err}");
}

/// What `Application::build` fails with.
async fn start_error(adjust: impl FnOnce(&mut podo::Config)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = podo::Config::for_tests(format!("sqlite://{}/podo.db", dir.path().display()));
    adjust(&mut config);
    match podo::Application::build(config).await {
        Ok(_) => panic!("the server started"),
        Err(err) => err.to_string(),
    }
}

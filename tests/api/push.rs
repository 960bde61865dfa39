//! Web push through a test push service that checks what the real ones check (see
//! tests/support/push_service.rs): HTTPS with a CA made by the test, trusted by the server only
//! because `push_ca_file` (`SSL_CERT_FILE`) names it; VAPID; bodies decrypted with the
//! subscriber's key.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::helpers::{Member, TestApp, error_code, spawn_app_with};
use crate::push_service::{Behaviour, BlackHole, PushService, SUBJECT, Subscriber};

const WAIT: Duration = Duration::from_secs(5);

/// The server's side of a subscription: what the web client does with `PushSubscription`.
trait Subscribe {
    async fn subscribe(&self, app: &TestApp, member: &Member);
    async fn unsubscribe(&self, app: &TestApp, member: &Member);
}

impl Subscribe for Subscriber {
    async fn subscribe(&self, app: &TestApp, member: &Member) {
        let (status, body) = app
            .post("/api/push/subscriptions", &member.token, self.json())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn unsubscribe(&self, app: &TestApp, member: &Member) {
        let (status, body) = app
            .request(
                "DELETE",
                "/api/push/subscriptions",
                Some(&member.token),
                Some(json!({"endpoint": self.endpoint})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
}

async fn subscriptions_of(app: &TestApp, user_id: i64) -> Vec<String> {
    use podo::store::entities::push_subscription;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    push_subscription::Entity::find()
        .filter(push_subscription::Column::UserId.eq(user_id))
        .order_by_asc(push_subscription::Column::Id)
        .all(&db.read)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.endpoint)
        .collect()
}

/// A server that may use private push endpoints and trusts the test push service's CA.
async fn push_app(service: &PushService) -> TestApp {
    let ca_file = service.ca_file.clone();
    spawn_app_with(|c| {
        c.vapid_subject = SUBJECT.into();
        c.push_allow_private = true;
        c.push_ca_file = Some(ca_file);
    })
    .await
}

async fn setup(
    prefix: &str,
) -> (
    TestApp,
    crate::helpers::TestFamily,
    PushService,
    String,
    String,
) {
    let service = PushService::start().await;
    let app = push_app(&service).await;
    let fam = app.family(prefix).await;
    let (_, key) = app.request("GET", "/api/push/public-key", None, None).await;
    let public_key = key["public_key"].as_str().unwrap().to_owned();
    assert_eq!(URL_SAFE_NO_PAD.decode(&public_key).unwrap().len(), 65);
    service.require_vapid_key(&public_key);
    let base = service.base.clone();
    (app, fam, service, base, public_key)
}

#[actix_web::test]
async fn an_absent_partner_gets_one_push_per_message_and_a_present_one_none() {
    let (app, fam, service, base, key) = setup("push_chat").await;
    let child_phone = Subscriber::new(&base, "child-phone");
    child_phone.subscribe(&app, &fam.child).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;

    parent.send_message("m1", "숙제했니?").await;
    parent.expect("ack", WAIT).await;
    parent
        .send_message("m2", "/static/media/grape-happy.svg")
        .await;
    parent.expect("ack", WAIT).await;
    let got = service.wait_for("child-phone", 2, WAIT).await;
    assert_eq!(got.len(), 2);
    let first = child_phone.open(&got[0], &key, &base);
    assert_eq!(
        first,
        json!({"title": "새로운 메시지가 도착했습니다.", "body": "숙제했니?", "kind": "chat", "url": "/#/chat"})
    );
    assert_eq!(
        child_phone.open(&got[1], &key, &base)["body"],
        "이모티콘을 보냈습니다."
    );

    // In the room: no push. The sender never gets one for their own message.
    let (mut child, _) = app.ws(&fam.child.token).await;
    parent.expect("presence", WAIT).await;
    parent.send_message("m3", "보고 있구나").await;
    child.expect("message", WAIT).await;
    // A hidden tab is not in the room.
    child
        .send_json(json!({"type": "visibility", "visible": false}))
        .await;
    parent.expect("presence", WAIT).await;
    parent.send_message("m4", "숨었네").await;
    let got = service.wait_for("child-phone", 3, WAIT).await;
    assert_eq!(got.len(), 3);
    assert_eq!(child_phone.open(&got[2], &key, &base)["body"], "숨었네");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.received("child-phone").len(),
        3,
        "exactly one push per absent message"
    );
}

#[actix_web::test]
async fn a_members_pushes_arrive_in_the_order_of_the_messages() {
    let (app, fam, service, base, key) = setup("push_order").await;
    let phone = Subscriber::new(&base, "order-phone");
    phone.subscribe(&app, &fam.child).await;
    let laptop = Subscriber::new(&base, "order-laptop");
    laptop.subscribe(&app, &fam.child).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let texts: Vec<String> = (1..=12).map(|i| format!("메시지 {i}")).collect();
    // Sent back to back: several land in one commit and their pushes are made together.
    for (i, text) in texts.iter().enumerate() {
        parent.send_message(&format!("o{i}"), text).await;
    }
    for (id, device) in [("order-phone", &phone), ("order-laptop", &laptop)] {
        let got = service.wait_for(id, texts.len(), WAIT).await;
        let bodies: Vec<String> = got
            .iter()
            .map(|request| device.open(request, &key, &base)["body"].to_string())
            .collect();
        let expected: Vec<String> = texts.iter().map(|t| json!(t).to_string()).collect();
        assert_eq!(bodies, expected, "{id} got every message once, in order");
    }
}

#[actix_web::test]
async fn wishes_and_grants_push_the_other_member() {
    let (app, fam, service, base, key) = setup("push_board").await;
    let parent_phone = Subscriber::new(&base, "parent-phone");
    parent_phone.subscribe(&app, &fam.parent).await;
    let child_laptop = Subscriber::new(&base, "child-laptop");
    child_laptop.subscribe(&app, &fam.child).await;
    app.open_board(&fam, 10).await;
    let got = service.wait_for("parent-phone", 1, WAIT).await;
    assert_eq!(
        parent_phone.open(&got[0], &key, &base),
        json!({"title": "위시리스트가 등록되었습니다!", "body": "gift", "kind": "wish", "url": "/#/wishes"})
    );
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 3}))
        .await;
    let got = service.wait_for("child-laptop", 1, WAIT).await;
    assert_eq!(
        child_laptop.open(&got[0], &key, &base),
        json!({"title": "포도알이 발급되었어요! 지금 확인해보세요.", "body": "포도알 3개", "kind": "grant", "url": "/#/board"})
    );
}

#[actix_web::test]
async fn gone_subscriptions_are_deleted_and_failures_are_retried() {
    let (app, fam, service, base, _) = setup("push_fail").await;
    service.behave(
        "gone-404",
        Behaviour {
            statuses: [404].into(),
            hang: false,
        },
    );
    service.behave(
        "gone-410",
        Behaviour {
            statuses: [410].into(),
            hang: false,
        },
    );
    service.behave(
        "flaky",
        Behaviour {
            statuses: [500].into(),
            hang: false,
        },
    );
    for id in ["gone-404", "gone-410", "flaky"] {
        Subscriber::new(&base, id).subscribe(&app, &fam.child).await;
    }
    app.open_board(&fam, 10).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    // The 500 is tried again about a second later and then delivered.
    assert_eq!(service.wait_for("flaky", 2, WAIT).await.len(), 2);
    assert_eq!(service.received("gone-404").len(), 1);
    assert_eq!(service.received("gone-410").len(), 1);
    // The gone subscriptions were deleted: the next grant reaches only the live one.
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    assert_eq!(service.wait_for("flaky", 3, WAIT).await.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.received("gone-404").len(), 1);
    assert_eq!(service.received("gone-410").len(), 1);
}

#[actix_web::test]
async fn a_hanging_push_service_does_not_delay_chat() {
    let (app, fam, service, base, _) = setup("push_hang").await;
    service.behave(
        "stuck",
        Behaviour {
            statuses: VecDeque::new(),
            hang: true,
        },
    );
    Subscriber::new(&base, "stuck")
        .subscribe(&app, &fam.child)
        .await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    for i in 0..5 {
        parent
            .send_message(&format!("h{i}"), "are you there?")
            .await;
    }
    let mut acks = 0;
    while acks < 5 {
        let frame = parent
            .next_frame(WAIT)
            .await
            .unwrap()
            .expect("acks arrive while the push service hangs");
        if frame["type"] == "ack" {
            acks += 1;
        }
    }
    // The acks may come first on a loaded machine: wait for the push to reach the service.
    assert!(
        !service.wait_for("stuck", 1, WAIT).await.is_empty(),
        "the push went out and is still hanging"
    );
}

#[actix_web::test]
async fn subscriptions_are_validated_and_upserted_by_endpoint() {
    let (app, fam, _, base, key) = setup("push_subs").await;
    let good = Subscriber::new(&base, "dev1");
    let cases = [
        json!({"endpoint": "not a url", "keys": good.json()["keys"]}),
        json!({"endpoint": good.endpoint, "keys": {"p256dh": "AAAA", "auth": good.json()["keys"]["auth"]}}),
        json!({"endpoint": good.endpoint, "keys": {"p256dh": good.p256dh, "auth": URL_SAFE_NO_PAD.encode([1u8; 15])}}),
        json!({"endpoint": good.endpoint}),
    ];
    for body in cases {
        let (status, answer) = app
            .post("/api/push/subscriptions", &fam.child.token, body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
    }
    good.subscribe(&app, &fam.child).await;
    good.subscribe(&app, &fam.child).await;
    // The same browser signed in as the parent takes the endpoint over.
    good.subscribe(&app, &fam.parent).await;
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    let rows = podo::store::entities::push_subscription::Entity::find()
        .all(&db.read)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_id, fam.parent.id);
    good.unsubscribe(&app, &fam.parent).await;
    assert_eq!(
        podo::store::entities::push_subscription::Entity::find()
            .count(&db.read)
            .await
            .unwrap(),
        0
    );
    let (_, again) = app.request("GET", "/api/push/public-key", None, None).await;
    assert_eq!(again["public_key"], key);
}

#[actix_web::test]
async fn pushes_follow_subscribe_takeover_and_unsubscribe_at_once() {
    let (app, fam, service, base, key) = setup("push_follow").await;
    let grant = || app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}));
    // Both members are notified while they have no subscription (the server may remember that).
    // Wait until both notifications were handled: one still being looked up would find the
    // subscription made next, and rightly be delivered to it.
    app.open_board(&fam, 10).await;
    grant().await;
    let handled = app
        .wait_for_metric("podo_push_notifications_total", 2.0)
        .await;
    assert_eq!(handled, 2.0, "the wish and the grant were notified");
    let device = Subscriber::new(&base, "shared-tablet");
    device.subscribe(&app, &fam.child).await;
    grant().await;
    let got = service.wait_for("shared-tablet", 1, WAIT).await;
    assert_eq!(got.len(), 1, "a new subscription gets the next push");
    assert_eq!(device.open(&got[0], &key, &base)["body"], "포도알 1개");

    // The parent signs in on the same browser: the endpoint is theirs now.
    device.subscribe(&app, &fam.parent).await;
    grant().await;
    app.wish(&fam.child, "bike").await;
    let got = service.wait_for("shared-tablet", 2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(device.open(&got[1], &key, &base)["body"], "bike");

    device.unsubscribe(&app, &fam.parent).await;
    app.wish(&fam.child, "kite").await;
    grant().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<Value> = service
        .received("shared-tablet")
        .iter()
        .map(|request| device.open(request, &key, &base)["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("포도알 1개"), json!("bike")]);
}

#[actix_web::test]
async fn the_vapid_key_is_the_same_after_a_restart() {
    let (mut app, _, _service, _, key) = setup("push_keys").await;
    app.restart().await;
    let (_, again) = app.request("GET", "/api/push/public-key", None, None).await;
    assert_eq!(again["public_key"], key);
}

#[actix_web::test]
async fn every_mission_step_pushes_the_other_member() {
    let (app, fam, service, base, key) = setup("push_mission").await;
    let parent_phone = Subscriber::new(&base, "m-parent");
    parent_phone.subscribe(&app, &fam.parent).await;
    let child_phone = Subscriber::new(&base, "m-child");
    child_phone.subscribe(&app, &fam.child).await;
    let wish = app.wish(&fam.child, "gift").await;
    app.post("/api/board", &fam.parent.token, json!({"wish_id": wish}))
        .await;
    service.wait_for("m-parent", 1, WAIT).await;

    let (_, mission) = app
        .post(
            "/api/missions",
            &fam.parent.token,
            json!({"title": "양치하기", "reward": 2}),
        )
        .await;
    let path = |action: &str| format!("/api/missions/{}/{action}", mission["id"]);
    let submit = path("submit");
    app.request("POST", &submit, Some(&fam.child.token), None)
        .await;
    app.post(
        &path("reject"),
        &fam.parent.token,
        json!({"reason": "두 번 해야 해요"}),
    )
    .await;
    app.request("POST", &submit, Some(&fam.child.token), None)
        .await;
    app.post(&path("reject"), &fam.parent.token, json!({}))
        .await;
    app.request("POST", &submit, Some(&fam.child.token), None)
        .await;
    app.request("POST", &path("approve"), Some(&fam.parent.token), None)
        .await;

    let to_child: Vec<Value> = service
        .wait_for("m-child", 4, WAIT)
        .await
        .iter()
        .map(|r| child_phone.open(r, &key, &base))
        .collect();
    let to_parent: Vec<Value> = service
        .wait_for("m-parent", 4, WAIT)
        .await
        .iter()
        .skip(1)
        .map(|r| parent_phone.open(r, &key, &base))
        .collect();
    // Deliveries run concurrently, so compare without order.
    let texts = |pushes: &[Value]| -> Vec<(String, String)> {
        let mut texts: Vec<_> = pushes
            .iter()
            .map(|p| {
                (
                    p["title"].as_str().unwrap().to_owned(),
                    p["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        texts.sort();
        texts
    };
    let pair = |t: &str, b: &str| (t.to_owned(), b.to_owned());
    let mut expected = vec![
        pair("미션이 등록되었습니다!", "양치하기"),
        pair("포도알 발급이 거절됐어요😥", "두 번 해야 해요"),
        pair("포도알 발급이 거절됐어요😥", "양치하기"),
        pair("포도알이 발급되었어요! 지금 확인해보세요.", "양치하기"),
    ];
    expected.sort();
    assert_eq!(texts(&to_child), expected);
    assert_eq!(
        texts(&to_parent),
        vec![pair("자녀가 미션을 완료했어요!", "양치하기"); 3]
    );
    let kind_of = |title: &str| {
        to_child
            .iter()
            .find(|p| p["title"] == title)
            .map(|p| p["kind"].clone())
    };
    assert_eq!(kind_of("미션이 등록되었습니다!"), Some(json!("mission")));
    assert_eq!(
        kind_of("포도알이 발급되었어요! 지금 확인해보세요."),
        Some(json!("grant"))
    );
}

#[actix_web::test]
async fn pushes_go_over_https_and_http2_with_urgency_and_topic() {
    let (app, fam, service, base, key) = setup("push_tls").await;
    let child_phone = Subscriber::new(&base, "tls-child");
    child_phone.subscribe(&app, &fam.child).await;
    app.open_board(&fam, 10).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 2}))
        .await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    parent.send_message("t1", "안녕").await;
    let got = service.wait_for("tls-child", 2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.http2), "HTTP/2 negotiated by ALPN");
    // `open` checks Urgency (high for chat) and Topic (grants and wishes only).
    let kinds: Vec<Value> = got
        .iter()
        .map(|r| child_phone.open(r, &key, &base)["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("grant"), json!("chat")]);
}

#[actix_web::test]
async fn a_server_that_does_not_trust_the_ca_delivers_nothing() {
    let service = PushService::start().await;
    // Private endpoints allowed, but the test CA is not trusted: the TLS handshake must fail.
    let app = spawn_app_with(|c| c.push_allow_private = true).await;
    let fam = app.family("push_untrusted").await;
    Subscriber::new(&service.base, "untrusted")
        .subscribe(&app, &fam.child)
        .await;
    app.open_board(&fam, 10).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    // Three tries, about 1 s and 3 s apart, then given up.
    let failed = app.wait_for_metric("podo_pushes_failed_total", 1.0).await;
    assert_eq!(failed, 1.0);
    assert_eq!(service.received_total(), 0, "no request got through");
    assert_eq!(app.metric("podo_pushes_sent_total").await, 0.0);
}

/// Endpoints a user may register by default, and the ones refused (docs/API.md "Web push").
const REFUSED: [&str; 24] = [
    "http://127.0.0.1:9/x",
    "http://fcm.googleapis.com/fcm/send/x",
    "https://127.0.0.1/x",
    "https://10.1.2.3/x",
    "https://172.16.0.1/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest",
    "https://100.64.0.1/x",
    "https://0.0.0.0/x",
    "https://224.0.0.1/x",
    "https://192.0.2.1/x",
    "https://198.51.100.1/x",
    "https://2130706433/x",
    "https://[::1]/x",
    "https://[::]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:a9fe:a9fe]/latest",
    "https://[fe80::1]/x",
    "https://[fd00::1]/x",
    "https://[ff02::1]/x",
    "https://[2001:db8::1]/x",
    "https://localhost:8443/x",
    "https://push.internal/x",
    "https://user:secret@fcm.googleapis.com/x",
];
const ALLOWED: [&str; 5] = [
    "https://fcm.googleapis.com/fcm/send/abc",
    "https://updates.push.services.mozilla.com/wpush/v2/abc",
    "https://web.push.apple.com/QGx",
    "https://8.8.8.8/x",
    "https://[2a00:1450:4001::1]:8443/x",
];

async fn subscribe_status(app: &TestApp, member: &Member, endpoint: &str) -> (StatusCode, Value) {
    let mut body = Subscriber::new("https://unused", "x").json();
    body["endpoint"] = json!(endpoint);
    app.post("/api/push/subscriptions", &member.token, body)
        .await
}

#[actix_web::test]
async fn the_endpoint_policy_refuses_plain_and_private_endpoints() {
    let strict = spawn_app_with(|_| {}).await;
    let member = strict.member("policy_kid", "child").await;
    for endpoint in REFUSED {
        let (status, body) = subscribe_status(&strict, &member, endpoint).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{endpoint}: {body}"
        );
        assert_eq!(error_code(&body), "validation_failed");
        assert!(body["fields"]["endpoint"].is_string(), "{endpoint}: {body}");
    }
    for endpoint in ALLOWED {
        let (status, body) = subscribe_status(&strict, &member, endpoint).await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}: {body}");
    }

    // PODO_PUSH_ALLOW_PRIVATE lifts both rules; a URL must still be an http(s) URL.
    let lan = spawn_app_with(|c| c.push_allow_private = true).await;
    let member = lan.member("policy_lan", "child").await;
    for endpoint in REFUSED.iter().filter(|e| !e.contains('@')).chain(&ALLOWED) {
        let (status, body) = subscribe_status(&lan, &member, endpoint).await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}: {body}");
    }
    for endpoint in ["ftp://127.0.0.1/x", "https://", "localhost/x"] {
        let (status, body) = subscribe_status(&lan, &member, endpoint).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{endpoint}: {body}"
        );
    }
}

#[actix_web::test]
async fn a_stored_private_endpoint_is_never_contacted_and_is_kept() {
    use podo::store::entities::push_subscription;
    use sea_orm::{ActiveModelTrait, Set};
    let service = PushService::start().await;
    let ca_file = service.ca_file.clone();
    // The policy is on, and the server would trust the service: only the policy can stop it.
    let app = spawn_app_with(|c| {
        c.vapid_subject = SUBJECT.into();
        c.push_ca_file = Some(ca_file);
    })
    .await;
    let fam = app.family("push_blocked").await;
    // Stored before the policy existed (or by a name that now resolves to 127.0.0.1).
    let legacy = Subscriber::new(&service.base, "legacy");
    let keys = legacy.json()["keys"].clone();
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    push_subscription::ActiveModel {
        user_id: Set(fam.child.id),
        endpoint: Set(legacy.endpoint.clone()),
        p256dh: Set(keys["p256dh"].as_str().unwrap().to_owned()),
        auth: Set(keys["auth"].as_str().unwrap().to_owned()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&db.write)
    .await
    .unwrap();
    app.open_board(&fam, 10).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    let blocked = app.wait_for_metric("podo_pushes_blocked_total", 1.0).await;
    assert_eq!(blocked, 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.received_total(), 0, "never contacted");
    assert_eq!(app.metric("podo_pushes_failed_total").await, 0.0);
    assert_eq!(
        subscriptions_of(&app, fam.child.id).await,
        [legacy.endpoint],
        "the subscription is kept"
    );
}

#[actix_web::test]
async fn a_long_korean_message_is_cut_to_fit_one_record() {
    let (app, fam, service, base, key) = setup("push_long").await;
    let phone = Subscriber::new(&base, "long-phone");
    phone.subscribe(&app, &fam.child).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let text = "포도".repeat(1000); // 2,000 characters, 6,000 bytes of UTF-8
    parent.send_message("long", &text).await;
    parent.expect("ack", WAIT).await;
    let got = service.wait_for("long-phone", 1, WAIT).await;
    assert_eq!(got.len(), 1, "it arrives");
    assert!(
        got[0].body.len() <= 4096,
        "record of {} bytes",
        got[0].body.len()
    );
    let notification = phone.open(&got[0], &key, &base);
    let body = notification["body"].as_str().unwrap();
    let kept = body.strip_suffix('…').expect("ends with …");
    assert!(text.starts_with(kept), "cut at a character boundary");
    assert!(
        kept.chars().count() > 900,
        "as much as fits: {} characters",
        kept.chars().count()
    );
    // The message itself is stored whole.
    let (_, history) = app.get("/api/chat/messages", &fam.child.token).await;
    assert_eq!(history["messages"][0]["text"], json!(text));
}

#[actix_web::test]
async fn dead_endpoints_of_some_users_do_not_delay_another_familys_push() {
    let (app, fam, service, base, key) = setup("push_fair").await;
    let hole = BlackHole::start();
    let mut stuck = Vec::new();
    // 4 families, both members with 10 endpoints that accept and never answer: 80 deliveries,
    // more than the 64 shared slots.
    for i in 0..4 {
        let family = app.family(&format!("fair{i}")).await;
        for member in [&family.parent, &family.child] {
            for d in 0..10 {
                Subscriber::new(&hole.base, &format!("{}-{d}", member.login))
                    .subscribe(&app, member)
                    .await;
            }
        }
        stuck.push(family);
    }
    let phone = Subscriber::new(&base, "fair-phone");
    phone.subscribe(&app, &fam.child).await;
    for family in &stuck {
        app.open_board(family, 10).await; // the wish pushes the parent
        app.post(
            "/api/board/grant",
            &family.parent.token,
            json!({"count": 1}),
        )
        .await; // the grant pushes the child
    }
    // Wait until the dead endpoints hold connections: 8 users × 4 with the per-user limit
    // (all 64 shared slots without it). Each is held for the 5 s handshake timeout.
    let deadline = Instant::now() + WAIT;
    while hole.connections() < 32 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hole.connections() >= 32, "{} stuck", hole.connections());

    let (mut parent, _) = app.ws(&fam.parent.token).await;
    parent.send_message("fair", "저녁 먹자").await;
    parent.expect("ack", WAIT).await;
    let acked = Instant::now();
    let got = service.wait_for("fair-phone", 1, WAIT).await;
    assert_eq!(got.len(), 1, "the push arrives");
    let took = got[0].at.duration_since(acked);
    assert!(
        took < Duration::from_secs(2),
        "another family's push waited {took:?} behind dead endpoints"
    );
    assert_eq!(phone.open(&got[0], &key, &base)["body"], "저녁 먹자");
}

#[actix_web::test]
async fn the_eleventh_subscription_replaces_the_oldest() {
    let (app, fam, service, base, _) = setup("push_eleven").await;
    let devices: Vec<Subscriber> = (0..12)
        .map(|i| Subscriber::new(&base, &format!("dev{i}")))
        .collect();
    for device in &devices[..11] {
        device.subscribe(&app, &fam.child).await;
    }
    let endpoints = |range: std::ops::Range<usize>| -> Vec<String> {
        devices[range].iter().map(|d| d.endpoint.clone()).collect()
    };
    assert_eq!(subscriptions_of(&app, fam.child.id).await, endpoints(1..11));
    // Subscribing again makes a subscription the newest: the next one replaces dev2, not dev1.
    devices[1].subscribe(&app, &fam.child).await;
    devices[11].subscribe(&app, &fam.child).await;
    let mut expected = endpoints(1..2);
    expected.extend(endpoints(3..12));
    assert_eq!(subscriptions_of(&app, fam.child.id).await, expected);

    app.open_board(&fam, 10).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    for i in (1..2).chain(3..12) {
        assert_eq!(
            service.wait_for(&format!("dev{i}"), 1, WAIT).await.len(),
            1,
            "dev{i}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(service.received("dev0").is_empty());
    assert!(service.received("dev2").is_empty());
}

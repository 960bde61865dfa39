//! Web push through a real test push service: it checks each request's VAPID JWT against the
//! server's public key and decrypts the body with the subscriber's private key (RFC 8291).
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use awc::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::{Member, TestApp, spawn_app_with};

const SUBJECT: &str = "mailto:ops@podo.example";
const WAIT: Duration = Duration::from_secs(5);

/// What the push service does for one endpoint: answer these statuses in turn (then 201), or hang.
#[derive(Clone, Default)]
struct Behaviour {
    statuses: VecDeque<u16>,
    hang: bool,
}

#[derive(Clone, Debug)]
struct Received {
    endpoint: String,
    authorization: String,
    ttl: Option<String>,
    encoding: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct PushService {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    service: web::Data<PushService>,
) -> HttpResponse {
    let endpoint = req.match_info().get("id").unwrap_or_default().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    service.received.lock().unwrap().push(Received {
        endpoint: endpoint.clone(),
        authorization: header("authorization").unwrap_or_default(),
        ttl: header("ttl"),
        encoding: header("content-encoding"),
        body: body.to_vec(),
    });
    let (status, hang) = {
        let mut behaviours = service.behaviours.lock().unwrap();
        let behaviour = behaviours.entry(endpoint).or_default();
        (
            behaviour.statuses.pop_front().unwrap_or(201),
            behaviour.hang,
        )
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    HttpResponse::build(StatusCode::from_u16(status).unwrap()).finish()
}

impl PushService {
    async fn start() -> (PushService, String) {
        let service = PushService::default();
        let data = web::Data::new(service.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/push/{id}", web::post().to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        (service, base)
    }

    fn behave(&self, id: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap()
            .insert(id.to_owned(), behaviour);
    }

    fn received(&self, id: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.endpoint == id)
            .cloned()
            .collect()
    }

    /// Waits until `id` has received `n` requests (or `wait` passes); returns what it received.
    async fn wait_for(&self, id: &str, n: usize, wait: Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let got = self.received(id);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A browser's push subscription: its key pair and auth secret.
struct Subscriber {
    endpoint: String,
    keys: ece::EcKeyComponents,
    p256dh: String,
    auth: [u8; 16],
}

impl Subscriber {
    fn new(base: &str, id: &str) -> Subscriber {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        Subscriber {
            endpoint: format!("{base}/push/{id}"),
            keys: pair.raw_components().unwrap(),
            p256dh: URL_SAFE_NO_PAD.encode(pair.pub_as_raw().unwrap()),
            auth,
        }
    }

    fn json(&self) -> Value {
        json!({"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": URL_SAFE_NO_PAD.encode(self.auth)}})
    }

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

    /// Checks the request like a push service does, then decrypts the notification.
    fn open(&self, request: &Received, public_key: &str, push_base: &str) -> Value {
        assert_eq!(request.encoding.as_deref(), Some("aes128gcm"));
        assert!(
            request
                .ttl
                .as_deref()
                .is_some_and(|t| t.parse::<u64>().is_ok()),
            "TTL header"
        );
        let (token, key) = parse_vapid(&request.authorization);
        assert_eq!(key, public_key, "k= is the server's VAPID key");
        let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..65]),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[push_base]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
            .expect("a VAPID JWT signed with the server's key, for this origin")
            .claims;
        assert_eq!(claims["aud"], push_base, "aud keeps the port");
        assert_eq!(claims["sub"], SUBJECT);
        let exp = claims["exp"].as_i64().unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!(
            exp > now && exp <= now + 12 * 3600,
            "exp at most 12 h ahead: {}",
            exp - now
        );
        let plain = ece::decrypt(&self.keys, &self.auth, &request.body).expect("aes128gcm body");
        serde_json::from_slice(&plain).unwrap()
    }
}

fn parse_vapid(header: &str) -> (String, String) {
    let rest = header.strip_prefix("vapid ").expect("vapid scheme");
    let mut token = String::new();
    let mut key = String::new();
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').unwrap();
        match name {
            "t" => token = value.to_owned(),
            "k" => key = value.to_owned(),
            _ => {}
        }
    }
    (token, key)
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
    let app = spawn_app_with(|c| c.vapid_subject = SUBJECT.into()).await;
    let fam = app.family(prefix).await;
    let (service, base) = PushService::start().await;
    let (_, key) = app.request("GET", "/api/push/public-key", None, None).await;
    let public_key = key["public_key"].as_str().unwrap().to_owned();
    assert_eq!(URL_SAFE_NO_PAD.decode(&public_key).unwrap().len(), 65);
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
    assert!(
        !service.received("stuck").is_empty(),
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
    use sea_orm::{EntityTrait, PaginatorTrait};
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
    let (mut app, _, _, _, key) = setup("push_keys").await;
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

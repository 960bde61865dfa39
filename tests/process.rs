//! The `podo` binary as an operator runs it: first start on an empty data directory, then
//! SIGTERM or SIGINT stops it cleanly (exit 0), ends open streams and closes the database; web
//! push to an HTTPS push service whose CA only `SSL_CERT_FILE` names; native push through a fake
//! FCM with a service-account key file (`PODO_FCM_CREDENTIALS`).
#[path = "support/fake_fcm.rs"]
mod fake_fcm;
#[path = "support/podo_process.rs"]
mod podo_process;
#[path = "support/push_service.rs"]
mod push_service;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    address: String,
}

/// Starts `podo serve` on an ephemeral port and waits for its "listening" log line.
fn start(data_dir: &std::path::Path) -> Server {
    start_with(data_dir, &[])
}

/// The same, with these environment settings.
fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut command = podo_process::serve_command(data_dir);
    command
        .env_remove("DATABASE_URL")
        .env_remove("SSL_CERT_FILE")
        .env_remove("PODO_PUSH_ALLOW_PRIVATE")
        .env_remove("PODO_FCM_CREDENTIALS")
        .env_remove("PODO_FCM_ENDPOINT")
        .envs(env.iter().copied());
    let (child, address) = podo_process::spawn_listening(command);
    Server { child, address }
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

/// POSTs JSON (with an optional bearer token); returns the status and the JSON body.
fn post(address: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(address).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer[9..12].parse().expect("status code");
    let json = answer
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok());
    (status, json.unwrap_or(serde_json::Value::Null))
}

/// Signs up and logs in; returns the token.
fn member(address: &str, login: &str, role: &str) -> String {
    let body =
        format!(r#"{{"login":"{login}","name":"n","password":"password1","role":"{role}"}}"#);
    assert_eq!(post(address, "/api/auth/signup", None, &body).0, 201);
    let (status, answer) = post(
        address,
        "/api/auth/login",
        None,
        &format!(r#"{{"login":"{login}","password":"password1"}}"#),
    );
    assert_eq!(status, 200);
    answer["token"].as_str().expect("token").to_owned()
}

fn wait_for_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn first_start_migrates_and_a_signal_stops_it_cleanly() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut server = start(&data_dir);
        assert!(
            data_dir.join("podo.db").exists(),
            "the SQLite file is created on first start"
        );
        let health = http_get(&server.address, "/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let page = http_get(&server.address, "/");
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("<html"),
            "the web client is served"
        );

        // A paired family with a live board stream open.
        let parent = member(&server.address, "sig_mom", "parent");
        let child = member(&server.address, "sig_kid", "child");
        let (_, invite) = post(&server.address, "/api/family/invite", Some(&parent), "{}");
        let code = invite["code"].as_str().expect("code");
        assert_eq!(
            post(
                &server.address,
                "/api/family/join",
                Some(&child),
                &format!(r#"{{"code":"{code}"}}"#)
            )
            .0,
            200
        );
        let mut sse = TcpStream::connect(&server.address).expect("connect");
        write!(
            sse,
            "GET /api/board/events?access_token={child} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("sse request");
        sse.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("event: board") {
            let n = sse.read(&mut chunk).expect("the stream starts");
            assert!(n > 0, "the stream ended early");
            seen.extend_from_slice(&chunk[..n]);
        }

        let signalled = Instant::now();
        let status = Command::new("kill")
            .args([format!("-{signal}"), server.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = wait_for_exit(&mut server.child, Duration::from_secs(20));
        if exit.is_none() {
            let _ = server.child.kill();
        }
        assert_eq!(exit.map(|s| s.code()), Some(Some(0)), "SIG{signal} exits 0");
        assert!(
            !data_dir.join("podo.db-wal").exists(),
            "a clean stop copies the WAL into the database and removes it"
        );
        // actix waits up to 10 s for open connections; the server ends its streams instead.
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "streams were ended, not timed out"
        );
        let mut rest = Vec::new();
        let _ = sse.read_to_end(&mut rest);

        // The next start uses the same database: the account is still there.
        let mut again = start(&data_dir);
        let (status, me) = post(
            &again.address,
            "/api/auth/login",
            None,
            r#"{"login":"sig_kid","password":"password1"}"#,
        );
        assert_eq!(
            (status, me["user"]["login"].as_str()),
            (200, Some("sig_kid")),
            "the account survived"
        );
        let _ = Command::new("kill")
            .args(["-TERM", &again.child.id().to_string()])
            .status();
        assert_eq!(
            wait_for_exit(&mut again.child, Duration::from_secs(20)).map(|s| s.code()),
            Some(Some(0))
        );
    }
}

/// Pairs a parent and a child; returns their tokens.
fn pair(address: &str, prefix: &str) -> (String, String) {
    let parent = member(address, &format!("{prefix}_mom"), "parent");
    let child = member(address, &format!("{prefix}_kid"), "child");
    let (_, invite) = post(address, "/api/family/invite", Some(&parent), "{}");
    let code = invite["code"].as_str().expect("code");
    let joined = post(
        address,
        "/api/family/join",
        Some(&child),
        &format!(r#"{{"code":"{code}"}}"#),
    );
    assert_eq!(joined.0, 200);
    (parent, child)
}

#[actix_web::test]
async fn pushes_reach_an_https_push_service_trusted_through_ssl_cert_file() {
    use futures_util::{SinkExt, StreamExt};
    use push_service::{PushService, SUBJECT, Subscriber};
    let service = PushService::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = service.ca_file.to_str().expect("utf-8 path").to_owned();
    let mut server = start_with(
        &dir.path().join("data"),
        &[
            ("SSL_CERT_FILE", &ca_file),
            ("PODO_PUSH_ALLOW_PRIVATE", "true"),
            ("PODO_VAPID_SUBJECT", SUBJECT),
        ],
    );
    let address = server.address.clone();
    let (parent, child) = pair(&address, "tls");
    let key: serde_json::Value = awc::Client::new()
        .get(format!("http://{address}/api/push/public-key"))
        .send()
        .await
        .expect("public key")
        .json()
        .await
        .expect("json");
    let key = key["public_key"].as_str().expect("key").to_owned();
    service.require_vapid_key(&key);
    let parent_phone = Subscriber::new(&service.base, "p");
    let child_phone = Subscriber::new(&service.base, "c");
    for (token, phone) in [(&parent, &parent_phone), (&child, &child_phone)] {
        let body = phone.json().to_string();
        assert_eq!(
            post(&address, "/api/push/subscriptions", Some(token), &body).0,
            201
        );
    }

    let (_, wish) = post(&address, "/api/wishes", Some(&child), r#"{"name":"kite"}"#);
    let wish_id = wish["id"].as_i64().expect("wish id");
    let board = format!(r#"{{"wish_id":{wish_id}}}"#);
    assert_eq!(post(&address, "/api/board", Some(&parent), &board).0, 201);
    let grant = post(
        &address,
        "/api/board/grant",
        Some(&parent),
        r#"{"count":2}"#,
    );
    assert_eq!(grant.0, 200);
    let (_, mission) = post(
        &address,
        "/api/missions",
        Some(&parent),
        r#"{"title":"양치"}"#,
    );
    let submit = format!("/api/missions/{}/submit", mission["id"]);
    assert_eq!(post(&address, &submit, Some(&child), "{}").0, 200);
    let (_, mut ws) = awc::Client::new()
        .ws(format!("ws://{address}/api/chat/ws?access_token={parent}"))
        .connect()
        .await
        .expect("chat connects");
    let send = r#"{"type":"send","client_id":"c1","text":"잘 자"}"#;
    ws.send(awc::ws::Message::Text(send.into()))
        .await
        .expect("send");
    while let Some(Ok(frame)) = ws.next().await {
        if let awc::ws::Frame::Text(text) = frame
            && String::from_utf8_lossy(&text).contains(r#""type":"ack""#)
        {
            break;
        }
    }

    let open_all = |phone: &Subscriber, id: &str, received: Vec<push_service::Received>| {
        let mut got: Vec<(String, String)> = received
            .iter()
            .map(|r| {
                let n = phone.open(r, &key, &service.base);
                (
                    n["kind"].as_str().unwrap_or_default().to_owned(),
                    n["body"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        got.sort();
        (id.to_owned(), got)
    };
    let to_parent = open_all(
        &parent_phone,
        "parent",
        service.wait_for("p", 2, Duration::from_secs(10)).await,
    );
    let to_child = open_all(
        &child_phone,
        "child",
        service.wait_for("c", 3, Duration::from_secs(10)).await,
    );
    let pair_of = |kind: &str, body: &str| (kind.to_owned(), body.to_owned());
    assert_eq!(
        to_parent,
        (
            "parent".to_owned(),
            vec![pair_of("mission", "양치"), pair_of("wish", "kite")]
        )
    );
    assert_eq!(
        to_child,
        (
            "child".to_owned(),
            vec![
                pair_of("chat", "잘 자"),
                pair_of("grant", "포도알 2개"),
                pair_of("mission", "양치")
            ]
        )
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    assert_eq!(
        wait_for_exit(&mut server.child, Duration::from_secs(20)).map(|s| s.code()),
        Some(Some(0))
    );
}

/// VmRSS or VmHWM (peak) of a process, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing"))
}

/// Runs `count` jobs on `concurrency` threads; returns how many answered with each status.
fn burst(count: usize, concurrency: usize, job: impl Fn(usize) -> u16 + Sync) -> Vec<(u16, usize)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let status = job(i);
                    *statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                }
            });
        }
    });
    statuses.into_inner().unwrap().into_iter().collect()
}

/// Every argon2id hash takes 19 MiB; unbounded, 64 at once left the server at gigabytes of RSS
/// (the freed memory stays in each blocking thread's malloc arena). Bounded to one hash per core,
/// a burst of sign-ups and logins stays far below 1 GiB.
#[test]
fn a_burst_of_signups_and_logins_keeps_the_server_small() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(&dir.path().join("data"));
    let pid = server.child.id();
    let address = server.address.clone();
    let signups = burst(200, 64, |i| {
        let body =
            format!(r#"{{"login":"burst_{i}","name":"n","password":"password1","role":"child"}}"#);
        post(&address, "/api/auth/signup", None, &body).0
    });
    assert_eq!(signups, vec![(201, 200)], "every sign-up succeeds");
    let logins = burst(200, 64, |i| {
        let body = format!(r#"{{"login":"burst_{i}","password":"password1"}}"#);
        post(&address, "/api/auth/login", None, &body).0
    });
    assert_eq!(logins, vec![(200, 200)], "every login succeeds");
    let rss_mib = proc_kib(pid, "VmRSS:") / 1024;
    let peak_mib = proc_kib(pid, "VmHWM:") / 1024;
    eprintln!(
        "server RSS after 200 sign-ups and 200 logins at 64 at once: {rss_mib} MiB (peak {peak_mib} MiB)"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exited = wait_for_exit(&mut server.child, Duration::from_secs(20));
    if exited.is_none() {
        let _ = server.child.kill();
    }
    assert!(rss_mib <= 1024, "server RSS {rss_mib} MiB after the burst");
}

fn get(address: &str, path: &str, token: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Reads chat frames until one contains `needle`.
async fn wait_for_frame(
    ws: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    needle: &str,
) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(awc::ws::Frame::Text(text))))
                if String::from_utf8_lossy(&text).contains(needle) =>
            {
                return;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no frame with {needle}: {other:?}"),
        }
    }
}

/// Issue 19's "done when": `podo serve` with a service-account key file whose `token_uri` is a
/// local fake token endpoint and `PODO_FCM_ENDPOINT` at a local fake FCM delivers the grant, chat
/// and mission notifications to the child's token with the right titles and bodies, none while
/// the child is in the chat room; an `UNREGISTERED` token is deleted after its first failure;
/// the child's web subscription keeps getting its pushes.
#[actix_web::test]
async fn fcm_delivers_grant_chat_and_mission_notifications_to_the_childs_token() {
    use fake_fcm::{Answer, FakeFcm};
    use futures_util::SinkExt;
    use push_service::{PushService, SUBJECT, Subscriber, TestCa};
    let ca = TestCa::new();
    let service = PushService::start_with(ca.clone()).await;
    let fcm = FakeFcm::start(ca.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.ca_file.to_str().expect("utf-8 path").to_owned();
    let credentials = fcm.credentials.to_str().expect("utf-8 path").to_owned();
    let mut server = start_with(
        &dir.path().join("data"),
        &[
            ("SSL_CERT_FILE", &ca_file),
            ("PODO_PUSH_ALLOW_PRIVATE", "true"),
            ("PODO_VAPID_SUBJECT", SUBJECT),
            ("PODO_FCM_CREDENTIALS", &credentials),
            ("PODO_FCM_ENDPOINT", &fcm.base),
        ],
    );
    let address = server.address.clone();
    let (parent, child) = pair(&address, "fcm");
    assert_eq!(
        get(&address, "/api/push/providers", &child),
        serde_json::json!({"web_push": true, "fcm": true})
    );
    let phone = "kid-phone:APA91bE_test-token.0123456789";
    let old_phone = "kid-old-phone:APA91bX_gone";
    fcm.answer(old_phone, [Answer::Unregistered]);
    for (token, platform) in [(phone, "android"), (old_phone, "ios")] {
        let body = format!(r#"{{"provider":"fcm","token":"{token}","platform":"{platform}"}}"#);
        let (status, device) = post(&address, "/api/push/devices", Some(&child), &body);
        assert_eq!(status, 201, "{device}");
    }
    let key = get(&address, "/api/push/public-key", &child)["public_key"]
        .as_str()
        .expect("key")
        .to_owned();
    service.require_vapid_key(&key);
    let laptop = Subscriber::new(&service.base, "kid-laptop");
    let body = laptop.json().to_string();
    assert_eq!(
        post(&address, "/api/push/subscriptions", Some(&child), &body).0,
        201
    );

    let (_, wish) = post(&address, "/api/wishes", Some(&child), r#"{"name":"kite"}"#);
    let board = format!(r#"{{"wish_id":{}}}"#, wish["id"]);
    assert_eq!(post(&address, "/api/board", Some(&parent), &board).0, 201);
    assert_eq!(
        post(
            &address,
            "/api/board/grant",
            Some(&parent),
            r#"{"count":2}"#
        )
        .0,
        200
    );
    let (_, mission) = post(
        &address,
        "/api/missions",
        Some(&parent),
        r#"{"title":"양치"}"#,
    );
    let submit = format!("/api/missions/{}/submit", mission["id"]);
    assert_eq!(post(&address, &submit, Some(&child), "{}").0, 200);
    let approve = format!("/api/missions/{}/approve", mission["id"]);
    assert_eq!(post(&address, &approve, Some(&parent), "{}").0, 200);
    let connect = |token: &str| {
        awc::Client::new()
            .ws(format!("ws://{address}/api/chat/ws?access_token={token}"))
            .connect()
    };
    let (_, mut mom) = connect(&parent).await.expect("chat connects");
    let send = |id: &str, text: &str| {
        awc::ws::Message::Text(
            format!(r#"{{"type":"send","client_id":"{id}","text":"{text}"}}"#).into(),
        )
    };
    mom.send(send("c1", "잘 자")).await.expect("send");
    wait_for_frame(&mut mom, r#""type":"ack""#).await;

    let wait = Duration::from_secs(10);
    let texts: Vec<(String, String, String)> = fcm
        .wait_for(phone, 4, wait)
        .await
        .iter()
        .map(|sent| sent.texts())
        .collect();
    let t =
        |kind: &str, title: &str, body: &str| (kind.to_owned(), title.to_owned(), body.to_owned());
    let granted = "포도알이 발급되었어요! 지금 확인해보세요.";
    assert_eq!(
        texts,
        [
            t("grant", granted, "포도알 2개"),
            t("mission", "미션이 등록되었습니다!", "양치"),
            t("grant", granted, "양치"),
            t("chat", "새로운 메시지가 도착했습니다.", "잘 자"),
        ]
    );
    assert!(
        fcm.refused_token_requests().is_empty(),
        "{:?}",
        fcm.refused_token_requests()
    );
    // The old phone was tried once and deleted; the laptop got every one by web push.
    assert_eq!(
        fcm.sent_to(old_phone)
            .iter()
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        [404]
    );
    let devices = get(&address, "/api/push/devices", &child);
    let devices = devices["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["token_tail"], "456789");
    let web: Vec<String> = service
        .wait_for("kid-laptop", 4, wait)
        .await
        .iter()
        .map(|r| {
            laptop.open(r, &key, &service.base)["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(web, ["포도알 2개", "양치", "양치", "잘 자"]);

    // The child opens the chat: in the room, no notification.
    let (_, mut kid) = connect(&child).await.expect("chat connects");
    wait_for_frame(&mut mom, r#""type":"presence""#).await;
    mom.send(send("c2", "보고 있구나")).await.expect("send");
    wait_for_frame(&mut kid, "보고 있구나").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fcm.sent_to(phone).len(),
        4,
        "none while the child is in the room"
    );
    assert_eq!(service.received("kid-laptop").len(), 4);

    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    assert_eq!(
        wait_for_exit(&mut server.child, Duration::from_secs(20)).map(|s| s.code()),
        Some(Some(0))
    );
}

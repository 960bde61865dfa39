//! Faults lose nothing (issue 18): a database that goes away, a full disk and a hung commit are
//! answered with 503 `unavailable` (507 `storage_full`) within the timeout, nothing is
//! acknowledged that was not stored, streams and sockets stay open, loaded state keeps being
//! read, and service comes back by itself.
//!
//! The PostgreSQL tests put a [`FaultProxy`] between the server and the database and run when
//! `PODO_TEST_PG` is set (they print a note and pass otherwise); the SQLite tests run on SQLite.
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use podo::store::DB_TIMEOUT;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::fault_proxy::{FaultProxy, Mode, eventually, postgres_authority};
use crate::helpers::{TestApp, TestFamily, WsClient, error_code, spawn_app, spawn_app_with};

/// A fault is answered within the database timeout plus this much scheduling slack.
const SLACK: Duration = Duration::from_millis(1000);
/// Once the database is back, everything works again within this.
const HEAL: Duration = Duration::from_secs(5);
/// What "answers at once" means for reads of loaded state.
const QUICK: Duration = Duration::from_millis(1000);

fn bound() -> Duration {
    DB_TIMEOUT + SLACK
}

/// One request with its status, body, `Retry-After` and how long it took.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
    took: Duration,
}

async fn timed(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let started = Instant::now();
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let req = app.client.request(method, app.url(path)).bearer_auth(token);
    let mut res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("request sent");
    let bytes = res.body().limit(1 << 20).await.expect("body");
    Answer {
        status: res.status(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after: res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        took: started.elapsed(),
    }
}

async fn healthz(app: &TestApp) -> (StatusCode, Duration) {
    let started = Instant::now();
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    (res.status(), started.elapsed())
}

/// A write that the database could not take: 503 `unavailable` with `Retry-After`, in time.
fn assert_unavailable(what: &str, answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        answer.body
    );
    assert_eq!(error_code(&answer.body), "unavailable", "{what}");
    assert!(answer.retry_after.is_some(), "{what}: no Retry-After");
    assert!(answer.took <= bound(), "{what} took {:?}", answer.took);
}

async fn grant(app: &TestApp, fam: &TestFamily) -> Answer {
    timed(
        app,
        "POST",
        "/api/board/grant",
        &fam.parent.token,
        Some(json!({"count": 1})),
    )
    .await
}

/// Sends a chat message and waits for its ack or error frame.
async fn send(ws: &mut WsClient, client_id: &str, wait: Duration) -> Value {
    ws.send_message(client_id, "hello").await;
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_frame(left).await {
            Ok(Some(frame)) if frame["type"] == "ack" || frame["type"] == "error" => {
                return frame;
            }
            Ok(Some(_)) => continue,
            other => panic!("no answer to send {client_id}: {other:?}"),
        }
    }
}

/// Makes the server refresh its view of token revocations now: every authenticated request
/// refreshes it from the database when it is over a second old (`auth/revocation.rs`) and fails
/// when that read fails, so the tests that read during an outage do so within the second after.
async fn refresh_revocations(app: &TestApp, token: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = app.get("/api/me", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A server whose PostgreSQL connections go through a fault proxy; None without `PODO_TEST_PG`.
async fn behind_proxy() -> Option<(TestApp, FaultProxy)> {
    let admin = std::env::var("PODO_TEST_PG").unwrap_or_default();
    if admin.is_empty() {
        eprintln!("skipped: set PODO_TEST_PG to run the PostgreSQL fault tests");
        return None;
    }
    let (_, upstream, _) = postgres_authority(&admin).expect("PODO_TEST_PG is a URL");
    let upstream = upstream
        .to_socket_addrs()
        .expect("PostgreSQL address")
        .next()
        .expect("an address");
    let proxy = FaultProxy::start(upstream);
    let through = proxy.addr;
    let app = spawn_app_with(move |config| {
        let url = config.database_url.clone().expect("database url");
        let (prefix, _, path) = postgres_authority(&url).expect("PostgreSQL URL");
        config.database_url = Some(format!("{prefix}{through}{path}"));
    })
    .await;
    Some((app, proxy))
}

/// The SQLite tests' server, or None on PostgreSQL.
async fn on_sqlite() -> Option<TestApp> {
    let app = spawn_app().await;
    if !app.config.database_url().starts_with("sqlite:") {
        eprintln!("skipped: a SQLite test (PODO_TEST_PG is set)");
        return None;
    }
    Some(app)
}

async fn postgres_outage(mode: Mode) {
    let Some((app, proxy)) = behind_proxy().await else {
        return;
    };
    let fam = app.family("out").await;
    app.open_board(&fam, 100).await;
    let mut sse = app.sse(&fam.child.token).await;
    let (first, _) = sse.next_board(Duration::from_secs(5)).await.expect("state");
    let (mut parent_ws, _) = app.ws(&fam.parent.token).await;
    let (mut child_ws, _) = app.ws(&fam.child.token).await;
    let ack = send(&mut parent_ws, "before", Duration::from_secs(5)).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seq = ack["seq"].as_i64().expect("seq");
    let delivered = child_ws.expect("message", Duration::from_secs(5)).await;
    assert_eq!(delivered["seq"], seq);
    let ok = grant(&app, &fam).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        sse.versions_until(first + 1, Duration::from_secs(5))
            .await
            .last(),
        Some(&(first + 1))
    );

    refresh_revocations(&app, &fam.parent.token).await;
    proxy.set(mode);

    // Loaded state is read from memory. (Read at once: every authenticated request refreshes the
    // token revocations from the database once a second, `auth/revocation.rs`, and fails when
    // that read fails; see the README's Limits.)
    let read = timed(&app, "GET", "/api/board", &fam.parent.token, None).await;
    assert_eq!(read.status, StatusCode::OK, "{mode:?}: read {}", read.body);
    assert!(read.took <= QUICK, "read took {:?}", read.took);
    assert_eq!(read.body["board"]["granted"], 1);

    let (status, took) = healthz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}: healthz");
    assert!(took <= bound(), "{mode:?}: healthz took {took:?}");
    // Through the Persister (the FamilyBoard), and a handler that writes itself.
    let refused = grant(&app, &fam).await;
    eprintln!(
        "{mode:?}: healthz 503 in {took:?}, grant 503 in {:?}",
        refused.took
    );
    assert_unavailable("grant", &refused);
    let wish = timed(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        Some(json!({"name": "kite"})),
    )
    .await;
    assert_unavailable("wish", &wish);
    let started = Instant::now();
    let refused = send(&mut parent_ws, "during", bound()).await;
    assert_eq!(refused["type"], "error", "{mode:?}: {refused}");
    assert_eq!(refused["code"], "not_stored");
    assert!(
        started.elapsed() <= bound(),
        "send took {:?}",
        started.elapsed()
    );
    // Nothing was acknowledged or delivered.
    let frames = child_ws.drain(Duration::from_millis(300)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "message"),
        "delivered during the outage: {frames:?}"
    );
    assert_eq!(healthz(&app).await.0, StatusCode::SERVICE_UNAVAILABLE);

    proxy.set(Mode::Pass);
    let healed = Instant::now();
    let mut version = None;
    assert!(
        eventually(HEAL, async || {
            let answer = grant(&app, &fam).await;
            version = answer.body["version"].as_i64();
            answer.status == StatusCode::OK
        })
        .await,
        "{mode:?}: writes did not come back within {HEAL:?}"
    );
    let version = version.expect("version");
    assert!(healed.elapsed() <= HEAL, "healed in {:?}", healed.elapsed());
    eprintln!("{mode:?}: writes healed in {:?}", healed.elapsed());
    // Nothing of the refused grant was applied: exactly one more grape.
    assert_eq!(version, first + 2, "{mode:?}");
    // The same stream gets the next state, the same sockets the next message.
    let seen = sse.versions_until(version, HEAL).await;
    assert_eq!(seen.last(), Some(&version), "{mode:?}: stream saw {seen:?}");
    let ack = send(&mut parent_ws, "during", HEAL).await;
    assert_eq!(ack["type"], "ack", "{mode:?}: {ack}");
    assert_eq!(
        ack["seq"],
        seq + 1,
        "{mode:?}: no gap, no reuse: {ack} after {seq}"
    );
    let delivered = child_ws.expect("message", HEAL).await;
    assert_eq!(delivered["seq"], seq + 1);
    assert_eq!(delivered["client_id"], "during");
    assert!(
        eventually(HEAL, async || healthz(&app).await.0 == StatusCode::OK).await,
        "{mode:?}: healthz stayed 503"
    );
}

#[actix_web::test]
async fn postgres_connections_reset() {
    postgres_outage(Mode::Reset).await;
}

#[actix_web::test]
async fn postgres_connections_dropped() {
    postgres_outage(Mode::Drop).await;
}

#[actix_web::test]
async fn postgres_black_holed() {
    postgres_outage(Mode::BlackHole).await;
}

/// While family A's commit hangs, family B's loaded state is read, B's new streams and sockets
/// are served, and a second write that arrives while the first hangs is answered within the
/// timeout of its own arrival (not one timeout per batch ahead of it).
async fn others_are_served_while_a_commit_hangs(
    app: &TestApp,
    hang: impl AsyncFnOnce(),
    heal: impl AsyncFnOnce(),
) {
    let a = app.family("hang_a").await;
    let b = app.family("hang_b").await;
    app.open_board(&a, 100).await;
    app.open_board(&b, 100).await;
    // Loaded: B's board and room are in memory.
    let mut b_sse = app.sse(&b.child.token).await;
    let (b_version, _) = b_sse
        .next_board(Duration::from_secs(5))
        .await
        .expect("state");
    let (mut b_ws, _) = app.ws(&b.parent.token).await;
    let (a_version, _) = {
        let mut a_sse = app.sse(&a.child.token).await;
        a_sse
            .next_board(Duration::from_secs(5))
            .await
            .expect("state")
    };

    refresh_revocations(app, &b.parent.token).await;
    hang().await;

    let first = grant(app, &a);
    let second = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        grant(app, &b).await
    };
    let others = async {
        // Soon after the hang: authenticated requests need the revocation view refreshed within
        // the last second (see `postgres_outage`).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read = timed(app, "GET", "/api/board", &b.parent.token, None).await;
        assert_eq!(read.status, StatusCode::OK, "B's read: {}", read.body);
        assert!(read.took <= QUICK, "B's read took {:?}", read.took);
        let started = Instant::now();
        let mut sse = app.sse(&b.parent.token).await;
        let (version, _) = sse.next_board(QUICK).await.expect("B's new stream");
        assert_eq!(version, b_version);
        let (_ws, hello) = app.ws(&b.child.token).await;
        assert_eq!(hello["type"], "hello");
        assert!(
            started.elapsed() <= 2 * QUICK,
            "B's subscribe and join took {:?}",
            started.elapsed()
        );
    };
    let (first, second, ()) = futures_util::future::join3(first, second, others).await;
    assert_unavailable("the hung grant", &first);
    assert_unavailable("the grant behind it", &second);
    assert_eq!(healthz(app).await.0, StatusCode::SERVICE_UNAVAILABLE);

    heal().await;
    let mut version = None;
    assert!(
        eventually(HEAL, async || {
            let answer = grant(app, &a).await;
            version = answer.body["version"].as_i64();
            answer.status == StatusCode::OK
        })
        .await,
        "writes did not come back"
    );
    // The timed-out commit did not land (the lock or the black hole kept it out), and the board
    // reloaded rather than assumed: the version moved by exactly one.
    assert_eq!(version, Some(a_version + 1));
    let ack = send(&mut b_ws, "after", HEAL).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(
        eventually(HEAL, async || healthz(app).await.0 == StatusCode::OK).await,
        "healthz stayed 503"
    );
}

#[actix_web::test]
async fn postgres_hung_commit_blocks_no_one() {
    let Some((app, proxy)) = behind_proxy().await else {
        return;
    };
    others_are_served_while_a_commit_hangs(
        &app,
        async || proxy.set(Mode::BlackHole),
        async || proxy.set(Mode::Pass),
    )
    .await;
}

/// Another connection holds SQLite's write lock: the server's commit waits on it (its
/// `busy_timeout` is 10 s) and must give up after DB_TIMEOUT.
#[actix_web::test]
async fn sqlite_hung_commit_blocks_no_one() {
    let Some(app) = on_sqlite().await else {
        return;
    };
    let mut options = ConnectOptions::new(app.config.database_url());
    options.max_connections(1).sqlx_logging(false);
    let locker = Database::connect(options).await.expect("second connection");
    others_are_served_while_a_commit_hangs(
        &app,
        async || {
            locker
                .execute_unprepared("BEGIN IMMEDIATE")
                .await
                .expect("take the write lock");
        },
        async || {
            locker
                .execute_unprepared("ROLLBACK")
                .await
                .expect("release the lock");
        },
    )
    .await;
}

async fn sqlite_pragma(app: &TestApp, pragma: &str) -> i64 {
    let row = app
        .db
        .write
        .query_one_raw(Statement::from_string(
            app.db.backend(),
            format!("PRAGMA {pragma}"),
        ))
        .await
        .expect("pragma")
        .expect("a row");
    row.try_get_by_index(0).expect("a number")
}

/// The disk fills up (`PRAGMA max_page_count` on the server's writer connection, so that writes
/// needing a new page fail with SQLITE_FULL): writes answer 507 `storage_full` and chat sends
/// `not_stored`, nothing earlier is lost or damaged, and once there is space again (the limit is
/// raised) everything works, with no gap in the chat's seqs.
#[actix_web::test]
async fn sqlite_disk_full() {
    let Some(app) = on_sqlite().await else {
        return;
    };
    let fam = app.family("full").await;
    app.open_board(&fam, 100).await;
    let mut sse = app.sse(&fam.child.token).await;
    sse.next_board(Duration::from_secs(5)).await.expect("state");
    let (mut ws, _) = app.ws(&fam.parent.token).await;
    let ack = send(&mut ws, "m0", Duration::from_secs(5)).await;
    assert_eq!(ack["type"], "ack");
    let mut last_seq = ack["seq"].as_i64().expect("seq");

    let pages = sqlite_pragma(&app, "page_count").await;
    assert_eq!(
        sqlite_pragma(&app, &format!("max_page_count = {pages}")).await,
        pages
    );

    // Chat: long messages need new pages at once.
    let text = "포도".repeat(1000);
    let mut refused = None;
    for i in 1..200 {
        let client_id = format!("m{i}");
        ws.send_json(json!({"type": "send", "client_id": client_id, "text": text}))
            .await;
        let frame = loop {
            let frame = ws.next_frame(Duration::from_secs(5)).await.expect("open");
            let frame = frame.expect("an answer");
            if frame["type"] == "ack" || frame["type"] == "error" {
                break frame;
            }
        };
        if frame["type"] == "ack" {
            last_seq = frame["seq"].as_i64().expect("seq");
        } else {
            assert_eq!(frame["code"], "not_stored", "{frame}");
            refused = Some(client_id);
            break;
        }
    }
    let refused = refused.expect("the disk never filled");
    assert_eq!(healthz(&app).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // The board: grants until one finds no space.
    let mut granted = 0;
    let mut full = None;
    for _ in 0..99 {
        let answer = grant(&app, &fam).await;
        if answer.status == StatusCode::OK {
            granted += 1;
        } else {
            full = Some(answer);
            break;
        }
    }
    let full = full.expect("grants kept fitting");
    assert_eq!(
        full.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        full.body
    );
    assert_eq!(error_code(&full.body), "storage_full");
    assert!(full.retry_after.is_some());
    // A handler that writes itself.
    let wish = timed(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        Some(json!({"name": "x".repeat(100), "link": format!("https://example.com/{}", "y".repeat(1900))})),
    )
    .await;
    assert_eq!(
        wish.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        wish.body
    );
    // Earlier data is all there.
    let board = app.board(&fam.parent.token).await;
    assert_eq!(board["granted"], granted);
    let (status, history) = app
        .get(
            "/api/chat/messages?after_seq=0&limit=200",
            &fam.parent.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<i64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());

    // Space returns.
    sqlite_pragma(&app, "max_page_count = 1073741823").await;
    let answer = grant(&app, &fam).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["granted"], granted + 1);
    ws.send_json(json!({"type": "send", "client_id": refused, "text": text}))
        .await;
    let ack = ws.expect("ack", Duration::from_secs(5)).await;
    assert_eq!(ack["seq"], last_seq + 1, "no gap, no reuse");
    let wish = timed(
        &app,
        "POST",
        "/api/wishes",
        &fam.child.token,
        Some(json!({"name": "kite"})),
    )
    .await;
    assert_eq!(wish.status, StatusCode::CREATED, "{}", wish.body);
    assert_eq!(healthz(&app).await.0, StatusCode::OK);
    let check = app
        .db
        .read
        .query_one_raw(Statement::from_string(
            app.db.backend(),
            "PRAGMA integrity_check",
        ))
        .await
        .expect("integrity check")
        .expect("a row");
    assert_eq!(check.try_get_by_index::<String>(0).expect("text"), "ok");
}

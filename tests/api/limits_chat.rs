//! Hostile and careless chat clients, bad rows and bad dates (issue "Hostile and careless clients
//! can't exhaust podo", the chat side): bounded chat sockets, bounded pending sends, U+0000
//! refused everywhere, one family's failing row never fails another family's writes, and no
//! panic from dates at chrono's ends.
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestFamily, WsClient, error_code, spawn_app, spawn_app_with};
use crate::raw_ws::{RawWs, flood_with_pings, text_frame, wait_for_sessions};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The test's own connection to the server's database.

async fn database(app: &TestApp) -> podo::store::Db {
    podo::store::Db::connect(&app.config.database_url())
        .await
        .expect("connect to the test database")
}

/// Holds the database's write lock (SQLite) or the lock on the tables the Persister writes
/// (PostgreSQL) until rolled back: commits wait, so what clients send meanwhile queues up.
async fn hold_writes(db: &podo::store::Db) -> DatabaseTransaction {
    let txn = db.write.begin().await.expect("begin");
    let lock = match db.backend() {
        DbBackend::Postgres => "LOCK TABLE messages, grape_events IN EXCLUSIVE MODE",
        // A write (of nothing) takes SQLite's one write lock until the transaction ends.
        _ => "DELETE FROM invites WHERE id = -1",
    };
    txn.execute_unprepared(lock).await.expect("lock");
    txn
}

/// Stores `count` messages of `text_len` characters for the family, as if sent long ago.
async fn seed_history(db: &podo::store::Db, family: &TestFamily, count: i64, text_len: usize) {
    use podo::store::entities::message;
    use sea_orm::{EntityTrait, Set};
    let text = "h".repeat(text_len);
    for start in (1..=count).step_by(100) {
        let rows = (start..(start + 100).min(count + 1)).map(|seq| message::ActiveModel {
            family_id: Set(family.id),
            seq: Set(seq),
            sender_id: Set(family.parent.id),
            client_id: Set(format!("seed-{seq}")),
            text: Set(text.clone()),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        });
        message::Entity::insert_many(rows)
            .exec(&db.write)
            .await
            .expect("seed messages");
    }
}

async fn history_seqs(app: &TestApp, token: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = app
            .get(
                &format!("/api/chat/messages?after_seq={after}&limit=200"),
                token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: Vec<i64> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        match page.last() {
            Some(&last) => after = last,
            None => return seqs,
        }
        seqs.extend(page);
    }
}

/// Reads frames until `acks` acks and `refusals` errors of `code` came, returning both counts
/// and the order in which they came (true = ack).
async fn count_answers(ws: &mut WsClient, total: usize, code: &str) -> (usize, usize, Vec<bool>) {
    let (mut acks, mut refused, mut order) = (0, 0, Vec::new());
    while acks + refused < total {
        let frame = match ws.next_frame(WAIT).await {
            Ok(Some(frame)) => frame,
            other => panic!("{acks} acks and {refused} refusals, then {other:?}"),
        };
        match frame["type"].as_str() {
            Some("ack") => {
                acks += 1;
                order.push(true);
            }
            Some("error") => {
                assert_eq!(frame["code"], code, "{frame}");
                refused += 1;
                order.push(false);
            }
            _ => {}
        }
    }
    (acks, refused, order)
}

// ---------------------------------------------------------------------------------------------
// 1. Chat sockets are bounded.

#[actix_web::test]
async fn a_client_that_pings_and_never_reads_is_closed_with_1013() {
    let app = spawn_app().await;
    let flood = flood_with_pings(&app, "lim_ping").await;
    assert!(
        flood.closed_after.is_some(),
        "the non-reading session is still open after {} pings",
        flood.sent
    );
    // The client reads at last: what was on its way, the close frame, and the end.
    assert_eq!(flood.close_code, Some(1013));
    assert!(flood.ended, "the server ended the connection");
}

#[actix_web::test]
async fn a_client_that_stops_reading_its_resume_is_closed_while_live_messages_pile_up() {
    let app = spawn_app().await;
    let fam = app.family("lim_resume").await;
    let db = database(&app).await;
    // 4 MB of history: far more than the socket, the server's buffers and the queue hold.
    seed_history(&db, &fam, 2000, 2000).await;
    let (mut parent, hello) = app.ws(&fam.parent.token).await;
    assert_eq!(hello["last_seq"], 2000);
    let mut raw = RawWs::connect(&app, &fam.child.token).await;
    assert!(
        raw.write(&text_frame(json!({"type": "resume", "after_seq": 0})))
            .await
    );
    assert_eq!(wait_for_sessions(&app, 2.0, WAIT).await, 2.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Live messages while the resume is stuck: held back for the child, counted in its budget.
    let text = "L".repeat(2000);
    let mut sent = 0;
    while sent < 1000 && app.metric("podo_ws_sessions").await == 2.0 {
        for i in 0..50 {
            parent
                .send_message(&format!("live-{}", sent + i), &text)
                .await;
        }
        count_answers(&mut parent, 50, "none").await;
        sent += 50;
    }
    assert_eq!(
        wait_for_sessions(&app, 1.0, WAIT).await,
        1.0,
        "the stuck resume is still open after {sent} live messages"
    );
    assert!(
        sent <= 600,
        "closed only after {sent} live messages (~1 MiB is ~460)"
    );
    let (code, ended) = raw.read_to_end(WAIT).await;
    assert!(ended, "the server ended the connection");
    assert_eq!(code, Some(1013));
    // The reader is untouched.
    parent.send_message("after", "still here").await;
    parent.expect("ack", WAIT).await;
}

#[actix_web::test]
async fn a_resume_whose_socket_takes_nothing_is_closed_after_the_timeout() {
    let app = spawn_app_with(|c| {
        c.timing.ws_ping_secs = 1;
        c.timing.ws_timeout_secs = 3;
    })
    .await;
    let fam = app.family("lim_stall").await;
    let db = database(&app).await;
    seed_history(&db, &fam, 2000, 2000).await;
    let mut raw = RawWs::connect(&app, &fam.child.token).await;
    assert!(
        raw.write(&text_frame(json!({"type": "resume", "after_seq": 0})))
            .await
    );
    assert_eq!(wait_for_sessions(&app, 1.0, WAIT).await, 1.0);
    // The client keeps talking (so it is not dropped for silence) but never reads.
    let started = Instant::now();
    let mut open = true;
    while open && started.elapsed() < Duration::from_secs(15) {
        let visible = text_frame(json!({"type": "visibility", "visible": true}));
        raw.write(&visible).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        open = app.metric("podo_ws_sessions").await == 1.0;
    }
    assert!(!open, "the stuck session is still open");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "closed after {took:?}");
    let (code, ended) = raw.read_to_end(WAIT).await;
    assert!(ended, "the server ended the connection");
    assert_eq!(code, Some(1013));
}

#[actix_web::test]
async fn a_long_resume_reaches_a_client_that_reads() {
    let app = spawn_app().await;
    let fam = app.family("lim_long_resume").await;
    let db = database(&app).await;
    // More than the 1 MiB budget in one go: a reading client is never closed for resuming.
    seed_history(&db, &fam, 1500, 2000).await;
    let (mut child, _) = app.ws(&fam.child.token).await;
    child
        .send_json(json!({"type": "resume", "after_seq": 0}))
        .await;
    let mut last = 0;
    loop {
        let frame = child
            .next_frame(WAIT)
            .await
            .expect("open")
            .expect("a frame");
        match frame["type"].as_str() {
            Some("message") => {
                let seq = frame["seq"].as_i64().expect("seq");
                assert_eq!(seq, last + 1);
                last = seq;
            }
            Some("resumed") => break,
            _ => {}
        }
    }
    assert_eq!(last, 1500);
}

#[actix_web::test]
async fn a_sender_with_256_unacknowledged_sends_gets_too_many_pending() {
    let app = spawn_app().await;
    let fam = app.family("lim_pending").await;
    let db = database(&app).await;
    let (mut ws, _) = app.ws(&fam.child.token).await;
    // Nothing commits while the test holds the database: no ack can come back meanwhile.
    let lock = hold_writes(&db).await;
    for i in 0..300 {
        ws.send_message(&format!("p{i}"), "waiting").await;
    }
    let mut refused = 0;
    while refused < 44 {
        let frame = ws.next_frame(WAIT).await.expect("open").expect("a frame");
        assert_ne!(frame["type"], "ack", "an ack while the database is held");
        if frame["type"] == "error" {
            assert_eq!(error_code_of(&frame), "too_many_pending", "{frame}");
            assert!(frame["message"].is_string());
            refused += 1;
        }
    }
    lock.rollback().await.expect("release");
    let (acks, more_refused, _) = count_answers(&mut ws, 256, "too_many_pending").await;
    assert_eq!((acks, more_refused), (256, 0));
    assert_eq!(
        history_seqs(&app, &fam.parent.token).await,
        (1..=256).collect::<Vec<_>>()
    );
    // Answered sends make room again.
    ws.send_message("p-after", "room again").await;
    assert_eq!(ws.expect("ack", WAIT).await["seq"], 257);
}

fn error_code_of(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or("<no code>")
}

#[actix_web::test]
async fn a_room_holds_at_most_1024_pending_messages() {
    let app = spawn_app().await;
    let fam = app.family("lim_room").await;
    let db = database(&app).await;
    let mut sessions = Vec::new();
    for i in 0..5 {
        let token = if i % 2 == 0 {
            &fam.parent.token
        } else {
            &fam.child.token
        };
        sessions.push(app.ws(token).await.0);
    }
    let lock = hold_writes(&db).await;
    // 5 × 256 = 1,280 sends, each session within its own limit.
    for (i, ws) in sessions.iter_mut().enumerate() {
        for j in 0..256 {
            ws.send_message(&format!("r{i}-{j}"), "crowded").await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.expect("release");
    let answers = join_all(
        sessions
            .iter_mut()
            .map(|ws| count_answers(ws, 256, "too_many_pending")),
    )
    .await;
    let acks: usize = answers.iter().map(|a| a.0).sum();
    let refused: usize = answers.iter().map(|a| a.1).sum();
    assert_eq!((acks, refused), (1024, 256));
    assert_eq!(history_seqs(&app, &fam.child.token).await.len(), 1024);
}

// ---------------------------------------------------------------------------------------------
// 2. U+0000 is refused in every stored string; one family never fails another's writes.

#[actix_web::test]
async fn u0000_is_refused_in_every_stored_string() {
    let app = spawn_app().await;
    let fam = app.family("lim_nul").await;
    let nul = "bad\u{0}name";
    let (status, body) = app
        .request(
            "POST",
            "/api/auth/signup",
            None,
            Some(json!({"login": "nul_user", "name": nul, "password": "grape-password", "role": "child"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body), &body["fields"]["name"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            &json!("must not contain U+0000")
        ),
        "{body}"
    );
    let wish_id = app.wish(&fam.child, "fine").await;
    let mission = app
        .post("/api/missions", &fam.parent.token, json!({"title": "fine"}))
        .await
        .1["id"]
        .as_i64()
        .expect("mission id");
    let refused: Vec<(&str, String, &str, Value, &str)> = vec![
        (
            "POST",
            "/api/wishes".into(),
            "child",
            json!({"name": nul}),
            "name",
        ),
        (
            "POST",
            "/api/wishes".into(),
            "child",
            json!({"name": "ok", "link": format!("https://a.example/{nul}")}),
            "link",
        ),
        (
            "PATCH",
            format!("/api/wishes/{wish_id}"),
            "child",
            json!({"image_url": format!("https://a.example/{nul}")}),
            "image_url",
        ),
        (
            "POST",
            "/api/missions".into(),
            "parent",
            json!({"title": nul}),
            "title",
        ),
        (
            "PATCH",
            format!("/api/missions/{mission}"),
            "parent",
            json!({"title": nul}),
            "title",
        ),
        (
            "POST",
            format!("/api/missions/{mission}/reject"),
            "parent",
            json!({"reason": nul}),
            "reason",
        ),
        (
            "POST",
            "/api/board/grant".into(),
            "parent",
            json!({"count": 1, "key": nul}),
            "key",
        ),
        (
            "POST",
            "/api/board/attach".into(),
            "child",
            json!({"key": nul}),
            "key",
        ),
        (
            "POST",
            "/api/push/subscriptions".into(),
            "child",
            json!({"endpoint": "https://push.example/x", "keys": {"p256dh": nul, "auth": "a"}}),
            "keys",
        ),
    ];
    for (method, path, who, body, field) in refused {
        let token = if who == "child" {
            &fam.child.token
        } else {
            &fam.parent.token
        };
        let (status, answer) = app.request(method, &path, Some(token), Some(body)).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{method} {path}: {answer}"
        );
        assert_eq!(
            answer["fields"][field], "must not contain U+0000",
            "{method} {path}: {answer}"
        );
    }
    // Nothing of it was stored; an escaped backslash before u0000 is ordinary text.
    let (_, wishes) = app.get("/api/wishes", &fam.child.token).await;
    assert_eq!(wishes["wishes"].as_array().map(Vec::len), Some(1));
    let (status, wish) = app
        .post(
            "/api/wishes",
            &fam.child.token,
            serde_json::from_str(r#"{"name": "back\\u0000slash"}"#).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wish}");
    assert_eq!(wish["name"], "back\\u0000slash");

    // Chat: an error frame, and the connection stays.
    let (mut ws, _) = app.ws(&fam.child.token).await;
    ws.send_message("c1", nul).await;
    let error = ws.expect("error", WAIT).await;
    assert_eq!(error["code"], "invalid_text");
    ws.send_message(nul, "text").await;
    assert_eq!(ws.expect("error", WAIT).await["code"], "invalid_text");
    ws.send_message("c2", "fine").await;
    assert_eq!(ws.expect("ack", WAIT).await["seq"], 1);
}

/// Makes every insert of `family_id`'s messages and ledger rows fail inside the database.
async fn break_family(db: &podo::store::Db, family_id: i64) {
    let statements = match db.backend() {
        DbBackend::Postgres => vec![
            "CREATE FUNCTION podo_test_refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                .to_owned(),
            format!(
                "CREATE TRIGGER podo_test_refuse_messages BEFORE INSERT ON messages FOR EACH ROW \
                 WHEN (NEW.family_id = {family_id}) EXECUTE FUNCTION podo_test_refuse()"
            ),
            format!(
                "CREATE TRIGGER podo_test_refuse_events BEFORE INSERT ON grape_events FOR EACH ROW \
                 WHEN (NEW.family_id = {family_id}) EXECUTE FUNCTION podo_test_refuse()"
            ),
        ],
        _ => vec![
            format!(
                "CREATE TRIGGER podo_test_refuse_messages BEFORE INSERT ON messages \
                 WHEN NEW.family_id = {family_id} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ),
            format!(
                "CREATE TRIGGER podo_test_refuse_events BEFORE INSERT ON grape_events \
                 WHEN NEW.family_id = {family_id} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ),
        ],
    };
    for statement in statements {
        db.write
            .execute_unprepared(&statement)
            .await
            .expect("trigger");
    }
}

#[actix_web::test]
async fn a_family_whose_row_fails_does_not_fail_the_others_in_its_batch() {
    let mut app = spawn_app().await;
    let db = database(&app).await;
    let plug = app.family("lim_plug").await;
    let bad = app.family("lim_bad").await;
    let mut good = Vec::new();
    for i in 0..6 {
        good.push(app.family(&format!("lim_good{i}")).await);
    }
    for fam in good.iter().chain([&bad, &plug]) {
        app.open_board(fam, 31).await;
    }
    let (mut plug_ws, _) = app.ws(&plug.parent.token).await;
    let (mut bad_ws, _) = app.ws(&bad.parent.token).await;
    let mut good_ws = Vec::new();
    for fam in &good {
        good_ws.push(app.ws(&fam.parent.token).await.0);
    }
    break_family(&db, bad.id).await;

    // While the database is held, the plug's message is the batch in flight; everything after
    // it queues in the Persister and goes into the next batch together.
    let lock = hold_writes(&db).await;
    plug_ws.send_message("plug", "first in line").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bad_ws
        .send_message("bad", "this one cannot be stored")
        .await;
    for ws in &mut good_ws {
        ws.send_message("good", "this one is fine").await;
    }
    let grants = join_all(good.iter().chain([&bad]).map(|fam| {
        app.post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": 2, "key": "isolation"}),
        )
    }));
    let release = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        lock.rollback().await.expect("release");
    };
    let (grants, ()) = futures_util::join!(grants, release);

    let (bad_grant, good_grants) = grants.split_last().expect("grants");
    for (status, body) in good_grants {
        assert_eq!(*status, StatusCode::OK, "a good family's grant: {body}");
        assert_eq!(body["granted"], 2);
    }
    assert_eq!(
        (bad_grant.0, error_code(&bad_grant.1)),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "{}",
        bad_grant.1
    );
    assert_eq!(plug_ws.expect("ack", WAIT).await["seq"], 1);
    for ws in &mut good_ws {
        assert_eq!(ws.expect("ack", WAIT).await["seq"], 1);
    }
    let refused = bad_ws.expect("error", WAIT).await;
    assert_eq!(refused["code"], "not_stored");
    let batches_failed = app.metric("podo_persister_batches_failed_total").await;
    assert!(batches_failed >= 1.0, "the shared batch failed first");

    // Durable: after a restart, every good family has its message and its grapes.
    drop((plug_ws, bad_ws, good_ws));
    app.restart().await;
    for fam in &good {
        assert_eq!(history_seqs(&app, &fam.child.token).await, vec![1]);
        assert_eq!(app.board(&fam.child.token).await["granted"], 2);
    }
    assert!(history_seqs(&app, &bad.child.token).await.is_empty());
    assert_eq!(app.board(&bad.child.token).await["granted"], 0);
}

// ---------------------------------------------------------------------------------------------
// 3. No panic from input: dates at chrono's ends.

#[actix_web::test]
async fn calendar_and_mission_dates_at_the_ends_are_refused_not_panicked_on() {
    let app = spawn_app().await;
    let fam = app.family("lim_dates").await;
    let token = &fam.parent.token;
    for query in [
        "from=%2B262142-12-31&to=%2B262142-12-31",
        "from=-262143-01-01&to=-262143-01-01",
        "from=%2B262142-12-30&to=%2B262142-12-31",
        "from=9999-12-31&to=%2B10000-01-01",
        "from=2026-12-01&to=2026-12-01%00",
        "from=99999999999999999999&to=1",
    ] {
        let (status, body) = app.get(&format!("/api/calendar?{query}"), token).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{query}: {body}"
        );
        assert!(body["fields"].is_object(), "{query}: {body}");
    }
    // The last and first days API.md's YYYY-MM-DD can write are fine.
    for query in [
        "from=9999-12-31&to=9999-12-31",
        "from=0000-01-01&to=0000-12-31",
    ] {
        let (status, body) = app.get(&format!("/api/calendar?{query}"), token).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
    for query in ["from=%2B262142-12-31", "to=-262143-01-01", "from=2026-1-1"] {
        let (status, body) = app.get(&format!("/api/missions?{query}"), token).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            "{query}: {body}"
        );
    }
    let (status, body) = app
        .post(
            "/api/missions",
            token,
            json!({"title": "far", "due_on": "+262142-12-31"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"]["due_on"], "a date YYYY-MM-DD");
    let (status, body) = app
        .post(
            "/api/missions",
            token,
            json!({"title": "last day", "due_on": "9999-12-31"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .get("/api/calendar?from=9999-01-01&to=9999-12-31", token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["days"][0]["date"], "9999-12-31");
    // Still serving.
    let (status, _) = app.get("/api/missions", token).await;
    assert_eq!(status, StatusCode::OK);
}

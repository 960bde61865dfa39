use std::time::Duration;

use awc::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestFamily, WsEnd, error_code, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

async fn history(app: &crate::helpers::TestApp, token: &str, query: &str) -> Value {
    let (status, body) = app.get(&format!("/api/chat/messages{query}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn seqs(body: &Value) -> Vec<i64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[actix_web::test]
async fn parent_and_child_chat_both_ways_in_order() {
    let app = spawn_app().await;
    let fam = app.family("chat_pair").await;
    let (mut parent, hello) = app.ws(&fam.parent.token).await;
    assert_eq!(hello["family_id"], fam.id);
    assert_eq!(hello["user_id"], fam.parent.id);
    assert_eq!(hello["last_seq"], 0);
    assert_eq!(hello["present"], json!([fam.parent.id]));
    let (mut child, hello) = app.ws(&fam.child.token).await;
    let mut present: Vec<i64> = serde_json::from_value(hello["present"].clone()).unwrap();
    present.sort();
    assert_eq!(present, vec![fam.parent.id, fam.child.id]);
    let entered = parent.expect("presence", WAIT).await;
    assert_eq!(
        (entered["user_id"].as_i64(), entered["present"].as_bool()),
        (Some(fam.child.id), Some(true))
    );

    parent.send_message("p-1", "밥 먹었니?").await;
    let ack = parent.next_frame(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["client_id"].as_str(),
            ack["seq"].as_i64()
        ),
        (Some("ack"), Some("p-1"), Some(1))
    );
    let own = parent.expect("message", WAIT).await;
    let got = child.expect("message", WAIT).await;
    assert_eq!(own, got);
    assert_eq!(
        (got["seq"].as_i64(), got["sender_id"].as_i64()),
        (Some(1), Some(fam.parent.id))
    );
    assert_eq!(
        (got["text"].as_str(), got["sender_name"].as_str()),
        (Some("밥 먹었니?"), Some("chat_pair_p"))
    );
    assert!(got["created_at"].as_str().unwrap().ends_with('Z'));

    child.send_message("c-1", "네! 🍇").await;
    assert_eq!(child.expect("ack", WAIT).await["seq"], 2);
    assert_eq!(parent.expect("message", WAIT).await["text"], "네! 🍇");

    let body = history(&app, &fam.child.token, "").await;
    assert_eq!(seqs(&body), vec![1, 2]);
    assert_eq!(body["last_seq"], 2);
    assert_eq!(body["messages"][0], own);
}

#[actix_web::test]
async fn the_ack_comes_after_the_row_is_committed() {
    let app = spawn_app().await;
    let fam = app.family("chat_ack").await;
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    let (mut ws, _) = app.ws(&fam.child.token).await;
    for i in 0..10 {
        let client_id = format!("ack-{i}");
        ws.send_message(&client_id, "is it stored?").await;
        let ack = ws.expect("ack", WAIT).await;
        let seq = ack["seq"].as_i64().unwrap();
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let row = podo::store::entities::message::Entity::find()
            .filter(podo::store::entities::message::Column::FamilyId.eq(fam.id))
            .filter(podo::store::entities::message::Column::Seq.eq(seq))
            .one(&db.read)
            .await
            .unwrap();
        assert_eq!(row.map(|r| r.client_id), Some(client_id));
    }
}

#[actix_web::test]
async fn a_resent_client_id_acks_the_original_and_stores_nothing() {
    let app = spawn_app().await;
    let fam = app.family("chat_dup").await;
    let (mut child, _) = app.ws(&fam.child.token).await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    child.send_message("same", "first").await;
    assert_eq!(child.expect("ack", WAIT).await["seq"], 1);
    // Again on the same socket, and from another tab of the same user.
    child.send_message("same", "first").await;
    assert_eq!(child.expect("ack", WAIT).await["seq"], 1);
    let (mut tab, _) = app.ws(&fam.child.token).await;
    tab.send_message("same", "first").await;
    assert_eq!(tab.expect("ack", WAIT).await["seq"], 1);
    // The parent may use the same client id for their own message.
    parent.send_message("same", "mine").await;
    // Everything up to the parent's ack (a commit may take longer than QUIET on a busy
    // machine), then whatever else comes.
    let mut frames = Vec::new();
    loop {
        match parent.next_frame(WAIT).await {
            Ok(Some(frame)) => {
                let acked = frame["type"] == "ack";
                frames.push(frame);
                if acked {
                    break;
                }
            }
            other => panic!("no ack for the parent's message: {other:?} after {frames:?}"),
        }
    }
    frames.extend(parent.drain(QUIET).await);
    let acks: Vec<_> = frames.iter().filter(|f| f["type"] == "ack").collect();
    assert_eq!((acks.len(), &acks[0]["seq"]), (1, &json!(2)));
    let messages: Vec<_> = frames.iter().filter(|f| f["type"] == "message").collect();
    assert_eq!(
        messages.len(),
        2,
        "the partner saw each message once: {frames:?}"
    );
    assert_eq!(
        seqs(&history(&app, &fam.parent.token, "").await),
        vec![1, 2]
    );
}

#[actix_web::test]
async fn text_bounds_unicode_and_bad_frames_keep_the_connection() {
    let app = spawn_app().await;
    let fam = app.family("chat_text").await;
    let (mut ws, _) = app.ws(&fam.child.token).await;
    let longest = "포".repeat(2000);
    ws.send_message("long", &longest).await;
    ws.expect("ack", WAIT).await;
    assert_eq!(
        ws.expect("message", WAIT).await["text"].as_str(),
        Some(longest.as_str())
    );

    ws.send_message("too-long", &"포".repeat(2001)).await;
    let error = ws.expect("error", WAIT).await;
    assert_eq!(error["code"], "text_too_long");
    ws.send_text("{not json".into()).await;
    assert_eq!(ws.expect("error", WAIT).await["code"], "invalid_frame");
    ws.send_json(json!({"type": "shout", "text": "x"})).await;
    assert_eq!(ws.expect("error", WAIT).await["code"], "invalid_frame");
    ws.send_json(json!({"type": "send", "client_id": "", "text": "x"}))
        .await;
    assert_eq!(ws.expect("error", WAIT).await["code"], "invalid_client_id");
    ws.send_json(json!({"type": "send", "client_id": "e", "text": ""}))
        .await;
    assert_eq!(ws.expect("error", WAIT).await["code"], "text_empty");

    // Still open: emoji, Korean and combining characters come back exactly.
    let text = "엄마 사랑해요 👨‍👩‍👧 café ñ 🍇🍇";
    ws.send_message("unicode", text).await;
    assert_eq!(ws.expect("ack", WAIT).await["seq"], 2);
    assert_eq!(ws.expect("message", WAIT).await["text"], text);
    let body = history(&app, &fam.parent.token, "").await;
    assert_eq!(body["messages"][0]["text"].as_str(), Some(longest.as_str()));
    assert_eq!(body["messages"][1]["text"], text);
}

#[actix_web::test]
async fn a_frame_over_64_kib_closes_with_1009() {
    let app = spawn_app().await;
    let fam = app.family("chat_big").await;
    let (mut ws, _) = app.ws(&fam.child.token).await;
    let text = "x".repeat(70 * 1024);
    ws.send_json(json!({"type": "send", "client_id": "big", "text": text}))
        .await;
    assert_eq!(ws.ended(WAIT).await, Some(WsEnd::Closed(Some(1009))));
    assert_eq!(
        seqs(&history(&app, &fam.child.token, "").await),
        Vec::<i64>::new()
    );
}

#[actix_web::test]
async fn resume_after_a_disconnect_delivers_exactly_the_missed_messages() {
    let app = spawn_app().await;
    let fam = app.family("chat_resume").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let (mut child, _) = app.ws(&fam.child.token).await;
    for i in 1..=3 {
        parent
            .send_message(&format!("a{i}"), &format!("before {i}"))
            .await;
        parent.expect("ack", WAIT).await;
    }
    let mut last = 0;
    while last < 3 {
        last = child.expect("message", WAIT).await["seq"].as_i64().unwrap();
    }
    drop(child);
    for i in 1..=4 {
        parent
            .send_message(&format!("b{i}"), &format!("missed {i}"))
            .await;
        parent.expect("ack", WAIT).await;
    }
    let (mut child, hello) = app.ws(&fam.child.token).await;
    assert_eq!(hello["last_seq"], 7);
    child
        .send_json(json!({"type": "resume", "after_seq": last}))
        .await;
    // Live messages during the resume come in order after the missed ones, once each.
    parent.send_message("live", "while resuming").await;
    let mut got = Vec::new();
    loop {
        let frame = child.next_frame(WAIT).await.unwrap().expect("a frame");
        match frame["type"].as_str() {
            Some("message") => got.push(frame["seq"].as_i64().unwrap()),
            Some("resumed") => {
                assert_eq!(frame["last_seq"].as_i64(), got.last().copied());
                break;
            }
            _ => {}
        }
    }
    for frame in child.drain(QUIET).await {
        if frame["type"] == "message" {
            got.push(frame["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(got, vec![4, 5, 6, 7, 8]);
}

#[actix_web::test]
async fn presence_counts_visible_tabs() {
    let app = spawn_app().await;
    let fam = app.family("chat_presence").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let (mut tab1, _) = app.ws(&fam.child.token).await;
    assert_eq!(
        parent.expect("presence", WAIT).await,
        json!({"type": "presence", "user_id": fam.child.id, "present": true})
    );
    let (tab2, _) = app.ws(&fam.child.token).await;
    // A second tab is no news; closing one of two tabs leaves the child present.
    drop(tab2);
    assert!(
        parent
            .drain(QUIET)
            .await
            .iter()
            .all(|f| f["type"] != "presence")
    );
    // A hidden tab is not in the room.
    tab1.send_json(json!({"type": "visibility", "visible": false}))
        .await;
    assert_eq!(parent.expect("presence", WAIT).await["present"], false);
    tab1.send_json(json!({"type": "visibility", "visible": true}))
        .await;
    assert_eq!(parent.expect("presence", WAIT).await["present"], true);
    // Hidden sessions still get every message.
    tab1.send_json(json!({"type": "visibility", "visible": false}))
        .await;
    parent.expect("presence", WAIT).await;
    parent.send_message("hi", "숨어도 받아요").await;
    assert_eq!(tab1.expect("message", WAIT).await["text"], "숨어도 받아요");
    drop(tab1);
    let (_, hello) = app.ws(&fam.parent.token).await;
    assert_eq!(hello["present"], json!([fam.parent.id]));
    let (mut child, _) = app.ws(&fam.child.token).await;
    assert_eq!(parent.expect("presence", WAIT).await["present"], true);
    drop(child.drain(Duration::ZERO).await);
    drop(child);
    assert_eq!(
        parent.expect("presence", WAIT).await,
        json!({"type": "presence", "user_id": fam.child.id, "present": false})
    );
}

#[actix_web::test]
async fn other_families_neither_read_nor_write_our_room() {
    let app = spawn_app().await;
    let ours = app.family("chat_ours").await;
    let theirs = app.family("chat_theirs").await;
    let (mut us, _) = app.ws(&ours.parent.token).await;
    let (mut them, hello) = app.ws(&theirs.child.token).await;
    assert_eq!(hello["family_id"], theirs.id);
    us.send_message("secret", "우리끼리").await;
    us.expect("ack", WAIT).await;
    them.send_message("theirs", "their own").await;
    assert_eq!(
        them.expect("ack", WAIT).await["seq"],
        1,
        "their room has its own seqs"
    );
    let frames = them.drain(QUIET).await;
    assert!(frames.iter().all(|f| f["text"] != "우리끼리"), "{frames:?}");
    let body = history(&app, &theirs.parent.token, "").await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["text"], "their own");
}

#[actix_web::test]
async fn auth_and_family_are_checked_before_the_upgrade() {
    let app = spawn_app().await;
    let lonely = app.member("chat_lonely", "child").await;
    let (status, body) = app
        .request(
            "GET",
            &format!("/api/chat/ws?access_token={}", lonely.token),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "not_in_family")
    );
    let (status, body) = app
        .request("GET", "/api/chat/ws?access_token=forged", None, None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = app
        .request("GET", "/api/chat/messages", Some(&lonely.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "not_in_family")
    );
}

#[actix_web::test]
async fn a_client_that_never_pongs_is_dropped() {
    let app = spawn_app_with(|c| {
        c.timing.ws_ping_secs = 1;
        c.timing.ws_timeout_secs = 2;
    })
    .await;
    let fam = app.family("chat_pong").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let (mut silent, _) = app.ws(&fam.child.token).await;
    silent.answer_pings = false;
    parent.expect("presence", WAIT).await;
    // The parent keeps reading (and so answering pings) while the silent client is dropped.
    let (ended, left) = futures_util::join!(
        silent.ended(Duration::from_secs(6)),
        parent.expect("presence", Duration::from_secs(6))
    );
    assert!(ended.is_some(), "the silent client was dropped");
    assert_eq!(left["present"], false);
    // The parent, who answers pings, is still connected.
    parent.send_message("still", "here").await;
    assert_eq!(parent.expect("ack", WAIT).await["seq"], 1);
}

#[actix_web::test]
async fn twenty_concurrent_senders_get_gapless_unique_seqs() {
    let app = spawn_app().await;
    let fam = app.family("chat_many").await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let token = if i % 2 == 0 {
            &fam.parent.token
        } else {
            &fam.child.token
        };
        clients.push(app.ws(token).await.0);
    }
    let sends = clients.iter_mut().enumerate().map(|(i, ws)| async move {
        let mut acked = Vec::new();
        for j in 0..10 {
            ws.send_message(&format!("s{i}-{j}"), &format!("{i}/{j}"))
                .await;
        }
        while acked.len() < 10 {
            let frame = ws.next_frame(WAIT).await.unwrap().expect("frame");
            if frame["type"] == "ack" {
                acked.push(frame["seq"].as_i64().unwrap());
            }
        }
        acked
    });
    let mut all: Vec<i64> = join_all(sends).await.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = history(
            &app,
            &fam.parent.token,
            &format!("?after_seq={after}&limit=200"),
        )
        .await;
        let got = seqs(&page);
        if got.is_empty() {
            break;
        }
        after = *got.last().unwrap();
        stored.extend(got);
    }
    assert_eq!(stored, (1..=200).collect::<Vec<_>>());
}

#[actix_web::test]
async fn acknowledged_messages_survive_a_restart_and_shutdown_closes_with_1001() {
    let mut app = spawn_app().await;
    let fam: TestFamily = app.family("chat_restart").await;
    let (mut ws, _) = app.ws(&fam.child.token).await;
    for i in 0..30 {
        ws.send_message(&format!("r{i}"), &format!("message {i}"))
            .await;
    }
    let mut acked = 0;
    while acked < 30 {
        if ws.next_frame(WAIT).await.unwrap().expect("frame")["type"] == "ack" {
            acked += 1;
        }
    }
    app.restart().await;
    assert_eq!(ws.ended(WAIT).await, Some(WsEnd::Closed(Some(1001))));
    let body = history(&app, &fam.parent.token, "?limit=200").await;
    assert_eq!(seqs(&body), (1..=30).collect::<Vec<_>>());
    let (mut again, hello) = app.ws(&fam.child.token).await;
    assert_eq!(hello["last_seq"], 30);
    again.send_message("r0", "message 0").await;
    assert_eq!(
        again.expect("ack", WAIT).await["seq"],
        1,
        "client ids survive the restart"
    );
}

#[actix_web::test]
async fn history_pages_forward_and_back() {
    let app = spawn_app().await;
    let fam = app.family("chat_pages").await;
    let (mut ws, _) = app.ws(&fam.child.token).await;
    for i in 1..=12 {
        ws.send_message(&format!("h{i}"), &format!("{i}")).await;
        ws.expect("ack", WAIT).await;
    }
    let token = &fam.parent.token;
    assert_eq!(
        seqs(&history(&app, token, "?limit=5").await),
        vec![8, 9, 10, 11, 12]
    );
    assert_eq!(
        seqs(&history(&app, token, "?before_seq=8&limit=5").await),
        vec![3, 4, 5, 6, 7]
    );
    assert_eq!(
        seqs(&history(&app, token, "?before_seq=3&limit=5").await),
        vec![1, 2]
    );
    assert_eq!(
        seqs(&history(&app, token, "?after_seq=10").await),
        vec![11, 12]
    );
    assert_eq!(history(&app, token, "?after_seq=10").await["last_seq"], 12);
    for bad in [
        "?limit=0",
        "?limit=201",
        "?after_seq=1&before_seq=5",
        "?after_seq=abc",
    ] {
        let (status, _) = app.get(&format!("/api/chat/messages{bad}"), token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[actix_web::test]
async fn messages_between_hello_and_resume_arrive_once_and_in_order() {
    let app = spawn_app().await;
    let fam = app.family("chat_join_race").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    for i in 1..=3 {
        parent.send_message(&format!("early{i}"), "early").await;
        parent.expect("ack", WAIT).await;
    }
    // The child reconnects having seen only seq 1; two more messages commit right after its
    // hello, before its resume reaches the server.
    let (mut child, hello) = app.ws(&fam.child.token).await;
    assert_eq!(hello["last_seq"], 3);
    for i in 4..=5 {
        parent.send_message(&format!("late{i}"), "late").await;
        parent.expect("ack", WAIT).await;
    }
    child
        .send_json(json!({"type": "resume", "after_seq": 1}))
        .await;
    let mut got = Vec::new();
    loop {
        let frame = child.next_frame(WAIT).await.unwrap().expect("a frame");
        match frame["type"].as_str() {
            Some("message") => got.push(frame["seq"].as_i64().unwrap()),
            Some("resumed") => break,
            _ => {}
        }
    }
    for frame in child.drain(QUIET).await {
        if frame["type"] == "message" {
            got.push(frame["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(got, vec![2, 3, 4, 5]);
}

#[actix_web::test]
async fn a_client_that_never_resumes_still_gets_live_messages() {
    let app = spawn_app().await;
    let fam = app.family("chat_passive").await;
    let (mut parent, _) = app.ws(&fam.parent.token).await;
    let (mut child, _) = app.ws(&fam.child.token).await;
    parent.send_message("p1", "hello").await;
    assert_eq!(child.expect("message", WAIT).await["seq"], 1);
    parent.send_message("p2", "again").await;
    assert_eq!(child.expect("message", WAIT).await["seq"], 2);
}

#[actix_web::test]
async fn two_servers_on_one_database_keep_seqs_gapless() {
    let app_a = spawn_app().await;
    let fam = app_a.family("chat_two_nodes").await;
    let app_b = crate::helpers::spawn_app_with(|c| *c = app_a.config.clone()).await;
    let (mut on_a, _) = app_a.ws(&fam.parent.token).await;
    let (mut on_b, _) = app_b.ws(&fam.child.token).await;
    // Each server's room believes it knows the last seq; every other message proves it wrong.
    let mut acked = Vec::new();
    for i in 0..10 {
        let ws = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        ws.send_message(&format!("n{i}"), &format!("from node {}", i % 2))
            .await;
        acked.push(ws.expect("ack", WAIT).await["seq"].as_i64().unwrap());
    }
    assert_eq!(acked, (1..=10).collect::<Vec<_>>());
    let body = history(&app_a, &fam.parent.token, "?limit=50").await;
    assert_eq!(seqs(&body), (1..=10).collect::<Vec<_>>());
}

//! Actors that panic (a FamilyBoard, a ChatRoom, the Persister): the waiter gets 500 `internal`,
//! other families are unaffected, the sessions of the crashed actor end so their clients
//! reconnect, a fresh actor serves the next request with the committed state, and
//! `podo_actor_restarts_total` counts it. The panics are injected through the test-only hook.
use std::time::Duration;

use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{WsEnd, error_code, spawn_app};

const WAIT: Duration = Duration::from_secs(10);

#[actix_web::test]
async fn a_panicking_family_board_answers_500_ends_its_streams_and_is_replaced() {
    let app = spawn_app().await;
    let a = app.family("crash_a").await;
    let b = app.family("crash_b").await;
    app.open_board(&a, 31).await;
    app.open_board(&b, 31).await;
    let grant = json!({"count": 2});
    let (status, _) = app
        .post("/api/board/grant", &a.parent.token, grant.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut stream = app.sse(&a.child.token).await;
    let (version, _) = stream.next_board(WAIT).await.expect("the first event");

    app.panics.board_once(a.id);
    let (status, body) = app
        .post("/api/board/grant", &a.parent.token, grant.clone())
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(error_code(&body), "internal");
    assert_eq!(
        app.wait_for_metric("podo_actor_restarts_total", 1.0).await,
        1.0
    );

    // The stream of the crashed board ends at once (EventSource reconnects); pings come only
    // every 15 s, so a stream that merely went quiet would take the whole wait.
    let started = std::time::Instant::now();
    while let Some(block) = stream.next_block(WAIT).await {
        assert!(
            block.board().is_none_or(|(v, _)| v == version),
            "no change was applied"
        );
    }
    assert!(
        started.elapsed() < WAIT,
        "the stream of the crashed board did not end"
    );

    // Another family never noticed; the crashed one is served by a fresh board with what was
    // committed (the grant that panicked was never applied).
    let (status, body) = app
        .post("/api/board/grant", &b.parent.token, grant.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut stream = app.sse(&a.child.token).await;
    let (_, shown) = stream.next_board(WAIT).await.expect("a fresh stream");
    assert_eq!(shown["board"]["granted"], 2);
    let (status, body) = app.post("/api/board/grant", &a.parent.token, grant).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["granted"], 4);
    let (_, shown) = stream.next_board(WAIT).await.expect("the change, live");
    assert_eq!(shown["board"]["granted"], 4);
}

#[actix_web::test]
async fn a_panicking_chat_room_closes_its_sockets_with_1011_and_resume_finds_every_message() {
    let app = spawn_app().await;
    let a = app.family("room_a").await;
    let b = app.family("room_b").await;
    let (mut child, _) = app.ws(&a.child.token).await;
    let (mut other, _) = app.ws(&b.child.token).await;
    child.send_message("m1", "before").await;
    assert_eq!(child.expect("ack", WAIT).await["seq"], 1);

    app.panics.room_once(a.id);
    child
        .send_message("m2", "the room panics on this one")
        .await;
    assert_eq!(child.ended(WAIT).await, Some(WsEnd::Closed(Some(1011))));
    assert_eq!(
        app.wait_for_metric("podo_actor_restarts_total", 1.0).await,
        1.0
    );

    // The other family's room is untouched.
    other.send_message("o1", "still here").await;
    assert_eq!(other.expect("ack", WAIT).await["seq"], 1);

    // The client reconnects to a fresh room, resumes, and sends again what was not acked.
    let (mut child, hello) = app.ws(&a.child.token).await;
    assert_eq!(hello["last_seq"], 1);
    child.send_message("m2", "sent again").await;
    let ack = child.expect("ack", WAIT).await;
    assert_eq!(ack["seq"], 2);
    let (status, history) = app.get("/api/chat/messages", &a.parent.token).await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<i64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(seqs, [1, 2]);
}

#[actix_web::test]
async fn a_panicking_persister_fails_its_waiters_with_500_and_is_restarted() {
    let app = spawn_app().await;
    let fam = app.family("persist").await;
    app.open_board(&fam, 31).await;
    let (mut chat, _) = app.ws(&fam.child.token).await;

    app.panics.persister_once();
    let grant = json!({"count": 1});
    let (status, body) = app
        .post("/api/board/grant", &fam.parent.token, grant.clone())
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(error_code(&body), "internal");
    assert_eq!(
        app.wait_for_metric("podo_actor_restarts_total", 1.0).await,
        1.0
    );

    // The next writes go to the fresh Persister: board and chat.
    let (status, body) = app.post("/api/board/grant", &fam.parent.token, grant).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["granted"], 1);
    chat.send_message("c1", "after the restart").await;
    assert_eq!(chat.expect("ack", WAIT).await["seq"], 1);
}

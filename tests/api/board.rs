use awc::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};

#[actix_web::test]
async fn the_whole_story_from_wish_to_gift_and_a_new_board() {
    let app = spawn_app().await;
    let fam = app.family("story").await;
    assert_eq!(app.board(&fam.parent.token).await, Value::Null);
    let wish_id = app.wish(&fam.child, "닌텐도").await;
    let (status, board) = app
        .post("/api/board", &fam.parent.token, json!({"wish_id": wish_id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{board}");
    assert_eq!(
        (
            board["size"].as_i64(),
            board["granted"].as_i64(),
            board["status"].as_str()
        ),
        (Some(31), Some(0), Some("active"))
    );
    assert_eq!(board["wish"]["status"], "picked");
    assert_eq!(board["version"], 1);

    for count in [10, 10, 5, 6] {
        let (status, board) = app
            .post(
                "/api/board/grant",
                &fam.parent.token,
                json!({"count": count}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{board}");
    }
    let (status, body) = app
        .post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "board_full")
    );
    let seen_by_child = app.board(&fam.child.token).await;
    assert_eq!(
        (
            seen_by_child["granted"].as_i64(),
            seen_by_child["unattached"].as_i64()
        ),
        (Some(31), Some(31))
    );

    let mut last = Value::Null;
    for i in 1..=31 {
        let (status, board) = app
            .request("POST", "/api/board/attach", Some(&fam.child.token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "attach {i}: {board}");
        assert_eq!(board["attached"].as_i64(), Some(i));
        last = board;
    }
    assert_eq!(last["status"], "complete");
    assert!(last["completed_at"].is_string());
    assert_eq!(last["wish"]["status"], "given");
    assert!(last["wish"]["given_at"].is_string());
    assert_eq!(last["version"], 1 + 4 + 31);
    assert_eq!(app.board(&fam.parent.token).await, last);
    let (status, body) = app
        .request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_board")
    );

    let (_, history) = app
        .get("/api/board/history?limit=3", &fam.child.token)
        .await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["completed", "attached", "attached"]);
    let (_, full) = app
        .get("/api/board/history?limit=500", &fam.parent.token)
        .await;
    assert_eq!(full["events"].as_array().unwrap().len(), 1 + 4 + 31 + 1);

    // The gift was given; a new board on a new wish is possible.
    let (_, wishes) = app.get("/api/wishes", &fam.child.token).await;
    assert_eq!(wishes["wishes"][0]["status"], "given");
    let next = app.open_board(&fam, 5).await;
    assert_eq!(
        (next["status"].as_str(), next["version"].as_i64()),
        (Some("active"), Some(37))
    );
}

#[actix_web::test]
async fn refusals_and_roles() {
    let app = spawn_app().await;
    let fam = app.family("refuse").await;
    let (status, body) = app
        .post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_board")
    );
    let (status, body) = app
        .request("DELETE", "/api/board", Some(&fam.parent.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_board")
    );
    let (status, body) = app
        .post("/api/board", &fam.parent.token, json!({"wish_id": 999_999}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let wish = app.wish(&fam.child, "w").await;
    for (body, field) in [
        (json!({"wish_id": wish, "size": 0}), "size"),
        (json!({"wish_id": wish, "size": 101}), "size"),
        (json!({}), "wish_id"),
    ] {
        let (status, answer) = app.post("/api/board", &fam.parent.token, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(answer["fields"][field].is_string(), "{answer}");
    }
    let (status, body) = app
        .post("/api/board", &fam.child.token, json!({"wish_id": wish}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    let (status, _) = app
        .post(
            "/api/board",
            &fam.parent.token,
            json!({"wish_id": wish, "size": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let other = app.wish(&fam.child, "other").await;
    let (status, body) = app
        .post("/api/board", &fam.parent.token, json!({"wish_id": other}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "board_exists")
    );

    for (count, field_error) in [(0, true), (101, true), (4, false)] {
        let (status, body) = app
            .post(
                "/api/board/grant",
                &fam.parent.token,
                json!({"count": count}),
            )
            .await;
        if field_error {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{count}");
        } else {
            assert_eq!(
                (status, error_code(&body)),
                (StatusCode::CONFLICT, "board_full")
            );
        }
    }
    let (status, body) = app
        .post("/api/board/grant", &fam.child.token, json!({"count": 1}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    let (status, body) = app
        .request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "nothing_to_attach")
    );
    let (status, body) = app
        .request("POST", "/api/board/attach", Some(&fam.parent.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    let (status, body) = app
        .post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": 1, "key": "k".repeat(65)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .get("/api/board/history?limit=0", &fam.parent.token)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .get("/api/board/history?limit=501", &fam.parent.token)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing refused above changed the board.
    let board = app.board(&fam.child.token).await;
    assert_eq!(
        (board["granted"].as_i64(), board["version"].as_i64()),
        (Some(0), Some(1))
    );

    let lonely = app.member("refuse_lonely", "parent").await;
    let (status, body) = app.get("/api/board", &lonely.token).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "not_in_family")
    );
}

#[actix_web::test]
async fn cancel_frees_the_wish_and_shows_the_last_completed_board() {
    let app = spawn_app().await;
    let fam = app.family("cancel").await;
    let done = app.open_board(&fam, 1).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    app.request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    let second = app.open_board(&fam, 4).await;
    let (status, _) = app
        .request("DELETE", "/api/board", Some(&fam.child.token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request("DELETE", "/api/board", Some(&fam.parent.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let shown = app.board(&fam.parent.token).await;
    assert_eq!(
        (shown["id"].clone(), shown["status"].as_str()),
        (done["id"].clone(), Some("complete"))
    );
    assert_eq!(
        shown["version"], 5,
        "create, grant, completing attach, create, cancel"
    );
    let (_, wishes) = app.get("/api/wishes", &fam.child.token).await;
    let freed = wishes["wishes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == second["wish"]["id"])
        .unwrap()
        .clone();
    assert_eq!(
        (freed["status"].as_str(), &freed["picked_at"]),
        (Some("wished"), &Value::Null)
    );
    // The freed wish can be picked again.
    let (status, _) = app
        .post(
            "/api/board",
            &fam.parent.token,
            json!({"wish_id": freed["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[actix_web::test]
async fn another_family_sees_and_touches_nothing() {
    let app = spawn_app().await;
    let ours = app.family("iso_a").await;
    let theirs = app.family("iso_b").await;
    app.open_board(&ours, 10).await;
    app.post("/api/board/grant", &ours.parent.token, json!({"count": 3}))
        .await;
    assert_eq!(app.board(&theirs.parent.token).await, Value::Null);
    let (status, body) = app
        .post(
            "/api/board/grant",
            &theirs.parent.token,
            json!({"count": 1}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_board")
    );
    let (_, history) = app.get("/api/board/history", &theirs.child.token).await;
    assert_eq!(history["events"], json!([]));
    assert_eq!(app.board(&ours.child.token).await["granted"], 3);
}

#[actix_web::test]
async fn a_repeated_key_gets_the_first_answer_also_after_a_restart() {
    let mut app = spawn_app().await;
    let fam = app.family("idem").await;
    app.open_board(&fam, 10).await;
    let (_, first) = app
        .post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": 3, "key": "grant-1"}),
        )
        .await;
    let (status, again) = app
        .post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": 3, "key": "grant-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    let (_, attach) = app
        .post(
            "/api/board/attach",
            &fam.child.token,
            json!({"key": "tap-1"}),
        )
        .await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;

    app.restart().await;
    let (status, replayed) = app
        .post(
            "/api/board/grant",
            &fam.parent.token,
            json!({"count": 3, "key": "grant-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, first);
    let (_, replayed) = app
        .post(
            "/api/board/attach",
            &fam.child.token,
            json!({"key": "tap-1"}),
        )
        .await;
    assert_eq!(replayed, attach);
    let board = app.board(&fam.child.token).await;
    assert_eq!(
        (board["granted"].as_i64(), board["attached"].as_i64()),
        (Some(4), Some(1))
    );
    // Keys belong to a user: the child may use the parent's key for their own action.
    let (_, own) = app
        .post(
            "/api/board/attach",
            &fam.child.token,
            json!({"key": "grant-1"}),
        )
        .await;
    assert_eq!(own["attached"], 2);
}

#[actix_web::test]
async fn fifty_parallel_grants_fill_exactly_thirty_one() {
    let app = spawn_app().await;
    let fam = app.family("race_grant").await;
    app.open_board(&fam, 31).await;
    let grants =
        (0..50).map(|_| app.post("/api/board/grant", &fam.parent.token, json!({"count": 1})));
    let results = join_all(grants).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let full = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && error_code(b) == "board_full")
        .count();
    assert_eq!((ok, full), (31, 19));
    let mut versions: Vec<i64> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        (2..=32).collect::<Vec<_>>(),
        "every grant got its own version"
    );
    assert_eq!(app.board(&fam.child.token).await["granted"], 31);

    let attaches =
        (0..40).map(|_| app.request("POST", "/api/board/attach", Some(&fam.child.token), None));
    let results = join_all(attaches).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let none = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && error_code(b) == "nothing_to_attach")
        .count();
    let gone = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::NOT_FOUND && error_code(b) == "no_board")
        .count();
    assert_eq!(ok, 31);
    assert_eq!(none + gone, 9, "{results:?}");
    let board = app.board(&fam.parent.token).await;
    assert_eq!(
        (board["attached"].as_i64(), board["status"].as_str()),
        (Some(31), Some("complete"))
    );
}

#[actix_web::test]
async fn a_restart_keeps_every_acknowledged_change() {
    let mut app = spawn_app().await;
    let fam = app.family("durable").await;
    app.open_board(&fam, 50).await;
    let grants =
        (0..20).map(|_| app.post("/api/board/grant", &fam.parent.token, json!({"count": 2})));
    let acked = join_all(grants)
        .await
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(acked, 20);
    for _ in 0..7 {
        app.request("POST", "/api/board/attach", Some(&fam.child.token), None)
            .await;
    }
    let before = app.board(&fam.parent.token).await;
    app.restart().await;
    let after = app.board(&fam.parent.token).await;
    assert_eq!(after, before);
    assert_eq!(
        (
            after["granted"].as_i64(),
            after["attached"].as_i64(),
            after["version"].as_i64()
        ),
        (Some(40), Some(7), Some(28))
    );
}

#[actix_web::test]
async fn two_servers_on_one_database_never_overwrite_each_other() {
    let app_a = spawn_app().await;
    let fam = app_a.family("two_nodes").await;
    let mut app_b = crate::helpers::spawn_app_with(|c| *c = app_a.config.clone()).await;
    app_b.config = app_a.config.clone();
    app_a.open_board(&fam, 100).await;
    // Both servers load the family, then take turns: each one's in-memory state is stale for
    // every other grant, which the version guard must catch and the actor must recover from.
    assert_eq!(app_b.board(&fam.parent.token).await["granted"], 0);
    for i in 0..10 {
        let app = if i % 2 == 0 { &app_a } else { &app_b };
        let (status, body) = app
            .post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
            .await;
        assert_eq!(status, StatusCode::OK, "grant {i}: {body}");
        assert_eq!(
            body["granted"],
            i + 1,
            "grant {i} saw the other server's grants"
        );
    }
    let (_, history) = app_a.get("/api/board/history", &fam.parent.token).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 11);
}

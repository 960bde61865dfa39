use std::time::Duration;

use awc::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestFamily, error_code, spawn_app, spawn_app_with};

async fn create(app: &TestApp, fam: &TestFamily, body: Value) -> Value {
    let (status, mission) = app.post("/api/missions", &fam.parent.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{mission}");
    mission
}

fn path(mission: &Value, action: &str) -> String {
    format!("/api/missions/{}{action}", mission["id"])
}

#[actix_web::test]
async fn the_whole_life_of_a_mission() {
    let app = spawn_app().await;
    let fam = app.family("mis_life").await;
    app.open_board(&fam, 31).await;
    let mission = create(
        &app,
        &fam,
        json!({"title": " 설거지하기 ", "reward": 3, "due_on": "2026-12-24"}),
    )
    .await;
    assert_eq!(
        (mission["title"].as_str(), mission["reward"].as_i64()),
        (Some("설거지하기"), Some(3))
    );
    assert_eq!(
        (mission["status"].as_str(), mission["due_on"].as_str()),
        (Some("open"), Some("2026-12-24"))
    );
    let (status, edited) = app
        .request(
            "PATCH",
            &path(&mission, ""),
            Some(&fam.parent.token),
            Some(json!({"reward": 4, "due_on": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (edited["reward"].as_i64(), &edited["due_on"]),
        (Some(4), &Value::Null)
    );

    let (status, submitted) = app
        .request(
            "POST",
            &path(&mission, "/submit"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(
        (status, submitted["status"].as_str()),
        (StatusCode::OK, Some("submitted"))
    );
    assert!(submitted["submitted_at"].is_string());
    let (status, rejected) = app
        .post(
            &path(&mission, "/reject"),
            &fam.parent.token,
            json!({"reason": "아직 그릇이 남았어요"}),
        )
        .await;
    assert_eq!(
        (status, rejected["status"].as_str()),
        (StatusCode::OK, Some("rejected"))
    );
    assert_eq!(rejected["reject_reason"], "아직 그릇이 남았어요");
    let (status, _) = app
        .request(
            "POST",
            &path(&mission, "/submit"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a rejected mission may be submitted again"
    );

    let (status, approved) = app
        .request(
            "POST",
            &path(&mission, "/approve"),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["mission"]["status"], "approved");
    assert!(approved["mission"]["decided_at"].is_string());
    assert_eq!(
        (
            approved["board"]["granted"].as_i64(),
            approved["board"]["version"].as_i64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(app.board(&fam.child.token).await, approved["board"]);
    let (_, history) = app
        .get("/api/board/history?limit=1", &fam.child.token)
        .await;
    assert_eq!(
        (
            history["events"][0]["kind"].as_str(),
            history["events"][0]["count"].as_i64()
        ),
        (Some("granted"), Some(4))
    );

    let (_, list) = app
        .get("/api/missions?status=approved", &fam.child.token)
        .await;
    assert_eq!(list["missions"].as_array().unwrap().len(), 1);
    let (_, list) = app.get("/api/missions?status=open", &fam.child.token).await;
    assert_eq!(list["missions"], json!([]));
}

#[actix_web::test]
async fn refusals_roles_and_other_families() {
    let app = spawn_app().await;
    let fam = app.family("mis_refuse").await;
    let other = app.family("mis_other").await;
    app.open_board(&fam, 31).await;
    let mission = create(&app, &fam, json!({"title": "방 청소"})).await;
    assert_eq!(mission["reward"], 1, "the default reward");

    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "x".repeat(201)}), "title"),
        (json!({"title": "ok", "reward": 0}), "reward"),
        (json!({"title": "ok", "reward": 101}), "reward"),
        (json!({"title": "ok", "due_on": "2026-13-01"}), "due_on"),
    ] {
        let (status, answer) = app.post("/api/missions", &fam.parent.token, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(answer["fields"][field].is_string(), "{answer}");
    }
    let (status, body) = app
        .post("/api/missions", &fam.child.token, json!({"title": "x"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    let (status, body) = app
        .request(
            "POST",
            &path(&mission, "/submit"),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    let (status, body) = app
        .request(
            "POST",
            &path(&mission, "/approve"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );

    // Not submitted yet: approve and reject are refused.
    for action in ["/approve", "/reject"] {
        let (status, body) = app
            .request(
                "POST",
                &path(&mission, action),
                Some(&fam.parent.token),
                None,
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::CONFLICT, "mission_locked"),
            "{action}"
        );
    }
    app.request(
        "POST",
        &path(&mission, "/submit"),
        Some(&fam.child.token),
        None,
    )
    .await;
    let (status, body) = app
        .request(
            "PATCH",
            &path(&mission, ""),
            Some(&fam.parent.token),
            Some(json!({"title": "y"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "mission_locked")
    );
    let (status, body) = app
        .request(
            "POST",
            &path(&mission, "/submit"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "mission_locked")
    );
    let (status, _) = app
        .request(
            "POST",
            &path(&mission, "/approve"),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, action, token) in [
        ("POST", "/approve", &fam.parent.token),
        ("POST", "/reject", &fam.parent.token),
        ("POST", "/submit", &fam.child.token),
        ("PATCH", "", &fam.parent.token),
        ("DELETE", "", &fam.parent.token),
    ] {
        let body = (method == "PATCH").then(|| json!({"title": "z"}));
        let (status, answer) = app
            .request(method, &path(&mission, action), Some(token), body)
            .await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::CONFLICT, "mission_locked"),
            "{method} {action}"
        );
    }

    // Another family's mission does not exist for us.
    let theirs = create(&app, &other, json!({"title": "theirs"})).await;
    for (method, action, token) in [
        ("POST", "/submit", &fam.child.token),
        ("POST", "/approve", &fam.parent.token),
        ("DELETE", "", &fam.parent.token),
    ] {
        let (status, body) = app
            .request(method, &path(&theirs, action), Some(token), None)
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{method} {action}"
        );
    }
    let (_, ours) = app.get("/api/missions", &fam.parent.token).await;
    assert!(
        ours["missions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["title"] != "theirs")
    );

    let deletable = create(&app, &fam, json!({"title": "지울 미션"})).await;
    let (status, _) = app
        .request(
            "DELETE",
            &path(&deletable, ""),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[actix_web::test]
async fn twenty_concurrent_approves_grant_once() {
    let app = spawn_app().await;
    let fam = app.family("mis_race").await;
    app.open_board(&fam, 31).await;
    let mission = create(&app, &fam, json!({"title": "숙제", "reward": 5})).await;
    app.request(
        "POST",
        &path(&mission, "/submit"),
        Some(&fam.child.token),
        None,
    )
    .await;
    let approve = path(&mission, "/approve");
    let approves = (0..20).map(|_| app.request("POST", &approve, Some(&fam.parent.token), None));
    let results = join_all(approves).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let locked = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && error_code(b) == "mission_locked")
        .count();
    assert_eq!((ok, locked), (1, 19));
    assert_eq!(app.board(&fam.child.token).await["granted"], 5);
}

#[actix_web::test]
async fn approving_onto_a_full_or_missing_board_changes_nothing() {
    let app = spawn_app().await;
    let fam = app.family("mis_full").await;
    let mission = create(&app, &fam, json!({"title": "빨래", "reward": 3})).await;
    app.request(
        "POST",
        &path(&mission, "/submit"),
        Some(&fam.child.token),
        None,
    )
    .await;
    let (status, body) = app
        .request(
            "POST",
            &path(&mission, "/approve"),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "no_board")
    );
    app.open_board(&fam, 4).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 2}))
        .await;
    let (status, body) = app
        .request(
            "POST",
            &path(&mission, "/approve"),
            Some(&fam.parent.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "board_full")
    );
    let (_, list) = app.get("/api/missions", &fam.parent.token).await;
    assert_eq!(
        list["missions"][0]["status"], "submitted",
        "the mission stays submitted"
    );
    assert_eq!(app.board(&fam.parent.token).await["granted"], 2);
}

#[actix_web::test]
async fn the_live_board_shows_an_approvals_grant() {
    let app = spawn_app().await;
    let fam = app.family("mis_sse").await;
    app.open_board(&fam, 31).await;
    let mission = create(&app, &fam, json!({"title": "신발 정리", "reward": 2})).await;
    app.request(
        "POST",
        &path(&mission, "/submit"),
        Some(&fam.child.token),
        None,
    )
    .await;
    let mut stream = app.sse(&fam.child.token).await;
    assert_eq!(
        stream.next_board(Duration::from_secs(5)).await.map(|b| b.0),
        Some(1)
    );
    app.request(
        "POST",
        &path(&mission, "/approve"),
        Some(&fam.parent.token),
        None,
    )
    .await;
    let (version, data) = stream
        .next_board(Duration::from_secs(5))
        .await
        .expect("the approval's event");
    assert_eq!((version, data["board"]["granted"].as_i64()), (2, Some(2)));
}

#[actix_web::test]
async fn missions_filter_by_due_date_and_the_calendar_buckets_in_seoul_time() {
    let app = spawn_app_with(|c| c.timezone = "Asia/Seoul".into()).await;
    let fam = app.family("mis_cal").await;
    app.open_board(&fam, 31).await;
    let due = create(&app, &fam, json!({"title": "due", "due_on": "2026-12-01"})).await;
    let later = create(
        &app,
        &fam,
        json!({"title": "later", "due_on": "2026-12-20"}),
    )
    .await;
    let approved = create(&app, &fam, json!({"title": "approved"})).await;
    app.request(
        "POST",
        &path(&approved, "/submit"),
        Some(&fam.child.token),
        None,
    )
    .await;
    app.request(
        "POST",
        &path(&approved, "/approve"),
        Some(&fam.parent.token),
        None,
    )
    .await;
    let (_, list) = app
        .get(
            "/api/missions?from=2026-12-01&to=2026-12-10",
            &fam.parent.token,
        )
        .await;
    let ids: Vec<&Value> = list["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, vec![&due["id"]]);

    // Approved at 15:30Z on the 1st = 00:30 on the 2nd in Seoul. The API has no clock to turn,
    // so the test moves the decision time in the database.
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    use podo::store::entities::mission;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let at: chrono::DateTime<chrono::Utc> = "2026-12-01T15:30:00Z".parse().unwrap();
    mission::Entity::update_many()
        .col_expr(mission::Column::DecidedAt, at.into())
        .filter(mission::Column::Id.eq(approved["id"].as_i64().unwrap()))
        .exec(&db.write)
        .await
        .unwrap();
    let (status, calendar) = app
        .get(
            "/api/calendar?from=2026-12-01&to=2026-12-31",
            &fam.child.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{calendar}");
    assert_eq!(
        calendar["time_zone"], "Asia/Seoul",
        "clients learn which day is today"
    );
    assert_eq!(
        calendar["days"],
        json!([
            {"date": "2026-12-01", "missions_due": [due["id"]], "missions_approved": [], "gifts_given": []},
            {"date": "2026-12-02", "missions_due": [], "missions_approved": [approved["id"]], "gifts_given": []},
            {"date": "2026-12-20", "missions_due": [later["id"]], "missions_approved": [], "gifts_given": []},
        ])
    );
    let (_, first_only) = app
        .get(
            "/api/calendar?from=2026-12-01&to=2026-12-01",
            &fam.child.token,
        )
        .await;
    assert_eq!(
        first_only["days"].as_array().unwrap().len(),
        1,
        "the approval belongs to the 2nd"
    );

    for bad in [
        "?from=2026-12-02&to=2026-12-01",
        "?from=2026-01-01&to=2027-01-02",
        "?from=2026-01-01",
        "?from=x&to=y",
    ] {
        let (status, _) = app
            .get(&format!("/api/calendar{bad}"), &fam.child.token)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let (status, _) = app
        .get(
            "/api/calendar?from=2026-01-01&to=2027-01-01",
            &fam.child.token,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "366 days counting both ends is allowed; 367 is not"
    );
}

#[actix_web::test]
async fn a_gift_given_today_is_on_todays_calendar() {
    let app = spawn_app().await;
    let fam = app.family("mis_gift").await;
    let board = app.open_board(&fam, 1).await;
    app.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
        .await;
    app.request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .date_naive();
    let (_, calendar) = app
        .get(
            &format!("/api/calendar?from={today}&to={today}"),
            &fam.parent.token,
        )
        .await;
    assert_eq!(
        calendar["days"][0]["gifts_given"],
        json!([board["wish"]["id"]])
    );
}

use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, spawn_app};

#[actix_web::test]
async fn parent_invites_child_joins_and_both_see_the_family() {
    let app = spawn_app().await;
    let parent = app.member("mom_pair", "parent").await;
    let child = app.member("kid_pair", "child").await;
    let (status, invite) = app
        .post("/api/family/invite", &parent.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let code = invite["code"].as_str().unwrap();
    assert_eq!(code.len(), 8);
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)),
        "{code}"
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(invite["expires_at"].as_str().unwrap()).unwrap();
    let minutes = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!(
        (590..=600).contains(&minutes),
        "valid 10 minutes, got {minutes} s"
    );

    // Codes are accepted regardless of case and surrounding blanks.
    let typed = format!(" {} ", code.to_lowercase());
    let (status, family) = app
        .post("/api/family/join", &child.token, json!({"code": typed}))
        .await;
    assert_eq!(status, StatusCode::OK, "{family}");
    assert_eq!(family["parent"]["id"], parent.id);
    assert_eq!(family["child"]["id"], child.id);
    for token in [&parent.token, &child.token] {
        let (_, me) = app.get("/api/me", token).await;
        assert_eq!(me["family"], family);
    }
}

#[actix_web::test]
async fn invite_rules_roles_and_pairing_state() {
    let app = spawn_app().await;
    let fam = app.family("rules").await;
    let (status, body) = app
        .post("/api/family/invite", &fam.parent.token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_paired")
    );
    let (status, body) = app
        .post("/api/family/invite", &fam.child.token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
    // An empty body is fine for an endpoint without parameters.
    let lonely = app.member("lonely_p", "parent").await;
    let (status, _) = app
        .request("POST", "/api/family/invite", Some(&lonely.token), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[actix_web::test]
async fn used_voided_unknown_and_expired_codes_are_not_found() {
    let app = spawn_app().await;
    let parent = app.member("mom_codes", "parent").await;
    let first = app.invite(&parent).await;
    let second = app.invite(&parent).await;
    let kid = app.member("kid_codes", "child").await;
    for code in [first.as_str(), "ZZZZZZZZ", ""] {
        let (status, body) = app
            .post("/api/family/join", &kid.token, json!({"code": code}))
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "invite_not_found"),
            "{code}"
        );
    }
    let (status, _) = app
        .post("/api/family/join", &kid.token, json!({"code": second}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // A used code does not work twice, and a third user cannot join the family.
    let third = app.member("kid_third", "child").await;
    let (status, body) = app
        .post("/api/family/join", &third.token, json!({"code": second}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "invite_not_found")
    );
    // The child already in a family cannot join another.
    let other_parent = app.member("mom_other", "parent").await;
    let other_code = app.invite(&other_parent).await;
    let (status, body) = app
        .post("/api/family/join", &kid.token, json!({"code": other_code}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_paired")
    );
}

#[actix_web::test]
async fn expired_code_is_not_found() {
    let app = spawn_app().await;
    let parent = app.member("mom_exp", "parent").await;
    let kid = app.member("kid_exp", "child").await;
    let code = app.invite(&parent).await;
    // Age the invite in the database: the API has no clock to turn.
    let db = podo::store::Db::connect(&app.config.database_url())
        .await
        .unwrap();
    use podo::store::entities::invite;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    invite::Entity::update_many()
        .col_expr(
            invite::Column::ExpiresAt,
            (chrono::Utc::now() - chrono::Duration::seconds(1)).into(),
        )
        .filter(invite::Column::Code.eq(code.clone()))
        .exec(&db.write)
        .await
        .unwrap();
    let (status, body) = app
        .post("/api/family/join", &kid.token, json!({"code": code}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "invite_not_found")
    );
}

#[actix_web::test]
async fn a_parent_cannot_join() {
    let app = spawn_app().await;
    let parent = app.member("mom_a", "parent").await;
    let other = app.member("mom_b", "parent").await;
    let code = app.invite(&parent).await;
    let (status, body) = app
        .post("/api/family/join", &other.token, json!({"code": code}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
}

#[actix_web::test]
async fn concurrent_joins_with_one_code_have_exactly_one_winner() {
    let app = spawn_app().await;
    let parent = app.member("mom_race", "parent").await;
    let code = app.invite(&parent).await;
    let mut kids = Vec::new();
    for i in 0..8 {
        kids.push(app.member(&format!("kid_race{i}"), "child").await);
    }
    let joins = kids
        .iter()
        .map(|kid| app.post("/api/family/join", &kid.token, json!({"code": code})));
    let results = futures_util::future::join_all(joins).await;
    let winners = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let losers = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::NOT_FOUND && error_code(b) == "invite_not_found")
        .count();
    assert_eq!((winners, losers), (1, 7), "{results:?}");
    let (_, me) = app.get("/api/me", &parent.token).await;
    let child_id = me["family"]["child"]["id"].as_i64().unwrap();
    assert!(kids.iter().any(|k| k.id == child_id));
}

#[actix_web::test]
async fn ten_failed_joins_are_throttled() {
    let app = spawn_app().await;
    let kid = app.member("kid_guess", "child").await;
    for i in 0..10 {
        let (status, _) = app
            .post(
                "/api/family/join",
                &kid.token,
                json!({"code": format!("AAAAAAA{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let parent = app.member("mom_guess", "parent").await;
    let code = app.invite(&parent).await;
    let (status, body) = app
        .post("/api/family/join", &kid.token, json!({"code": code}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
}

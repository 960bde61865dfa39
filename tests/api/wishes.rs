use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, spawn_app};

#[actix_web::test]
async fn child_keeps_a_wishlist_that_the_parent_reads_newest_first() {
    let app = spawn_app().await;
    let fam = app.family("wl").await;
    let (status, first) = app
        .post("/api/wishes", &fam.child.token, json!({"name": "  자전거 ", "link": "https://shop.example/bike", "image_url": "http://img.example/b.png"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["name"], "자전거");
    assert_eq!(first["status"], "wished");
    assert_eq!(first["picked_at"], serde_json::Value::Null);
    let second = app.wish(&fam.child, "레고").await;
    for token in [&fam.parent.token, &fam.child.token] {
        let (status, body) = app.get("/api/wishes", token).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<i64> = body["wishes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![second, first["id"].as_i64().unwrap()]);
    }
}

#[actix_web::test]
async fn wish_fields_are_validated() {
    let app = spawn_app().await;
    let kid = app.member("wl_valid", "child").await;
    let long_url = format!("https://a.example/{}", "x".repeat(2048));
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({}), "name"),
        (json!({"name": "ok", "link": "ftp://x.example"}), "link"),
        (json!({"name": "ok", "link": "not a url"}), "link"),
        (json!({"name": "ok", "image_url": long_url}), "image_url"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/api/wishes", &kid.token, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(answer["fields"][field].is_string(), "{field}: {answer}");
    }
    let (status, _) = app
        .post("/api/wishes", &kid.token, json!({"name": "x".repeat(100)}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A child without a family keeps a wishlist too; a parent without one has none to read.
    let lonely_parent = app.member("wl_parent", "parent").await;
    let (status, body) = app.get("/api/wishes", &lonely_parent.token).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "not_in_family")
    );
    let (status, body) = app
        .post("/api/wishes", &lonely_parent.token, json!({"name": "x"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );
}

#[actix_web::test]
async fn child_edits_and_deletes_only_while_wished() {
    let app = spawn_app().await;
    let fam = app.family("wl_edit").await;
    let id = app.wish(&fam.child, "공").await;
    let path = format!("/api/wishes/{id}");
    let (status, body) = app
        .request(
            "PATCH",
            &path,
            Some(&fam.child.token),
            Some(json!({"name": "축구공", "link": "https://ball.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["link"].as_str()),
        (Some("축구공"), Some("https://ball.example"))
    );
    // null clears an optional field; an absent one stays.
    let (_, body) = app
        .request(
            "PATCH",
            &path,
            Some(&fam.child.token),
            Some(json!({"link": null})),
        )
        .await;
    assert_eq!(
        (body["name"].as_str(), &body["link"]),
        (Some("축구공"), &serde_json::Value::Null)
    );
    let (status, body) = app
        .request(
            "PATCH",
            &path,
            Some(&fam.parent.token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_role")
    );

    // Once picked for a board it is locked.
    let (status, _) = app
        .post("/api/board", &fam.parent.token, json!({"wish_id": id}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .request(
            "PATCH",
            &path,
            Some(&fam.child.token),
            Some(json!({"name": "y"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "wish_locked")
    );
    let (status, body) = app
        .request("DELETE", &path, Some(&fam.child.token), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "wish_locked")
    );

    let other = app.wish(&fam.child, "delete me").await;
    let (status, _) = app
        .request(
            "DELETE",
            &format!("/api/wishes/{other}"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .request(
            "DELETE",
            &format!("/api/wishes/{other}"),
            Some(&fam.child.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[actix_web::test]
async fn another_familys_wish_is_not_found() {
    let app = spawn_app().await;
    let ours = app.family("wl_ours").await;
    let theirs = app.family("wl_theirs").await;
    let their_wish = app.wish(&theirs.child, "theirs").await;
    let path = format!("/api/wishes/{their_wish}");
    let (status, body) = app
        .request(
            "PATCH",
            &path,
            Some(&ours.child.token),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = app
        .request("DELETE", &path, Some(&ours.child.token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post(
            "/api/board",
            &ours.parent.token,
            json!({"wish_id": their_wish}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (_, list) = app.get("/api/wishes", &ours.parent.token).await;
    assert_eq!(list["wishes"], json!([]));
    let (status, body) = app
        .request(
            "PATCH",
            "/api/wishes/abc",
            Some(&ours.child.token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

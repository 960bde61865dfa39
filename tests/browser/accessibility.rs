//! axe-core over every screen of the web client, for both roles, with content on each (a board
//! with waiting grapes, wishes, missions in every state, chat with a sticker, the celebration
//! dialog). Any serious or critical violation fails the test. The same walk saves the
//! screenshots of each screen (`target/screenshots/<role>-screen-<name>.png`; the ones in
//! `docs/` are these, shrunk).
use serde_json::json;

use crate::browser::{AxeResult, Browser, ChromeDriver, Result, axe_verdict};
use crate::helpers::{Member, TestApp, spawn_app};

#[actix_web::test]
async fn every_screen_passes_axe_for_both_roles() {
    let app = spawn_app().await;
    let driver = ChromeDriver::start();
    let parent = Browser::open(&driver, "parent", &app.base)
        .await
        .expect("parent browser");
    let child = Browser::open(&driver, "child", &app.base)
        .await
        .expect("child browser");
    let outcome = walk(&app, &parent, &child).await;
    parent.close().await;
    child.close().await;
    if let Err(error) = outcome {
        panic!(
            "{error} (screenshots in {})",
            crate::browser::screenshot_dir().display()
        );
    }
}

async fn check(results: &mut Vec<AxeResult>, browser: &Browser, screen: &str) -> Result {
    results.push(browser.axe(screen).await?);
    browser.screenshot(&format!("screen-{screen}")).await?;
    Ok(())
}

async fn walk(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    let mut results = Vec::new();

    // Signed out.
    parent.goto("/").await?;
    parent.wait_for("#login-form").await?;
    check(&mut results, parent, "login").await?;
    parent.goto("/#/signup").await?;
    parent.wait_for("#signup-form").await?;
    check(&mut results, parent, "signup").await?;

    // Signed in, not paired yet.
    let mom = app.member("a11y_mom", "parent").await;
    let kid = app.member("a11y_kid", "child").await;
    parent.sign_in_with(&mom.token).await?;
    parent.wait_for("#view[data-screen=pair]").await?;
    parent.click("#invite-button").await?;
    parent.wait_for("#invite-code").await?;
    check(&mut results, parent, "pairing").await?;
    child.sign_in_with(&kid.token).await?;
    child.wait_for("#join-form").await?;
    check(&mut results, child, "pairing").await?;

    let code = app.invite(&mom).await;
    let (status, body) = app
        .post("/api/family/join", &kid.token, json!({ "code": code }))
        .await;
    assert!(status.is_success(), "join: {body}");
    seed(app, &mom, &kid).await?;

    for browser in [parent, child] {
        browser.client.refresh().await?;
        browser.wait_for("#view[data-screen=board] #board").await?;
        check(&mut results, browser, "board").await?;
        browser.tab("wishes").await?;
        browser.wait_for("#wish-list .wish").await?;
        check(&mut results, browser, "wishes").await?;
        browser.tab("missions").await?;
        browser.wait_for("#mission-list .mission").await?;
        check(&mut results, browser, "missions").await?;
        browser.tab("calendar").await?;
        browser
            .wait_js(
                "document.querySelector('#month-grid')?.dataset.loaded !== 'false'",
                "the calendar loaded",
            )
            .await?;
        check(&mut results, browser, "calendar").await?;
    }

    // Chat: both in the room, a message each way and a sticker, the sticker tray open.
    parent.tab("chat").await?;
    child.tab("chat").await?;
    parent.wait_for("#partner-presence.online").await?;
    parent.fill("#chat-input", "지우야, 숙제 다 했니?").await?;
    parent.click("#chat-send").await?;
    child
        .wait_text(".bubble-row.theirs .text", "숙제 다 했니?")
        .await?;
    child.fill("#chat-input", "네! 다 했어요").await?;
    child.click("#chat-send").await?;
    child.click("#sticker-toggle").await?;
    child.click("[data-sticker=\"grape-happy.svg\"]").await?;
    parent.wait_for(".bubble-row.theirs img.sticker").await?;
    child.wait_count(".bubble-row.pending", 0).await?;
    check(&mut results, parent, "chat").await?;
    child.click("#sticker-toggle").await?;
    child.wait_for("#sticker-tray:not([hidden])").await?;
    check(&mut results, child, "chat").await?;
    child.click("#sticker-toggle").await?;

    // The celebration dialog, on both screens.
    parent.tab("board").await?;
    child.tab("board").await?;
    let board = app.board(&kid.token).await;
    let size = board["size"].as_u64().ok_or("board size")?;
    let granted = board["granted"].as_u64().ok_or("granted")?;
    let (status, body) = app
        .post(
            "/api/board/grant",
            &mom.token,
            json!({ "count": size - granted }),
        )
        .await;
    assert!(status.is_success(), "grant: {body}");
    let attached = board["attached"].as_u64().ok_or("attached")?;
    for _ in attached..size {
        let (status, body) = app.post("/api/board/attach", &kid.token, json!({})).await;
        assert!(status.is_success(), "attach: {body}");
    }
    for browser in [parent, child] {
        browser.wait_for("#celebration").await?;
        check(&mut results, browser, "celebration").await?;
    }

    axe_verdict(&results)
}

/// Something on every screen: two wishes (one the board's gift), a board of 10 with 4 granted and
/// 1 attached, missions open, submitted, rejected and approved.
async fn seed(app: &TestApp, mom: &Member, kid: &Member) -> Result {
    app.wish(kid, "레고 해적선").await;
    let bike = app.wish(kid, "파란 자전거").await;
    let (status, body) = app
        .post(
            "/api/board",
            &mom.token,
            json!({ "wish_id": bike, "size": 10 }),
        )
        .await;
    assert!(status.is_success(), "board: {body}");
    let (status, body) = app
        .post("/api/board/grant", &mom.token, json!({ "count": 4 }))
        .await;
    assert!(status.is_success(), "grant: {body}");
    let (status, body) = app.post("/api/board/attach", &kid.token, json!({})).await;
    assert!(status.is_success(), "attach: {body}");
    let mut ids = Vec::new();
    for (title, reward) in [
        ("방 정리하기", 1),
        ("설거지하기", 2),
        ("책 읽기", 1),
        ("분리수거", 1),
    ] {
        let (status, body) = app
            .post(
                "/api/missions",
                &mom.token,
                json!({ "title": title, "reward": reward }),
            )
            .await;
        assert!(status.is_success(), "mission: {body}");
        ids.push(body["id"].as_i64().ok_or("mission id")?);
    }
    for id in &ids[1..] {
        let (status, body) = app
            .post(&format!("/api/missions/{id}/submit"), &kid.token, json!({}))
            .await;
        assert!(status.is_success(), "submit: {body}");
    }
    let (status, body) = app
        .post(
            &format!("/api/missions/{}/reject", ids[2]),
            &mom.token,
            json!({ "reason": "조금 더 읽어 보자" }),
        )
        .await;
    assert!(status.is_success(), "reject: {body}");
    let (status, body) = app
        .post(
            &format!("/api/missions/{}/approve", ids[3]),
            &mom.token,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "approve: {body}");
    Ok(())
}

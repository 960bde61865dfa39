//! A parent and a child, each in their own headless Chromium, go through the whole app:
//! signup, pairing, wishlist, board, live grants and attaches, chat, reload, and a 401.
use awc::http::StatusCode;
use serde_json::json;

use crate::browser::{Browser, ChromeDriver, Result};
use crate::helpers::{PASSWORD, TestApp, spawn_app};

const PARENT: &str = "mom_web";
const CHILD: &str = "kid_web";

#[actix_web::test]
async fn parent_and_child_use_the_web_client() {
    let app = spawn_app().await;
    let driver = ChromeDriver::start();
    let parent = Browser::open(&driver, "parent", &app.base)
        .await
        .expect("parent browser");
    let child = Browser::open(&driver, "child", &app.base)
        .await
        .expect("child browser");
    let outcome = family_flow(&app, &parent, &child).await;
    parent.close().await;
    child.close().await;
    if let Err(error) = outcome {
        panic!(
            "{error} (screenshots in {})",
            crate::browser::screenshot_dir().display()
        );
    }
}

async fn family_flow(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    sign_up(parent, PARENT, "엄마", "parent").await?;
    sign_up(child, CHILD, "지우", "child").await?;
    pair(parent, child).await?;
    wishlist(parent, child).await?;
    board(app, parent, child).await?;
    missions_and_calendar(parent, child).await?;
    chat(parent, child).await?;
    complete_board(app, parent, child).await?;
    sessions(parent, child).await?;
    Ok(())
}

async fn sign_up(browser: &Browser, login: &str, name: &str, role: &str) -> Result {
    browser.goto("/").await?;
    browser.wait_for("#login-form").await?;
    browser.screenshot("login").await?;
    browser.click("#to-signup").await?;
    browser.wait_for("#signup-form").await?;
    browser
        .click(&format!("input[value=\"{role}\"] + .role-card"))
        .await?;
    browser.fill("#signup-form [name=login]", login).await?;
    browser.fill("#signup-form [name=name]", name).await?;
    browser
        .fill("#signup-form [name=password]", PASSWORD)
        .await?;
    browser.screenshot("signup").await?;
    browser.click("#signup-form button[type=submit]").await?;
    browser.wait_for("#view[data-screen=pair]").await?;
    browser.wait_text("#whoami", name).await?;
    Ok(())
}

async fn pair(parent: &Browser, child: &Browser) -> Result {
    parent.click("#invite-button").await?;
    parent.wait_for("#invite-code").await?;
    parent.wait_text("#invite-timer", "후 만료").await?;
    let code = parent
        .wait_js(
            "document.querySelector('#invite-code').textContent",
            "the code",
        )
        .await?;
    let code = code.as_str().ok_or("invite code text")?.to_owned();
    assert_eq!(code.len(), 8, "invite code {code:?}");
    parent.screenshot("pairing").await?;

    child.wait_for("#join-form").await?;
    child.fill("#join-code", &code.to_lowercase()).await?;
    child.screenshot("pairing").await?;
    child.click("#join-form button[type=submit]").await?;
    child.wait_for("#view[data-screen=board]").await?;
    child.wait_text("#view", "아직 포도판이 없어요").await?;
    child.screenshot("board-empty").await?;

    // The parent's screen notices the child joined by itself.
    parent.wait_for("#view[data-screen=board]").await?;
    parent.wait_text("#pick-gift", "위시가 없어요").await?;
    Ok(())
}

async fn wishlist(parent: &Browser, child: &Browser) -> Result {
    child.tab("wishes").await?;
    for (name, link) in [("레고 성", ""), ("파란 자전거", "https://example.com/bike")] {
        child.fill("#wish-form [name=name]", name).await?;
        if !link.is_empty() {
            child.fill("#wish-form [name=link]", link).await?;
        }
        child.click("#wish-form button[type=submit]").await?;
        child.wait_text("#wish-list .wish-name", name).await?;
    }
    // Edit one: rename it.
    child
        .click_xpath(
            "//article[.//div[@class='wish-name' and text()='레고 성']]//button[text()='수정']",
        )
        .await?;
    child.fill(".wish-edit [name=name]", "레고 해적선").await?;
    child.click(".wish-edit button[type=submit]").await?;
    child
        .wait_text("#wish-list .wish-name", "레고 해적선")
        .await?;
    child.screenshot("wishes").await?;

    parent.tab("wishes").await?;
    parent
        .wait_text("#wish-list .wish-name", "파란 자전거")
        .await?;
    parent
        .wait_text("#wish-list .wish-name", "레고 해적선")
        .await?;
    parent.screenshot("wishes").await?;
    Ok(())
}

async fn board(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    child.tab("board").await?;
    child.mark_page().await?;
    // Live over Server-Sent Events (the client never polls).
    for browser in [parent, child] {
        browser.wait_for("html[data-board-live=sse]").await?;
    }

    parent
        .click_xpath("//article[.//div[@class='wish-name' and text()='파란 자전거']]//button[contains(@class,'pick-button')]")
        .await?;
    parent
        .wait_for("#view[data-screen=board] #board[data-size=\"31\"]")
        .await?;
    parent.wait_count("#board .grape", 31).await?;
    parent.mark_page().await?;

    // The child's open page shows the new board and then the granted grapes, without a reload.
    child.wait_text("#board .gift-name", "파란 자전거").await?;
    parent.click("[data-grant=\"3\"]").await?;
    child.wait_count("#board .grape.pending", 3).await?;
    child
        .wait_text("#attach-button", "포도알 붙이기 (3)")
        .await?;
    child.wait_text("#board-badge", "3").await?;
    child.assert_not_reloaded().await?;
    child.screenshot("board-granted").await?;

    // The child taps a waiting grape; the parent's page follows.
    child.click("#board .grape.pending").await?;
    child.wait_count("#board .grape.attached", 1).await?;
    parent.wait_for("#board[data-attached=\"1\"]").await?;
    parent.wait_count("#board .grape.attached", 1).await?;
    parent.wait_count("#board .grape.pending", 2).await?;
    parent.assert_not_reloaded().await?;
    parent.screenshot("board").await?;
    child.screenshot("board").await?;

    let (status, body) = app.get("/api/board", &child.token().await?).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["board"]["attached"], 1, "{body}");
    assert_eq!(body["board"]["granted"], 3, "{body}");
    Ok(())
}

async fn missions_and_calendar(parent: &Browser, child: &Browser) -> Result {
    for browser in [parent, child] {
        browser.tab("missions").await?;
        browser
            .wait_js(
                "!document.querySelector('#mission-list .loading')",
                "missions loaded",
            )
            .await?;
        browser.screenshot("missions").await?;
        browser.tab("calendar").await?;
        browser
            .wait_count(
                "#month-grid .day:not(.blank)",
                days_in_month(browser).await?,
            )
            .await?;
        browser.screenshot("calendar").await?;
    }
    Ok(())
}

async fn days_in_month(browser: &Browser) -> Result<u64> {
    let value = browser
        .client
        .execute(
            "const d = new Date(); return new Date(d.getFullYear(), d.getMonth() + 1, 0).getDate();",
            vec![],
        )
        .await?;
    Ok(value.as_u64().ok_or("days in month")?)
}

async fn chat(parent: &Browser, child: &Browser) -> Result {
    parent.tab("chat").await?;
    child.tab("chat").await?;
    parent.wait_for("#partner-presence.online").await?;
    child.wait_for("#partner-presence.online").await?;

    parent
        .fill("#chat-input", "지우야, 오늘 숙제 다 했니?")
        .await?;
    parent.click("#chat-send").await?;
    child
        .wait_text(".bubble-row.theirs .text", "오늘 숙제 다 했니?")
        .await?;
    child.fill("#chat-input", "네! 다 했어요 🍇").await?;
    child.click("#chat-send").await?;
    child.click("#sticker-toggle").await?;
    child.click("[data-sticker=\"grape-happy.svg\"]").await?;
    parent
        .wait_text(".bubble-row.theirs .text", "다 했어요")
        .await?;
    parent
        .wait_for(".bubble-row.theirs img.sticker[src=\"/media/grape-happy.svg\"]")
        .await?;
    child.wait_count(".bubble-row.pending", 0).await?;
    child.wait_count(".bubble-row.mine", 2).await?;
    parent.screenshot("chat").await?;
    child.screenshot("chat").await?;

    // The parent leaves the chat: the child's presence dot goes grey.
    parent.tab("board").await?;
    child.wait_for("#partner-presence.offline").await?;
    Ok(())
}

async fn complete_board(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    parent.tab("board").await?;
    child.tab("board").await?;
    parent.fill("#grant-count", "28").await?;
    parent.click("#grant-button").await?;
    parent.wait_for("#board[data-granted=\"31\"]").await?;
    child.wait_count("#board .grape.pending", 30).await?;
    // 29 attaches over HTTP (quicker than tapping), the last one by tapping.
    let token = child.token().await?;
    for _ in 0..29 {
        let (status, body) = app.post("/api/board/attach", &token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "attach: {body}");
    }
    child.wait_for("#board[data-attached=\"30\"]").await?;
    parent.wait_for("#board[data-attached=\"30\"]").await?;
    child.click("#board .grape.pending").await?;
    child.wait_for("#celebration").await?;
    child.wait_for("#board[data-status=\"complete\"]").await?;
    parent.wait_for("#board[data-status=\"complete\"]").await?;
    parent.wait_for("#celebration").await?;
    child.screenshot("celebration").await?;
    parent.screenshot("celebration").await?;
    for browser in [parent, child] {
        browser.click("#celebration button").await?;
        browser.wait_count("#celebration", 0).await?;
    }
    parent.wait_for("#pick-gift").await?;
    parent.screenshot("board-complete").await?;
    child.screenshot("board-complete").await?;
    Ok(())
}

async fn sessions(parent: &Browser, child: &Browser) -> Result {
    // A reload keeps the session.
    child.client.refresh().await?;
    child.wait_for("#view[data-screen=board] #board").await?;
    child.wait_text("#whoami", "지우").await?;

    // A token the server refuses (401) sends the user back to log in.
    parent
        .client
        .execute(
            "localStorage.setItem('podo.token', 'not-a-token'); return null;",
            vec![],
        )
        .await?;
    parent.client.refresh().await?;
    parent.wait_for("#login-form").await?;
    parent.fill("#login-form [name=login]", PARENT).await?;
    parent.fill("#login-form [name=password]", PASSWORD).await?;
    parent.click("#login-form button[type=submit]").await?;
    parent.wait_for("#view[data-screen=board] #board").await?;
    parent.wait_text("#whoami", "엄마").await?;
    Ok(())
}

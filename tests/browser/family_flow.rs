//! A parent and a child, each in their own headless Chromium, go through the whole app:
//! signup, pairing, wishlist, board, live grants and attaches, a mission from creation to its
//! reward, the calendar, chat, reload, and a 401.
use std::cmp::Ordering;

use awc::http::StatusCode;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Asia::Seoul;
use serde_json::{Value, json};

use crate::browser::{Browser, ChromeDriver, Result};
use crate::helpers::{PASSWORD, TestApp, spawn_app};

const PARENT: &str = "mom_web";
const CHILD: &str = "kid_web";
const BOARD_SIZE: u64 = 31;
/// Granted by hand on the board before the mission; one of them gets attached.
const FIRST_GRANT: u64 = 3;
const MISSION: &str = "설거지하기";
/// Granted by approving the mission.
const MISSION_REWARD: u64 = 2;
const REJECT_REASON: &str = "그릇에 거품이 남아 있어요";

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
    missions_and_calendar(app, parent, child).await?;
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
        .wait_for(&format!(
            "#view[data-screen=board] #board[data-size=\"{BOARD_SIZE}\"]"
        ))
        .await?;
    parent.wait_count("#board .grape", BOARD_SIZE).await?;
    parent.mark_page().await?;

    // The child's open page shows the new board and then the granted grapes, without a reload.
    child.wait_text("#board .gift-name", "파란 자전거").await?;
    parent
        .click(&format!("[data-grant=\"{FIRST_GRANT}\"]"))
        .await?;
    toast_clear_of_the_gift(parent, FIRST_GRANT).await?;
    child
        .wait_count("#board .grape.pending", FIRST_GRANT)
        .await?;
    child
        .wait_text("#attach-button", &format!("포도알 붙이기 ({FIRST_GRANT})"))
        .await?;
    child
        .wait_text("#board-badge", &FIRST_GRANT.to_string())
        .await?;
    child.assert_not_reloaded().await?;
    child.screenshot("board-granted").await?;

    // The child taps a waiting grape (a button over it, named for screen readers); the
    // parent's page follows.
    child
        .wait_js(
            &format!(
                "[...document.querySelectorAll('#board button.grape-button')].length === {FIRST_GRANT} && \
                 document.querySelector('#board button.grape-button').getAttribute('aria-label') === '포도알 붙이기 (붙일 포도알 {FIRST_GRANT}개)'"
            ),
            "a named button on every waiting grape",
        )
        .await?;
    child.click("#board .grape-button").await?;
    child.wait_count("#board .grape.attached", 1).await?;
    parent.wait_for("#board[data-attached=\"1\"]").await?;
    parent.wait_count("#board .grape.attached", 1).await?;
    parent
        .wait_count("#board .grape.pending", FIRST_GRANT - 1)
        .await?;
    parent.assert_not_reloaded().await?;
    parent.screenshot("board").await?;
    child.screenshot("board").await?;

    let (status, body) = app.get("/api/board", &child.token().await?).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["board"]["attached"], 1, "{body}");
    assert_eq!(body["board"]["granted"], FIRST_GRANT, "{body}");
    Ok(())
}

/// The "포도알 N개를 주었어요!" toast does not cover the gift's name or the screen's title.
async fn toast_clear_of_the_gift(parent: &Browser, count: u64) -> Result {
    parent
        .wait_text("#toast.show", &format!("포도알 {count}개를 주었어요!"))
        .await?;
    let overlap = parent
        .client
        .execute(
            "window.scrollTo(0, 0); \
             const t = document.getElementById('toast').getBoundingClientRect(); \
             const hits = (el) => { const r = el.getBoundingClientRect(); \
               return r.width > 0 && t.left < r.right && r.left < t.right && t.top < r.bottom && r.top < t.bottom; }; \
             return [...document.querySelectorAll('#board .gift-name, #board-title')].filter(hits).map((el) => el.textContent);",
            vec![],
        )
        .await?;
    if overlap != json!([]) {
        parent.screenshot("FAILED-toast").await.ok();
        return Err(format!("the toast covers {overlap}").into());
    }
    Ok(())
}

/// The family's calendar days are the server's (`PODO_TIMEZONE`, Asia/Seoul in tests), whatever
/// zone the browsers run in.
fn family_today() -> NaiveDate {
    Utc::now().with_timezone(&Seoul).date_naive()
}

fn family_day(at: &Value) -> Result<NaiveDate> {
    let at = at.as_str().ok_or("a timestamp")?;
    Ok(DateTime::parse_from_rfc3339(at)?
        .with_timezone(&Seoul)
        .date_naive())
}

/// `11월 28일 (토)`, as the client's `formatDay` writes a date.
fn korean_day(date: NaiveDate) -> String {
    let weekday = "일월화수목금토"
        .chars()
        .nth(date.weekday().num_days_from_sunday() as usize)
        .unwrap_or('?');
    format!("{}월 {}일 ({weekday})", date.month(), date.day())
}

/// A parent's mission goes round: created, submitted, rejected with a reason, submitted again,
/// approved (its reward lands on the child's open board, live), then shows on the calendar.
async fn missions_and_calendar(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    // Due a few days from today, within today's month so one month view shows both.
    let today = family_today();
    let due = match today.checked_add_days(Days::new(3)) {
        Some(date) if date.month() == today.month() => date,
        _ => today - Days::new(3),
    };

    parent.tab("missions").await?;
    parent
        .wait_text("#mission-list", "아직 미션이 없어요")
        .await?;
    parent.fill("#mission-form [name=title]", MISSION).await?;
    parent
        .fill("#mission-form [name=reward]", &MISSION_REWARD.to_string())
        .await?;
    parent
        .set_value("#mission-form [name=due_on]", &due.to_string())
        .await?;
    parent.click("#mission-form button[type=submit]").await?;
    parent
        .wait_text(".mission-open .mission-title", MISSION)
        .await?;
    parent
        .wait_text(".mission-open", &format!("마감 {}", korean_day(due)))
        .await?;
    // The form is ready for the next mission: empty title, the default reward.
    parent
        .wait_js(
            "document.querySelector('#mission-form [name=title]').value === '' && document.querySelector('#mission-form [name=reward]').value === '1'",
            "the mission form reset",
        )
        .await?;

    // The child opens missions and submits it.
    child.tab("missions").await?;
    child
        .wait_text(".mission-open .mission-title", MISSION)
        .await?;
    child
        .wait_text(".mission-open .reward", &format!("🍇 {MISSION_REWARD}"))
        .await?;
    child
        .click(".mission-open .mission-actions .primary")
        .await?;
    child
        .wait_text(".mission-submitted .status", "확인 대기")
        .await?;

    // The parent looks again (tapping the open tab), rejects it with a reason.
    parent.tab("missions").await?;
    parent
        .wait_text(".mission-submitted .mission-title", MISSION)
        .await?;
    parent.click(".mission-submitted .reject-toggle").await?;
    parent
        .fill(
            ".mission-submitted .reject-form [name=reason]",
            REJECT_REASON,
        )
        .await?;
    parent
        .click(".mission-submitted .reject-form button[type=submit]")
        .await?;
    parent
        .wait_text(".mission-rejected .reject-reason", REJECT_REASON)
        .await?;

    // The child sees why and submits again.
    child.tab("missions").await?;
    child
        .wait_text(".mission-rejected .reject-reason", REJECT_REASON)
        .await?;
    child
        .wait_text(".mission-rejected .status", "다시 해 보기")
        .await?;
    child.screenshot("missions-rejected").await?;
    child
        .click(".mission-rejected .mission-actions .primary")
        .await?;
    child
        .wait_text(".mission-submitted .status", "확인 대기")
        .await?;
    child.wait_count(".reject-reason", 0).await?;

    // The child watches the board while the parent approves: the reward arrives live.
    child.tab("board").await?;
    child
        .wait_for(&format!("#board[data-granted=\"{FIRST_GRANT}\"]"))
        .await?;
    child
        .wait_count("#board .grape.pending", FIRST_GRANT - 1)
        .await?;
    child.mark_page().await?;
    parent.tab("missions").await?;
    parent
        .wait_text(".mission-submitted .mission-title", MISSION)
        .await?;
    parent
        .click(".mission-submitted .mission-actions .primary")
        .await?;
    parent
        .wait_text(".mission-approved .status", "승인됨")
        .await?;
    parent
        .wait_count(".mission-approved .mission-actions", 0)
        .await?;
    let granted = FIRST_GRANT + MISSION_REWARD;
    child
        .wait_for(&format!("#board[data-granted=\"{granted}\"]"))
        .await?;
    child
        .wait_count("#board .grape.pending", granted - 1)
        .await?;
    child
        .wait_text(
            "#attach-button",
            &format!("포도알 붙이기 ({})", granted - 1),
        )
        .await?;
    child
        .wait_text("#board-badge", &(granted - 1).to_string())
        .await?;
    child.assert_not_reloaded().await?;
    child.screenshot("board-mission-reward").await?;

    let token = child.token().await?;
    let (status, body) = app.get("/api/board", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["board"]["granted"], granted, "{body}");
    assert_eq!(body["board"]["attached"], 1, "{body}");
    let (status, body) = app.get("/api/missions", &token).await;
    assert_eq!(status, StatusCode::OK);
    let mission = &body["missions"][0];
    assert_eq!(mission["status"], "approved", "{body}");
    assert_eq!(mission["due_on"], due.to_string(), "{body}");
    let approved_on = family_day(&mission["decided_at"])?;

    parent.screenshot("missions").await?;
    child.tab("missions").await?;
    child
        .wait_text(".mission-approved .status", "승인됨")
        .await?;
    child.screenshot("missions").await?;

    // The calendar: the mission on its due date, the approval on the day it happened, both in
    // the family's time zone, not the browser's.
    for browser in [parent, child] {
        browser.tab("calendar").await?;
        show_month(browser, due).await?;
        browser
            .wait_for(&format!("#month-grid .day[data-date=\"{due}\"] .dot.due"))
            .await?;
        browser.wait_count("#month-grid .dot.due", 1).await?;
        browser
            .click(&format!("#month-grid .day[data-date=\"{due}\"]"))
            .await?;
        browser
            .wait_text("#day-detail h3", &korean_day(due))
            .await?;
        browser
            .wait_text("#day-detail li", &format!("마감: {MISSION}"))
            .await?;

        show_month(browser, approved_on).await?;
        browser
            .wait_count(
                "#month-grid .day:not(.blank)",
                days_in_month(approved_on) as u64,
            )
            .await?;
        // "Today" is the family's (Asia/Seoul) today, the day the server files approvals under,
        // even when the browser runs in another zone (the test's may well be UTC). The grid was
        // drawn after the approval: if the family's day has not turned since, it is today.
        if family_today() == approved_on {
            browser
                .wait_for(&format!(
                    "#month-grid .day.today[data-date=\"{approved_on}\"]"
                ))
                .await?;
        }
        browser
            .wait_for(&format!(
                "#month-grid .day[data-date=\"{approved_on}\"] .dot.approved"
            ))
            .await?;
        browser.wait_count("#month-grid .dot.approved", 1).await?;
        browser
            .click(&format!("#month-grid .day[data-date=\"{approved_on}\"]"))
            .await?;
        browser
            .wait_text("#day-detail h3", &korean_day(approved_on))
            .await?;
        browser
            .wait_text("#day-detail li", &format!("승인: {MISSION}"))
            .await?;
        browser.screenshot("calendar").await?;
    }
    Ok(())
}

/// Steps the calendar to the month of `date` with its arrows and waits for that month's data.
async fn show_month(browser: &Browser, date: NaiveDate) -> Result {
    let wanted = format!("{:04}-{:02}", date.year(), date.month());
    for _ in 0..24 {
        let shown = browser
            .wait_js(
                "document.querySelector('#month-grid')?.dataset.loaded !== 'false' && document.querySelector('#month-grid')?.dataset.loaded",
                "the calendar loaded",
            )
            .await?;
        let shown = shown.as_str().ok_or("loaded month")?.to_owned();
        match shown.cmp(&wanted) {
            Ordering::Equal => return Ok(()),
            Ordering::Less => browser.click("#month-next").await?,
            Ordering::Greater => browser.click("#month-prev").await?,
        }
    }
    Err(format!("{}: the calendar never showed {wanted}", browser.name).into())
}

fn days_in_month(date: NaiveDate) -> u32 {
    let first = date.with_day(1).unwrap_or(date);
    let next = first + Months::new(1);
    (next - first).num_days() as u32
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
    // So far: FIRST_GRANT by hand and MISSION_REWARD by the mission, one of them attached.
    let granted = FIRST_GRANT + MISSION_REWARD;
    parent
        .wait_for(&format!("#board[data-granted=\"{granted}\"]"))
        .await?;
    parent
        .fill("#grant-count", &(BOARD_SIZE - granted).to_string())
        .await?;
    parent.click("#grant-button").await?;
    parent
        .wait_for(&format!("#board[data-granted=\"{BOARD_SIZE}\"]"))
        .await?;
    child
        .wait_count("#board .grape.pending", BOARD_SIZE - 1)
        .await?;
    // All but the last over HTTP (quicker than tapping), the last one by tapping.
    let token = child.token().await?;
    for _ in 1..BOARD_SIZE - 1 {
        let (status, body) = app.post("/api/board/attach", &token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "attach: {body}");
    }
    let almost = format!("#board[data-attached=\"{}\"]", BOARD_SIZE - 1);
    child.wait_for(&almost).await?;
    parent.wait_for(&almost).await?;
    child.click("#board .grape-button").await?;
    child.wait_for("#celebration").await?;
    // The dialog has the focus (and gives it back on close, below).
    child
        .wait_js(
            "document.getElementById('celebration')?.contains(document.activeElement)",
            "the focus in the celebration dialog",
        )
        .await?;
    child.wait_for("#board[data-status=\"complete\"]").await?;
    parent.wait_for("#board[data-status=\"complete\"]").await?;
    parent.wait_for("#celebration").await?;
    child.screenshot("celebration").await?;
    parent.screenshot("celebration").await?;
    for browser in [parent, child] {
        browser.click("#celebration button").await?;
        browser.wait_count("#celebration", 0).await?;
        browser
            .wait_js(
                "document.activeElement && document.activeElement.id === 'board-title' && !document.getElementById('app').inert",
                "the focus back on the board after the dialog",
            )
            .await?;
    }
    parent.wait_for("#pick-gift").await?;
    parent.screenshot("board-complete").await?;
    child.screenshot("board-complete").await?;

    // The calendar shows the gift on the day it was given.
    let (status, body) = app.get("/api/wishes", &token).await;
    assert_eq!(status, StatusCode::OK);
    let given = body["wishes"]
        .as_array()
        .and_then(|wishes| wishes.iter().find(|w| w["status"] == "given"))
        .ok_or_else(|| format!("no given wish: {body}"))?;
    let given_on = family_day(&given["given_at"])?;
    parent.tab("calendar").await?;
    show_month(parent, given_on).await?;
    parent
        .wait_for(&format!(
            "#month-grid .day[data-date=\"{given_on}\"] .dot.gift"
        ))
        .await?;
    parent
        .click(&format!("#month-grid .day[data-date=\"{given_on}\"]"))
        .await?;
    parent
        .wait_text("#day-detail li", "선물: 파란 자전거")
        .await?;
    parent.screenshot("calendar-gift").await?;
    parent.tab("board").await?;
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

//! The installed app without its server: after one online visit the service worker has the
//! shell, a reload with the server gone shows the last board, wishlist and chat with the offline
//! banner and the server's actions off, a message typed meanwhile goes out exactly once when the
//! server is back; and a new deployment replaces the stored shell.
use serde_json::{Value, json};

use crate::browser::{Browser, ChromeDriver, Result, axe_verdict};
use crate::helpers::{TestApp, TestFamily, spawn_app, spawn_app_with};
use crate::outage::Outage;

const EARLIER: &str = "학교 끝났어요";
const ON_THE_BUS: &str = "버스에서 보내요 🚌";

#[actix_web::test]
async fn offline_start_shows_the_last_state_and_sends_the_outbox_once() {
    let app = spawn_app().await;
    let mut outage = Outage::start(&app.base).await.expect("relay");
    let driver = ChromeDriver::start();
    let child = Browser::open(&driver, "offline-child", &outage.base())
        .await
        .expect("child browser");
    let outcome = offline_flow(&app, &mut outage, &child).await;
    child.close().await;
    if let Err(error) = outcome {
        panic!(
            "{error} (screenshots in {})",
            crate::browser::screenshot_dir().display()
        );
    }
}

async fn seed(app: &TestApp) -> TestFamily {
    let family = app.family("off").await;
    app.wish(&family.child, "레고 해적선").await;
    let bike = app.wish(&family.child, "파란 자전거").await;
    let (status, body) = app
        .post(
            "/api/board",
            &family.parent.token,
            json!({ "wish_id": bike, "size": 10 }),
        )
        .await;
    assert!(status.is_success(), "board: {body}");
    let (status, body) = app
        .post(
            "/api/board/grant",
            &family.parent.token,
            json!({ "count": 3 }),
        )
        .await;
    assert!(status.is_success(), "grant: {body}");
    let (status, body) = app
        .post("/api/board/attach", &family.child.token, json!({}))
        .await;
    assert!(status.is_success(), "attach: {body}");
    family
}

/// How many stored messages have this text.
async fn stored(app: &TestApp, token: &str, text: &str) -> usize {
    let (_, body) = app.get("/api/chat/messages?limit=200", token).await;
    body["messages"]
        .as_array()
        .map(|list| list.iter().filter(|m| m["text"] == text).count())
        .unwrap_or(0)
}

async fn offline_flow(app: &TestApp, outage: &mut Outage, child: &Browser) -> Result {
    let family = seed(app).await;
    let token = family.child.token.clone();

    // One online visit: the board, the wishlist, the chat with a message.
    child.sign_in_with(&token).await?;
    child
        .wait_for("#board[data-granted=\"3\"][data-attached=\"1\"]")
        .await?;
    child.tab("wishes").await?;
    child
        .wait_text("#wish-list .wish-name", "파란 자전거")
        .await?;
    child.tab("chat").await?;
    child.fill("#chat-input", EARLIER).await?;
    child.click("#chat-send").await?;
    child.wait_text(".bubble-row.mine .text", EARLIER).await?;
    child.wait_count(".bubble-row.pending", 0).await?;
    child.tab("board").await?;
    child.wait_offline_ready().await?;

    // The server goes away; the child reloads (on the bus).
    outage.cut();
    child.client.refresh().await?;
    child.wait_text("#offline-banner", "오프라인").await?;
    child
        .wait_for("#board[data-granted=\"3\"][data-attached=\"1\"]")
        .await?;
    child.wait_text("#board .gift-name", "파란 자전거").await?;
    // What needs the server is off, and says why.
    child
        .wait_js(
            "[...document.querySelectorAll('#attach-button, #board .grape-button')].every((b) => b.disabled && b.title.includes('오프라인')) \
             && document.querySelectorAll('#board .grape-button').length === 2",
            "attaching disabled with a reason",
        )
        .await?;
    child.screenshot("screen-offline-board").await?;
    let mut results = vec![child.axe("offline-board").await?];
    child.tab("wishes").await?;
    child
        .wait_text("#wish-list .wish-name", "파란 자전거")
        .await?;
    child
        .wait_text("#wish-list .wish-name", "레고 해적선")
        .await?;
    child
        .wait_js(
            "document.querySelector('#wish-form button[type=submit]').disabled",
            "adding a wish disabled",
        )
        .await?;

    // The chat shows its history, and what is typed now waits in the outbox.
    child.tab("chat").await?;
    child.wait_text(".bubble-row.mine .text", EARLIER).await?;
    child.fill("#chat-input", ON_THE_BUS).await?;
    child.click("#chat-send").await?;
    child
        .wait_text(".bubble-row.pending .meta", "연결되면 보낼게요")
        .await?;
    child.wait_text("#chat-connection", "오프라인").await?;
    child.screenshot("screen-offline-chat").await?;
    results.push(child.axe("offline-chat").await?);
    assert_eq!(stored(app, &token, ON_THE_BUS).await, 0);

    // The server is back: the banner goes, the message goes out once.
    outage.restore().await?;
    child
        .wait_js(
            "document.documentElement.dataset.connection === 'online' && document.getElementById('offline-banner').textContent === ''",
            "back online",
        )
        .await?;
    child.wait_count(".bubble-row.pending", 0).await?;
    child
        .wait_text(".bubble-row.mine .text", ON_THE_BUS)
        .await?;
    assert_eq!(stored(app, &token, ON_THE_BUS).await, 1);
    // A reload online: still one bubble, one stored message.
    child.client.refresh().await?;
    child.wait_for("#view[data-screen=chat]").await?;
    child
        .wait_text(".bubble-row.mine .text", ON_THE_BUS)
        .await?;
    let bubbles: Value = child
        .client
        .execute(
            &format!(
                "return [...document.querySelectorAll('.bubble-row .text')].filter((e) => e.textContent === {}).length;",
                serde_json::to_string(ON_THE_BUS)?
            ),
            vec![],
        )
        .await?;
    assert_eq!(bubbles, json!(1), "bubbles of the offline message");
    assert_eq!(stored(app, &token, ON_THE_BUS).await, 1);
    axe_verdict(&results)
}

/// A deployment changes the client (here: a copy of `static/` with a changed page and its new
/// shell version): the next online load installs the new worker, which stores the new shell and
/// drops the old one, so the next offline start shows the new page.
#[actix_web::test]
async fn a_new_deployment_replaces_the_offline_shell() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static"),
        dir.path(),
    )
    .expect("copy static");
    let static_dir = dir.path().to_owned();
    let app = spawn_app_with(|config| config.static_dir = static_dir.clone()).await;
    let mut outage = Outage::start(&app.base).await.expect("relay");
    let driver = ChromeDriver::start();
    let browser = Browser::open(&driver, "deploy", &outage.base())
        .await
        .expect("browser");
    let outcome = deploy_flow(&mut outage, &browser, dir.path()).await;
    browser.close().await;
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

async fn deploy_flow(outage: &mut Outage, browser: &Browser, dir: &std::path::Path) -> Result {
    browser.goto("/").await?;
    browser.wait_for("#login-form").await?;
    let first = browser.wait_offline_ready().await?;

    // Deploy: a changed page, and so a new shell version in sw.js.
    let index = std::fs::read_to_string(dir.join("index.html"))?;
    std::fs::write(
        dir.join("index.html"),
        index.replace("<title>포도</title>", "<title>포도 2</title>"),
    )?;
    let sw = std::fs::read_to_string(dir.join("sw.js"))?;
    let marker = "const SHELL_VERSION = '";
    let at = sw.find(marker).ok_or("SHELL_VERSION")? + marker.len();
    let end = at + sw[at..].find('\'').ok_or("the end of SHELL_VERSION")?;
    std::fs::write(
        dir.join("sw.js"),
        format!("{}deploy2{}", &sw[..at], &sw[end..]),
    )?;

    browser.client.refresh().await?;
    browser
        .wait_async(
            "caches.keys().then((names) => done(names.join(',') === 'podo-shell-deploy2'), () => done(false));",
            "the new shell stored and the old one gone",
        )
        .await?;
    assert_ne!(first, "podo-shell-deploy2");

    outage.cut();
    browser.client.refresh().await?;
    browser.wait_for("#login-form").await?;
    browser
        .wait_js("document.title === '포도 2'", "the new page offline")
        .await?;
    Ok(())
}

//! Retries are safe: a grant or an attach whose answer was lost is sent again with the same
//! idempotency key and applied once; a chat message the server could not store (`not_stored`)
//! is sent again from the outbox and stored once.
//!
//! The lost answer is made in the page: `fetch` is wrapped so that the first request to the
//! endpoint reaches the server and is applied, but the page gets a network error instead of
//! the answer. The `not_stored` refusal is the server's frame, given to the client's socket in
//! place of sending the first `send` frame.
use serde_json::{Value, json};

use crate::browser::{Browser, ChromeDriver, Result};
use crate::helpers::{TestApp, spawn_app};

const TEXT: &str = "다시 보내도 한 번만";

#[actix_web::test]
async fn retries_send_the_same_key_and_apply_once() {
    let app = spawn_app().await;
    let driver = ChromeDriver::start();
    let parent = Browser::open(&driver, "retry-parent", &app.base)
        .await
        .expect("parent browser");
    let child = Browser::open(&driver, "retry-child", &app.base)
        .await
        .expect("child browser");
    let outcome = retry_flow(&app, &parent, &child).await;
    parent.close().await;
    child.close().await;
    if let Err(error) = outcome {
        panic!(
            "{error} (screenshots in {})",
            crate::browser::screenshot_dir().display()
        );
    }
}

/// The first POST to `path` is applied by the server but its answer is lost; every key sent
/// to `path` is recorded in `window.__keys`.
async fn lose_first_answer(browser: &Browser, path: &str) -> Result {
    let path_json = serde_json::to_string(path)?;
    browser
        .client
        .execute(
            &format!(
                "const path = {path_json}; window.__keys = []; let lost = false; \
                 const real = window.fetch.bind(window); \
                 window.fetch = async (input, init) => {{ \
                   const url = typeof input === 'string' ? input : input.url; \
                   if (!url.endsWith(path) || !init || init.method !== 'POST') return real(input, init); \
                   window.__keys.push(JSON.parse(init.body).key); \
                   const answer = await real(input, init); \
                   if (!lost) {{ lost = true; throw new TypeError('Failed to fetch'); }} \
                   return answer; \
                 }}; return null;"
            ),
            vec![],
        )
        .await?;
    Ok(())
}

async fn keys(browser: &Browser) -> Result<Vec<Value>> {
    let value = browser
        .client
        .execute("return window.__keys;", vec![])
        .await?;
    Ok(value.as_array().cloned().unwrap_or_default())
}

async fn board(app: &TestApp, token: &str) -> (u64, u64) {
    let board = app.board(token).await;
    (
        board["granted"].as_u64().unwrap_or(0),
        board["attached"].as_u64().unwrap_or(0),
    )
}

async fn retry_flow(app: &TestApp, parent: &Browser, child: &Browser) -> Result {
    let family = app.family("retry").await;
    let (mom, kid) = (family.parent.token.clone(), family.child.token.clone());
    let wish = app.wish(&family.child, "파란 자전거").await;
    let (status, body) = app
        .post("/api/board", &mom, json!({ "wish_id": wish, "size": 20 }))
        .await;
    assert!(status.is_success(), "board: {body}");

    // Grant: the answer is lost, the parent presses again.
    parent.sign_in_with(&mom).await?;
    parent.wait_for("#board[data-granted=\"0\"]").await?;
    lose_first_answer(parent, "/api/board/grant").await?;
    parent.click("[data-grant=\"3\"]").await?;
    parent
        .wait_text("#toast.show", "응답을 받지 못했어요")
        .await?;
    assert_eq!(
        board(app, &mom).await,
        (3, 0),
        "the first grant was applied"
    );
    parent
        .wait_js(
            "!document.querySelector('[data-grant=\"3\"]').disabled",
            "the button back",
        )
        .await?;
    parent.click("[data-grant=\"3\"]").await?;
    parent
        .wait_text("#toast.show", "포도알 3개를 주었어요!")
        .await?;
    assert_eq!(
        board(app, &mom).await,
        (3, 0),
        "the retry applied nothing more"
    );
    // Answered: the next grant is a new request with a new key.
    parent.click("[data-grant=\"3\"]").await?;
    parent.wait_for("#board[data-granted=\"6\"]").await?;
    assert_eq!(board(app, &mom).await, (6, 0));
    let sent = keys(parent).await?;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0], sent[1], "the retry kept the key: {sent:?}");
    assert_ne!(sent[1], sent[2], "a new grant has a new key: {sent:?}");

    // Attach: the same with the child's grape.
    child.sign_in_with(&kid).await?;
    child.wait_for("#board[data-granted=\"6\"]").await?;
    lose_first_answer(child, "/api/board/attach").await?;
    child.click("#board .grape-button").await?;
    child
        .wait_text("#toast.show", "응답을 받지 못했어요")
        .await?;
    assert_eq!(board(app, &kid).await, (6, 1));
    child.wait_for("#board[data-attached=\"1\"]").await?;
    child
        .wait_js(
            "!document.querySelector('#board .grape-button').disabled",
            "the grape back",
        )
        .await?;
    child.click("#board .grape-button").await?;
    child
        .wait_js("window.__keys.length === 2", "the retried attach")
        .await?;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        board(app, &kid).await,
        (6, 1),
        "the retry attached nothing more"
    );
    child
        .wait_js(
            "!document.querySelector('#board .grape-button').disabled",
            "the grape back",
        )
        .await?;
    child.click("#board .grape-button").await?;
    child.wait_for("#board[data-attached=\"2\"]").await?;
    assert_eq!(board(app, &kid).await, (6, 2));
    let sent = keys(child).await?;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0], sent[1], "the retry kept the key: {sent:?}");
    assert_ne!(sent[1], sent[2], "a new attach has a new key: {sent:?}");

    // Chat: the first send is refused with not_stored; the outbox sends it again.
    child.tab("chat").await?;
    child.wait_for("#chat-connection").await?;
    child
        .wait_js(
            "document.querySelector('#chat-connection').dataset.status === 'online'",
            "the chat online",
        )
        .await?;
    child
        .client
        .execute(
            "window.__sends = []; let refused = false; const send = WebSocket.prototype.send; \
             WebSocket.prototype.send = function (data) { \
               const frame = JSON.parse(data); \
               if (frame.type === 'send') { \
                 window.__sends.push(frame.client_id); \
                 if (!refused) { refused = true; \
                   setTimeout(() => this.dispatchEvent(new MessageEvent('message', { data: JSON.stringify({ type: 'error', code: 'not_stored', message: 'the message could not be stored; send it again' }) })), 20); \
                   return; } } \
               return send.call(this, data); }; return null;",
            vec![],
        )
        .await?;
    child.fill("#chat-input", TEXT).await?;
    child.click("#chat-send").await?;
    child.wait_text(".bubble-row.mine .text", TEXT).await?;
    child.wait_count(".bubble-row.pending", 0).await?;
    let sends = child
        .client
        .execute("return window.__sends;", vec![])
        .await?;
    let sends = sends.as_array().cloned().unwrap_or_default();
    assert!(sends.len() >= 2, "sent again after not_stored: {sends:?}");
    assert!(
        sends.iter().all(|id| *id == sends[0]),
        "one client_id: {sends:?}"
    );
    let (_, body) = app.get("/api/chat/messages", &kid).await;
    let count = body["messages"]
        .as_array()
        .map(|list| list.iter().filter(|m| m["text"] == TEXT).count());
    assert_eq!(count, Some(1), "{body}");
    Ok(())
}

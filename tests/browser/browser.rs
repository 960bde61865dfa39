//! chromedriver as a child process, and a small wrapper over a fantoccini session with waits
//! that poll (every 50 ms, up to 10 s) instead of sleeping.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const POLL: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(10);

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub struct ChromeDriver {
    child: Child,
    pub url: String,
}

impl ChromeDriver {
    /// Starts chromedriver on a free port. Fails (not skips) when the browser is not installed.
    pub fn start() -> ChromeDriver {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run `scripts/test` (it installs Debian's chromium and chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(POLL);
        }
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// One browser (its own profile, so its own localStorage) playing one family member.
pub struct Browser {
    pub client: Client,
    pub name: &'static str,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(driver: &ChromeDriver, name: &'static str, base: &str) -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--lang=ko-KR",
            "--window-size=412,915",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&driver.url)
            .await?;
        Ok(Browser {
            client,
            name,
            base: base.to_owned(),
            _profile: profile,
        })
    }

    pub async fn goto(&self, path: &str) -> Result {
        self.client.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    /// Polls a JavaScript expression until it is truthy; returns its value.
    pub async fn wait_js(&self, expression: &str, what: &str) -> Result<Value> {
        let script = format!("return ({expression});");
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.client.execute(&script, vec![]).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                self.screenshot("FAILED").await.ok();
                return Err(
                    format!("{}: timed out waiting for {what} ({expression})", self.name).into(),
                );
            }
            actix_web::rt::time::sleep(POLL).await;
        }
    }

    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        let escaped = serde_json::to_string(css)?;
        self.wait_js(&format!("document.querySelector({escaped})"), css)
            .await?;
        Ok(self.client.find(Locator::Css(css)).await?)
    }

    /// Waits until the element's text contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) -> Result {
        let (css_json, text_json) = (serde_json::to_string(css)?, serde_json::to_string(text)?);
        self.wait_js(
            &format!(
                "[...document.querySelectorAll({css_json})].some(e => e.textContent.includes({text_json}))"
            ),
            &format!("{css} containing {text:?}"),
        )
        .await?;
        Ok(())
    }

    pub async fn wait_count(&self, css: &str, count: u64) -> Result {
        let css_json = serde_json::to_string(css)?;
        self.wait_js(
            &format!("document.querySelectorAll({css_json}).length === {count}"),
            &format!("{count} × {css}"),
        )
        .await?;
        Ok(())
    }

    /// Clicks like a finger: the element is scrolled to the middle first, away from the
    /// fixed top and tab bars.
    pub async fn click(&self, css: &str) -> Result {
        let element = self.wait_for(css).await?;
        let css_json = serde_json::to_string(css)?;
        self.client
            .execute(
                &format!("document.querySelector({css_json}).scrollIntoView({{block: 'center'}}); return null;"),
                vec![],
            )
            .await?;
        element.click().await?;
        Ok(())
    }

    pub async fn click_xpath(&self, xpath: &str) -> Result {
        let escaped = serde_json::to_string(xpath)?;
        self.wait_js(
            &format!("document.evaluate({escaped}, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue"),
            xpath,
        )
        .await?;
        self.client
            .execute(
                &format!("document.evaluate({escaped}, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue.scrollIntoView({{block: 'center'}}); return null;"),
                vec![],
            )
            .await?;
        self.client
            .find(Locator::XPath(xpath))
            .await?
            .click()
            .await?;
        Ok(())
    }

    pub async fn fill(&self, css: &str, text: &str) -> Result {
        let input = self.wait_for(css).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Sets an input's value as its picker would, with the `input` and `change` events (typing
    /// into a date field depends on the browser's locale).
    pub async fn set_value(&self, css: &str, value: &str) -> Result {
        self.wait_for(css).await?;
        let (css_json, value_json) = (serde_json::to_string(css)?, serde_json::to_string(value)?);
        self.client
            .execute(
                &format!(
                    "const input = document.querySelector({css_json}); input.value = {value_json}; \
                     for (const type of ['input', 'change']) input.dispatchEvent(new Event(type, {{bubbles: true}})); \
                     return null;"
                ),
                vec![],
            )
            .await?;
        Ok(())
    }

    /// Opens a screen through the tab bar, as a person would.
    pub async fn tab(&self, screen: &str) -> Result {
        self.click(&format!("#tabbar a[data-tab=\"{screen}\"]"))
            .await?;
        self.wait_for(&format!("#view[data-screen=\"{screen}\"]"))
            .await?;
        Ok(())
    }

    pub async fn token(&self) -> Result<String> {
        let value = self
            .client
            .execute("return localStorage.getItem('podo.token');", vec![])
            .await?;
        Ok(value.as_str().ok_or("no token in localStorage")?.to_owned())
    }

    /// Marks the page so a later check can prove it was not reloaded.
    pub async fn mark_page(&self) -> Result {
        self.client
            .execute("window.__podoMark = true; return null;", vec![])
            .await?;
        Ok(())
    }

    pub async fn assert_not_reloaded(&self) -> Result {
        let value = self
            .client
            .execute("return window.__podoMark === true;", vec![])
            .await?;
        if value != json!(true) {
            return Err(format!("{}: the page was reloaded", self.name).into());
        }
        Ok(())
    }

    /// Saves `target/screenshots/<name>-<screen>.png` once the page has settled (fonts and
    /// images loaded, no animation frame pending).
    pub async fn screenshot(&self, screen: &str) -> Result {
        self.client
            .execute_async(
                "const done = arguments[0]; window.scrollTo(0, 0); document.fonts.ready.then(() => requestAnimationFrame(() => requestAnimationFrame(() => done(null))));",
                vec![],
            )
            .await?;
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{}-{screen}.png", self.name)), png)?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

//! chromedriver as a child process, and a small wrapper over a fantoccini session with waits
//! that poll (every 50 ms, up to 10 s) instead of sleeping.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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

/// axe-core, installed by `scripts/test` (`npm install --prefix target/axe axe-core@<pinned>`).
pub const AXE_JS: &str = "target/axe/node_modules/axe-core/axe.min.js";

fn axe_source() -> Result<&'static str> {
    static SOURCE: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let source = SOURCE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE_JS);
        std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "{}: {error}: run `scripts/test` (it installs axe-core from npm)",
                path.display()
            )
        })
    });
    match source {
        Ok(text) => Ok(text.as_str()),
        Err(error) => Err(error.clone().into()),
    }
}

/// What axe-core found on one screen: `{id, impact, help, nodes}` for each violated rule.
pub struct AxeResult {
    pub screen: String,
    pub violations: Vec<Value>,
}

impl AxeResult {
    pub fn count(&self, impact: &str) -> usize {
        self.violations
            .iter()
            .filter(|v| v["impact"] == impact)
            .count()
    }

    /// Serious and critical violations: the ones that fail the test.
    pub fn blocking(&self) -> Vec<String> {
        self.violations
            .iter()
            .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
            .map(|v| {
                format!(
                    "{}: {} [{}] {}",
                    self.screen, v["id"], v["impact"], v["nodes"]
                )
            })
            .collect()
    }
}

/// Prints a line per screen and the totals by impact; fails on any serious or critical one.
pub fn axe_verdict(results: &[AxeResult]) -> Result {
    let impacts = ["critical", "serious", "moderate", "minor"];
    let mut totals = [0; 4];
    for result in results {
        let counts: Vec<usize> = impacts.iter().map(|i| result.count(i)).collect();
        for (total, count) in totals.iter_mut().zip(&counts) {
            *total += count;
        }
        let ids: Vec<String> = result
            .violations
            .iter()
            .map(|v| {
                format!(
                    "{}({})",
                    v["id"].as_str().unwrap_or("?"),
                    v["impact"].as_str().unwrap_or("?")
                )
            })
            .collect();
        eprintln!("axe {:<24} {:?} {}", result.screen, counts, ids.join(" "));
    }
    eprintln!(
        "axe over {} screens: critical {}, serious {}, moderate {}, minor {}",
        results.len(),
        totals[0],
        totals[1],
        totals[2],
        totals[3]
    );
    let blocking: Vec<String> = results.iter().flat_map(AxeResult::blocking).collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "axe-core: serious or critical violations:\n{}",
            blocking.join("\n")
        )
        .into())
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

    /// Runs axe-core over the page as it is now. axe is handed to WebDriver as the script
    /// itself (not through `eval`, which the page's CSP refuses), once per page load.
    pub async fn axe(&self, screen: &str) -> Result<AxeResult> {
        let loaded = self
            .client
            .execute("return typeof window.axe === 'object';", vec![])
            .await?;
        if loaded != json!(true) {
            let script = format!("{}\nreturn typeof window.axe;", axe_source()?);
            let kind = self.client.execute(&script, vec![]).await?;
            if kind != json!("object") {
                return Err(format!("{}: axe-core did not load ({kind})", self.name).into());
            }
        }
        let value = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, { resultTypes: ['violations'] }) \
                   .then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, \
                      nodes: v.nodes.slice(0, 4).map((n) => n.target.join(' ')) })))) \
                   .catch((e) => done({ error: String(e) }));",
                vec![],
            )
            .await?;
        let violations = match value {
            Value::Array(list) => list,
            other => return Err(format!("{}: axe-core failed: {other}", self.name).into()),
        };
        Ok(AxeResult {
            screen: format!("{}/{screen}", self.name),
            violations,
        })
    }

    /// Runs an async script: it gets `done` as its argument and passes its result to it.
    pub async fn eval_async(&self, body: &str) -> Result<Value> {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        Ok(self.client.execute_async(&script, vec![]).await?)
    }

    /// Polls an async script (see `eval_async`) until it passes something truthy to `done`.
    pub async fn wait_async(&self, body: &str, what: &str) -> Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval_async(body).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                self.screenshot("FAILED").await.ok();
                return Err(format!("{}: timed out waiting for {what}", self.name).into());
            }
            actix_web::rt::time::sleep(POLL * 4).await;
        }
    }

    /// The service worker controls the page and its shell cache holds every file: the next
    /// start works without the server. Returns the cache's name.
    pub async fn wait_offline_ready(&self) -> Result<String> {
        let name = self
            .wait_async(
                "(async () => { \
                   if (!navigator.serviceWorker.controller) return null; \
                   const names = (await caches.keys()).filter((n) => n.startsWith('podo-shell-')); \
                   if (names.length !== 1) return null; \
                   const stored = await (await caches.open(names[0])).keys(); \
                   return stored.length > 20 ? names[0] : null; \
                 })().then(done, () => done(null));",
                "the service worker and its shell cache",
            )
            .await?;
        Ok(name.as_str().ok_or("cache name")?.to_owned())
    }

    /// Signs in with a token the test got from the API (the app reads it at start).
    pub async fn sign_in_with(&self, token: &str) -> Result {
        self.goto("/").await?;
        self.wait_for("#view[data-screen]").await?;
        let token_json = serde_json::to_string(token)?;
        self.client
            .execute(
                &format!("localStorage.setItem('podo.token', {token_json}); return null;"),
                vec![],
            )
            .await?;
        self.goto("/#/board").await?;
        self.client.refresh().await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

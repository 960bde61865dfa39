//! The web client in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real server started in-process. Run through `scripts/test`, which installs
//! Chromium and chromedriver (and axe-core) when they are missing. Screenshots land in
//! `target/screenshots/`.
#[path = "../api/helpers.rs"]
mod helpers;

mod accessibility;
mod browser;
mod client_files;
mod family_flow;
mod offline;
mod outage;
mod retries;

//! A real headless Chromium, driven through chromedriver (WebDriver) by
//! fantoccini: the dashboard's browser tests. Skipped, saying so, on a
//! machine without Debian's `chromium` and `chromium-driver` (never under
//! `CI=true`, where `.ci/run` installs them). With `RELAY_SCREENSHOTS=DIR`
//! the tests keep screenshots of the pages they see there (how
//! `docs/images/dashboard-*.png` are made).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser of its own for `test`, or `None` (after saying so) where
    /// this machine has none.
    pub async fn start(test: &str) -> Option<Self> {
        let have =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !crate::common::skip::unless(
            have,
            test,
            "Chromium and chromedriver (apt install chromium chromium-driver; .ci/run installs them)",
        ) {
            return None;
        }
        let port = crate::common::stand_ins::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Some(Self {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver on port {port} never took a session: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    /// The path (and query) the browser is at.
    pub async fn at(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Where the browser is once `arrived` says so (a click's navigation
    /// may still be under way when the click returns), or after 10 s.
    pub async fn wait_at(&self, arrived: impl Fn(&str) -> bool) -> String {
        let mut at = String::new();
        for _ in 0..100 {
            at = self.at().await;
            if arrived(&at) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        at
    }

    /// The page's text once it holds `needle` (a click's navigation may
    /// still be under way when the click returns), or after 10 s.
    pub async fn wait_text(&self, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text().await;
            if text.contains(needle) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text
    }

    /// The visible text of the page (empty while it is being replaced).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Keeps a screenshot of the page as `name.png`, with `RELAY_SCREENSHOTS`.
    pub async fn picture(&self, name: &str) {
        let Some(dir) = std::env::var_os("RELAY_SCREENSHOTS").map(PathBuf::from) else {
            return;
        };
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Whether the page opened a dialog (an `alert` some payload ran).
    pub async fn dialog(&self) -> Option<String> {
        self.client.get_alert_text().await.ok()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

//! A real browser for the web UI's tests: Debian's headless Chromium driven over WebDriver (the
//! W3C protocol, spoken here over plain HTTP to Debian's `chromedriver`). Only what the tests
//! use: open a page, find elements by CSS, click, type, read text, run a script, screenshot.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::{free_port, temp_dir, wait_until, TempDir};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One element of the page, as the driver names it.
#[derive(Clone, Debug)]
pub struct Element(String);

/// A headless Chromium session; the driver and browser are stopped on drop.
pub struct Browser {
    driver: Child,
    session: String,
    agent: ureq::Agent,
    _dir: TempDir,
}

fn program(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let p = Path::new(n);
        if p.is_absolute() {
            return p.exists().then(|| (*n).to_owned());
        }
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(n))
                .find(|f| f.exists())
                .map(|f| f.display().to_string())
        })
    })
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium of `width`×`height` pixels, trusting any
    /// certificate (the tests' balancers have certificates made by the tests).
    pub fn start(width: u32, height: u32) -> Result<Browser> {
        Self::start_with(width, height, true)
    }

    /// Like [`Browser::start`], with JavaScript turned off when `javascript` is false (to check
    /// that pages read without it).
    pub fn start_with(width: u32, height: u32, javascript: bool) -> Result<Browser> {
        let driver_bin = program(&["chromedriver", "/usr/lib/chromium/chromedriver"])
            .context("chromedriver is not installed (Debian: apt-get install chromium-driver)")?;
        let chromium = program(&["chromium", "/usr/lib/chromium/chromium", "chromium-browser"])
            .context("chromium is not installed (Debian: apt-get install chromium)")?;
        let dir = temp_dir("browser");
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("chromedriver.log"))?)
            .spawn()
            .context("start chromedriver")?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to answer", Duration::from_secs(30), || {
            let mut r = agent.get(&format!("{base}/status")).call().ok()?;
            let v: Value = r.body_mut().read_json().ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let profile = dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "profile.managed_default_content_settings.javascript":
                        if javascript { 1 } else { 2 },
                },
            },
        }}});
        let mut b = Browser {
            driver,
            session: base.clone(),
            agent,
            _dir: dir,
        };
        let made = b.call("POST", "/session", Some(caps))?;
        let id = made["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {made}"))?;
        b.session = format!("{base}/session/{id}");
        Ok(b)
    }

    /// A WebDriver command; its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.session);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self.agent.post(&url).send_json(b.unwrap_or(json!({}))),
        }
        .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let v: Value = resp.body_mut().read_json().context("a WebDriver answer")?;
        if status != 200 {
            bail!(
                "{method} {path}: {} {}",
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<Element> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(Element(
            v[ELEMENT]
                .as_str()
                .ok_or_else(|| anyhow!("no element reference in {v}"))?
                .to_owned(),
        ))
    }

    /// Every element matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn click(&self, e: &Element) -> Result<()> {
        self.call("POST", &format!("/element/{}/click", e.0), None)
            .map(drop)
    }

    /// Replaces what an input holds with `text`.
    pub fn fill(&self, e: &Element, text: &str) -> Result<()> {
        self.call("POST", &format!("/element/{}/clear", e.0), None)?;
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> Result<String> {
        Ok(self
            .call("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> Result<String> {
        self.text(&self.find(css)?)
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub fn run(&self, script: &str, args: Value) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Waits until `css` matches an element whose text contains `text`; that text.
    pub fn wait_text(&self, css: &str, text: &str, timeout: Duration) -> String {
        wait_until(&format!("{css:?} to show {text:?}"), timeout, || {
            self.find_all(css).ok()?.iter().find_map(|e| {
                let t = self.text(e).ok()?;
                t.contains(text).then_some(t)
            })
        })
    }

    /// Presses and releases one key (a W3C code point such as `"\u{E004}"` for Tab) in the
    /// focused element, as a keyboard would.
    pub fn press(&self, key: &str) -> Result<()> {
        self.call(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                    {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
                ]}]}),
            ),
        )
        .map(drop)
    }

    /// Resizes the window (a phone's width, a laptop's).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .map(drop)
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .context("decode the screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.contains("/session/") {
            let _ = self.call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

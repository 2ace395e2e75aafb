//! `cuttle package upload|list|download|delete`: the built-in repository from a build pipeline;
//! and `cuttle events export`, the other command that streams.
//! Uploads stream the file (hashed first, so the server can refuse a copy that changed on the
//! way) with a progress line on a terminal; downloads are written beside their destination and
//! renamed into place only once their hash matches.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cuttle_core::PackageFileName;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Api;

fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mib(n: u64) -> f64 {
    n as f64 / 1_048_576.0
}

/// Counts what passes through and, on a terminal, redraws one progress line at most 5 times a
/// second.
struct Progress<R> {
    inner: R,
    what: String,
    done: u64,
    total: u64,
    started: Instant,
    drawn: Instant,
    tty: bool,
}

impl<R> Progress<R> {
    fn new(inner: R, what: String, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            inner,
            what,
            done: 0,
            total,
            started: now,
            drawn: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn draw(&self, last: bool) {
        if !self.tty {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        eprint!(
            "\r{}: {:.1} / {:.1} MiB ({pct:.0}%) {:.0} MiB/s   {}",
            self.what,
            mib(self.done),
            mib(self.total),
            mib(self.done) / secs,
            if last { "\n" } else { "" }
        );
        let _ = std::io::stderr().flush();
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.drawn.elapsed() >= Duration::from_millis(200) || n == 0 {
            self.drawn = Instant::now();
            self.draw(n == 0);
        }
        Ok(n)
    }
}

/// `GET url` with the key, its body left to be streamed; an error status is the server's
/// message.
fn streamed_get(api: &Api, url: &str) -> Result<ureq::http::Response<ureq::Body>> {
    let mut resp = api
        .streaming_agent()?
        .get(url)
        .header("X-Api-Key", api.key.as_deref().unwrap_or_default())
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    if status >= 400 {
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("{}", error_text(status, &text));
    }
    Ok(resp)
}

fn error_text(status: u16, text: &str) -> String {
    let msg = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.to_owned());
    format!("{status}: {msg}")
}

/// Uploads `file`, named `PackageId.Version.ext`; returns the stored version.
pub(crate) fn upload(api: &Api, space: &str, file: &Path, replace: bool) -> Result<Value> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed = PackageFileName::parse(&name)?;
    let (size, sha) = sha256_of(file)?;
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let version = parsed.version.to_string();
    let url = format!(
        "{}/api/spaces/{space}/packages/raw?package_id={}&version={}&format={}{}",
        api.base,
        parsed.package_id,
        version.replace('+', "%2B"),
        parsed.format,
        if replace { "&replace=true" } else { "" }
    );
    let mut body = Progress::new(
        f,
        format!("uploading {} {version}", parsed.package_id),
        size,
    );
    let resp = api
        .streaming_agent()?
        .post(&url)
        .header("X-Api-Key", api.key.as_deref().unwrap_or_default())
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", &size.to_string())
        .header("Expect", "100-continue")
        .header("X-Content-SHA256", &sha)
        .send(ureq::SendBody::from_reader(&mut body));
    let mut resp = resp.with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().context("read response")?;
    if status >= 400 {
        bail!("{}", error_text(status, &text));
    }
    serde_json::from_str(&text).context("the server's answer is not JSON")
}

/// Downloads a version to `out` (a file, or a folder to put `PackageId.Version.ext` in);
/// returns where it went.
pub(crate) fn download(
    api: &Api,
    space: &str,
    package_id: &str,
    version: &str,
    out: Option<PathBuf>,
) -> Result<PathBuf> {
    let meta = api.json(
        "GET",
        &format!("/api/spaces/{space}/packages/{package_id}/{version}"),
        None,
    )?;
    let name = format!(
        "{}.{}.{}",
        meta["package_id"].as_str().unwrap_or(package_id),
        meta["version"].as_str().unwrap_or(version),
        meta["format"].as_str().unwrap_or("zip")
    );
    let dest = match out {
        Some(p) if p.is_dir() => p.join(&name),
        Some(p) => p,
        None => PathBuf::from(&name),
    };
    let want = meta["sha256"].as_str().unwrap_or_default().to_owned();
    let size = meta["size"].as_u64().unwrap_or(0);
    let url = format!(
        "{}/api/spaces/{space}/packages/{package_id}/{}/raw",
        api.base,
        version.replace('+', "%2B")
    );
    let mut resp = streamed_get(api, &url)?;
    let partial = dest.with_extension("partial");
    let mut file =
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut body = Progress::new(reader, format!("downloading {name}"), size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).context("read the download")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("write {}", partial.display()))?;
    }
    file.sync_all()?;
    let got = hex(&hasher.finalize());
    if got != want {
        let _ = std::fs::remove_file(&partial);
        bail!("the download's SHA-256 is {got}, not the repository's {want}; nothing was kept");
    }
    std::fs::rename(&partial, &dest).with_context(|| format!("rename to {}", dest.display()))?;
    Ok(dest)
}

/// Streams `GET /api/events/export` to stdout.
pub(crate) fn export_events(api: &Api, from: Option<&str>, to: Option<&str>) -> Result<()> {
    let mut url = format!("{}/api/events/export", api.base);
    let mut sep = '?';
    for (k, v) in [("from", from), ("to", to)] {
        if let Some(v) = v {
            url.push_str(&format!("{sep}{k}={v}"));
            sep = '&';
        }
    }
    let mut resp = streamed_get(api, &url)?;
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let stdout = std::io::stdout();
    std::io::copy(&mut reader, &mut stdout.lock()).context("write the events")?;
    Ok(())
}

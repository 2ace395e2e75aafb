//! Packages for tests, generated on the fly (never stored): any size, the same bytes for the
//! same seed at every offset (so a range can be checked without keeping the file), with the
//! first bytes of the archive format they claim to be.

use std::io::Read;

use sha2::{Digest, Sha256};

/// A package's bytes: `magic`, then pseudo-random bytes that depend only on seed and offset.
#[derive(Clone)]
pub struct Generated {
    seed: u64,
    magic: Vec<u8>,
    pub size: u64,
    pos: u64,
}

fn word(seed: u64, i: u64) -> u64 {
    // splitmix64 of (seed, index): any word can be made without the ones before it.
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Generated {
    /// `size` bytes starting with the zip signature.
    pub fn zip(seed: u64, size: u64) -> Generated {
        Generated::with_magic(seed, size, b"PK\x03\x04")
    }

    /// `size` bytes starting with the gzip signature.
    pub fn gzip(seed: u64, size: u64) -> Generated {
        Generated::with_magic(seed, size, &[0x1f, 0x8b, 0x08])
    }

    pub fn with_magic(seed: u64, size: u64, magic: &[u8]) -> Generated {
        Generated {
            seed,
            magic: magic.to_vec(),
            size,
            pos: 0,
        }
    }

    /// Fills `buf` with the bytes at `offset`.
    pub fn fill_at(&self, offset: u64, buf: &mut [u8]) {
        for (k, b) in buf.iter_mut().enumerate() {
            let at = offset + k as u64;
            *b = match self.magic.get(at as usize) {
                Some(m) if at < self.magic.len() as u64 => *m,
                _ => word(self.seed, at / 8).to_le_bytes()[(at % 8) as usize],
            };
        }
    }

    /// The bytes from `offset`, `len` of them.
    pub fn bytes_at(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill_at(offset, &mut v);
        v
    }

    /// All of it (for small packages).
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes_at(0, self.size as usize)
    }

    /// Lower-case hex SHA-256 of the whole package, generated as it is hashed.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        let mut r = self.clone();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = r.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size - self.pos).min(buf.len() as u64) as usize;
        // Whole words at a time where the magic is behind us: this runs at gigabytes a second.
        let (start, out) = (self.pos, &mut buf[..n]);
        if start >= self.magic.len() as u64 && start % 8 == 0 {
            let mut chunks = out.chunks_exact_mut(8);
            for (i, c) in (start / 8..).zip(&mut chunks) {
                c.copy_from_slice(&word(self.seed, i).to_le_bytes());
            }
            let rest = chunks.into_remainder();
            let tail = start + (n - rest.len()) as u64;
            self.fill_at(tail, rest);
        } else {
            self.fill_at(start, out);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A `multipart/form-data` body holding one file part: its content type and bytes.
pub fn multipart(file_name: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "cuttle-test-7f3a9c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nuploaded by a test\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Peak resident memory of a process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sends `body` (`len` bytes, streamed) to `url` with a key and headers; the status and the JSON
/// answer (or its text as a JSON string).
pub fn upload(
    agent: &ureq::Agent,
    url: &str,
    key: &str,
    content_type: &str,
    mut body: impl Read,
    len: u64,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = agent
        .post(url)
        .header("X-Api-Key", key)
        .header("Content-Type", content_type)
        .header("Content-Length", &len.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req
        .send(ureq::SendBody::from_reader(&mut body))
        .unwrap_or_else(|e| panic!("upload to {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// A download: status, headers (lower-case names), and the body (at most `max` bytes read).
pub struct Downloaded {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

pub fn download(agent: &ureq::Agent, url: &str, key: &str, headers: &[(&str, &str)]) -> Downloaded {
    let mut req = agent.get(url).header("X-Api-Key", key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("download {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let _ = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .read_to_end(&mut body);
    Downloaded {
        status,
        headers,
        body,
    }
}

//! API keys: `X-Api-Key: KEY` or `Authorization: Bearer KEY`, checked against SHA-256 hashes
//! in the database. Keys are long random strings, so a fast hash is enough and a short-lived
//! cache of known hashes saves a database round trip per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use cuttle_core::{ErrorCode, NewEvent};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// How long a key found in the database is trusted without looking again: a revoked key stops
/// working on every node within this.
const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 1024;
/// Unknown keys one client address may present per window; past this it gets 429 until the
/// window ends, and its keys are not looked up.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once (bounded memory under a flood).
const FAILURES_MAX: usize = 10_000;

#[derive(Default)]
pub(crate) struct KeyCache {
    known: Mutex<HashMap<String, (String, Instant)>>,
    /// Failed authentications per client address: how many, since when.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl KeyCache {
    /// Forgets every known key (after a revoke on this node: it takes effect here at once).
    pub(crate) fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// `Some(wait)` while `client` has used up its failures for the current window.
    fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = failures.get(&client)?;
        let left = FAILURE_WINDOW
            .checked_sub(now.duration_since(*since))
            .filter(|left| !left.is_zero())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    fn failed(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= FAILURES_MAX && !failures.contains_key(&client) {
            failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if failures.len() >= FAILURES_MAX {
                failures.clear();
            }
        }
        let entry = failures.entry(client).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

/// Who made a request: the API key's name, and the client address believed under
/// `CUTTLE_TRUSTED_PROXIES`.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) address: String,
}

impl Caller {
    /// The audit event of a change this caller made; the store writes it in the change's own
    /// transaction.
    pub(crate) fn event(
        &self,
        action: &str,
        target: impl ToString,
        details: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            actor: self.name.clone(),
            action: action.to_owned(),
            target: target.to_string(),
            client_address: self.address.clone(),
            details,
        }
    }
}

/// SHA-256 of an API key, hex: the only form ever stored.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.trim().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random API key, `API-` and 32 characters of URL-safe base64 (192 bits).
pub fn generate_api_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(format!(
        "API-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = presented_key(req.headers()).filter(|k| !k.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "an API key is required: send X-Api-Key or Authorization: Bearer",
        ));
    };
    let client = client_address(&state, &req);
    let hash = hash_api_key(key);
    let cached = {
        let known = state.keys.known.lock().expect("key cache lock");
        known
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(n, _)| n.clone())
    };
    let name = match cached {
        Some(n) => n,
        None => {
            // A client guessing keys is stopped here, without a database query per guess.
            if let Some(wait) = client.and_then(|c| state.keys.blocked(c, Instant::now())) {
                let secs = wait.as_secs().max(1);
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("too many failed authentications from this address; retry in {secs} s"),
                )
                .retry_after(secs));
            }
            match state.store.api_key_name(&hash).await? {
                Some(n) => {
                    let mut known = state.keys.known.lock().expect("key cache lock");
                    if known.len() >= CACHE_MAX {
                        known.clear();
                    }
                    known.insert(hash, (n.clone(), Instant::now()));
                    n
                }
                None => {
                    if let Some(c) = client {
                        state.keys.failed(c, Instant::now());
                    }
                    tracing::info!(client = ?client, "unknown API key");
                    return Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key"));
                }
            }
        }
    };
    let address = client.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    req.extensions_mut().insert(Caller { name, address });
    Ok(next.run(req).await)
}

/// The client's address: the socket peer, or what a trusted proxy says it forwarded for.
fn client_address(state: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    // Proxies may add their own header line instead of extending the client's; several lines
    // mean the same as one comma-joined line, in order.
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    Some(
        state
            .config
            .trusted_proxies
            .client_address(peer, forwarded.as_deref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("API-") && a.len() == 36, "{a}");
        assert_eq!(hash_api_key(&a), hash_api_key(&format!(" {a} ")));
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer  k1".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k2"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&basic), None);
    }

    #[test]
    fn a_client_that_keeps_failing_waits_out_the_window() {
        let cache = KeyCache::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(cache.blocked(a, t0).is_none());
            cache.failed(a, t0);
        }
        let wait = cache.blocked(a, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(wait, FAILURE_WINDOW - Duration::from_secs(5));
        assert!(
            cache.blocked(b, t0).is_none(),
            "other clients are not affected"
        );
        assert!(
            cache.blocked(a, t0 + FAILURE_WINDOW).is_none(),
            "the window ends"
        );
        cache.failed(a, t0 + FAILURE_WINDOW);
        assert!(
            cache.blocked(a, t0 + FAILURE_WINDOW).is_none(),
            "a new window counts afresh"
        );
    }
}

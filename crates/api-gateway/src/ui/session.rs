//! The web UI's sign-in: the API key a person signs in with — or, for a user made with
//! `cuttle-server admin create`, their id and record version — kept sealed (AES-GCM under the
//! cluster's variable key, which every node holds) with its expiry in an HttpOnly,
//! SameSite=Strict cookie (Secure under HTTPS). Every request re-checks the key the normal way
//! (or that the user still exists at that version), so a revoked key, a deleted user or a new
//! password signs the browser out on every node within a second. State-
//! changing forms carry a token derived from the cookie (HMAC under the cluster's API-key
//! secret): another site can neither read it nor forge it.

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};

use crate::auth::now_ms;
use crate::AppState;

pub(crate) const COOKIE: &str = "cuttle_session";
/// How long a sign-in lasts.
pub(crate) const SESSION_SECS: i64 = 12 * 3600;

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The API key (empty for a user's session).
    #[serde(default)]
    k: String,
    /// A user's session: their id and the version of their record it was made at (a new
    /// password makes a new version, ending the session).
    #[serde(default)]
    u: Option<(i64, i64)>,
    /// Expiry, Unix milliseconds.
    e: i64,
}

/// Who a session is.
pub(crate) enum Signed {
    Key(String),
    User { id: i64, version: i64 },
}

fn seal_body(s: &AppState, sealed: &Sealed) -> Option<String> {
    let body = serde_json::to_vec(sealed).ok()?;
    s.variable_key.encrypt(&body).ok()
}

/// The cookie value for a sign-in with `key`.
pub(crate) fn seal(s: &AppState, key: &str) -> Option<String> {
    seal_body(
        s,
        &Sealed {
            k: key.to_owned(),
            u: None,
            e: now_ms() + SESSION_SECS * 1000,
        },
    )
}

/// The cookie value for a user's sign-in.
pub(crate) fn seal_user(s: &AppState, id: i64, version: i64) -> Option<String> {
    seal_body(
        s,
        &Sealed {
            k: String::new(),
            u: Some((id, version)),
            e: now_ms() + SESSION_SECS * 1000,
        },
    )
}

/// Who a cookie value signs in, if it is one of ours and has not expired.
pub(crate) fn open(s: &AppState, value: &str) -> Option<Signed> {
    let plain = s.variable_key.decrypt(value).ok()?;
    let sealed: Sealed = serde_json::from_slice(&plain).ok()?;
    if sealed.e <= now_ms() {
        return None;
    }
    match sealed.u {
        Some((id, version)) => Some(Signed::User { id, version }),
        None if !sealed.k.is_empty() => Some(Signed::Key(sealed.k)),
        None => None,
    }
}

/// The session cookie's value in a request, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The form token of a session.
pub(crate) fn csrf_token(s: &AppState, cookie_value: &str) -> String {
    s.hasher.hash(&format!("ui-form {cookie_value}"))[..32].to_owned()
}

/// Does a token match the session's (in constant time)?
pub(crate) fn csrf_ok(s: &AppState, cookie_value: &str, token: &str) -> bool {
    let want = csrf_token(s, cookie_value);
    want.len() == token.len()
        && want
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Was the request sent by a page of this origin? A browser says so in `Origin` (and
/// `Sec-Fetch-Site`) on every form post; a request without either (a script, curl) is judged by
/// its token alone.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

/// `Set-Cookie` for a sign-in (or, with `None`, a sign-out).
pub(crate) fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{secure}"
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_origins_are_compared_with_the_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; cuttle_session=abc+/=; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h), Some("abc+/="));
        h.insert(header::HOST, "cuttle.example.com".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            "https://cuttle.example.com".parse().unwrap(),
        );
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example.com".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            "https://cuttle.example.com".parse().unwrap(),
        );
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
        let c = set_cookie(Some("v"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }
}

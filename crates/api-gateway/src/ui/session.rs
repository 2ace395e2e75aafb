//! The web UI's sign-in: a session the cluster keeps (`ui_sessions`). The browser's cookie holds
//! only a random id (256 bits; HttpOnly, SameSite=Strict, Secure under HTTPS); the database holds
//! its HMAC, who signed in — the HMAC of the API key they used, or a user's id and the version of
//! their record — and an expiry the database clock fixed when it was made (12 hours). Signing out
//! deletes the row, so the cookie stops working on every node (each trusts what it read for a
//! second at most). Every request also re-checks the key the normal way (or that the user still
//! exists at that version), so a revoked key, a deleted user or a new password signs the browser
//! out too. Nothing in the cookie can be forged or replayed after sign-out: it is not sealed data,
//! only a name for a row. State-changing forms carry a token derived from the cookie (HMAC under
//! the cluster's API-key secret): another site can neither read it nor forge it.

use std::time::Duration;

use axum::http::{header, HeaderMap};
use cuttle_storage::{generate_session_id, NewSession, SessionOf, MAX_SESSION_SECS};

use crate::auth::Caller;
use crate::AppState;

pub(crate) const COOKIE: &str = "cuttle_session";
/// How long a sign-in lasts.
pub(crate) const SESSION_SECS: i64 = MAX_SESSION_SECS as i64;
/// How long a node trusts a session it read without reading it again: a sign-out elsewhere
/// reaches it within this.
const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 4096;

/// The HMAC a session's id is stored under.
fn id_hash(s: &AppState, id: &str) -> String {
    s.data_keys.get().hasher.hash(&format!("ui-session {id}"))
}

/// Starts a session for `of`: its row (with the sign-in's audit event, `by` as the actor), and
/// the cookie value naming it.
pub(crate) async fn start(
    s: &AppState,
    of: SessionOf,
    by: &Caller,
) -> Result<String, crate::error::ApiError> {
    let id = generate_session_id()?;
    let audit =
        cuttle_storage::audit_as(by.event("ui.sign_in", &by.principal, serde_json::json!({})));
    s.store
        .create_session(
            &NewSession {
                id_hash: id_hash(s, &id),
                of,
                lifetime_secs: MAX_SESSION_SECS,
            },
            Some(audit),
        )
        .await?;
    Ok(id)
}

/// Who a cookie value signs in, while its session lasts (from this node's cache for a second
/// at most, else the database).
pub(crate) async fn open(
    s: &AppState,
    value: &str,
) -> Result<Option<SessionOf>, crate::error::ApiError> {
    // Not one of ours: no need to ask the database.
    if value.len() != 43
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(None);
    }
    let hash = id_hash(s, value);
    if let Some(of) = s.keys.cached_session(&hash, CACHE_TTL) {
        return Ok(Some(of));
    }
    let found = s.store.find_session(&hash).await?.map(|r| r.of);
    if let Some(of) = &found {
        s.keys.cache_session(hash, of.clone(), CACHE_MAX);
    }
    Ok(found)
}

/// Ends the session a cookie value names (sign-out), on every node.
pub(crate) async fn end(s: &AppState, value: &str, by: &Caller) {
    let hash = id_hash(s, value);
    s.keys.forget_session(&hash);
    let audit =
        cuttle_storage::audit_as(by.event("ui.sign_out", &by.principal, serde_json::json!({})));
    if let Err(e) = s.store.end_session(&hash, Some(audit)).await {
        tracing::warn!(error = %e, "end a web session");
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
    s.data_keys
        .get()
        .hasher
        .hash(&format!("ui-form {cookie_value}"))[..32]
        .to_owned()
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

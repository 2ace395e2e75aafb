//! API keys: `X-Api-Key: KEY` or `Authorization: Bearer KEY`, looked up by their HMAC-SHA-256
//! in the database (see `cuttle_storage::ApiKeyHasher`), then checked against the scope the
//! route needs (declared beside it, `crate::scoped`). A short-lived cache of known keys saves a database round trip
//! per request; unknown keys are never cached, and a client presenting too many is stopped
//! before its guesses reach the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use cuttle_core::{format_rfc3339_ms, ErrorCode, NewEvent, Scope, UnixMs};
use cuttle_storage::{ApiKeyHasher, ApiKeyRow};

use crate::error::ApiError;
use crate::scoped::{Need, RouteNeeds};
use crate::AppState;

/// How long a key found in the database is trusted without looking again: a revoked key stops
/// working on every node within this.
const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 1024;
/// A key not found makes the node re-read the data keys if it last read them longer ago than
/// this (a rotation of the API-key secret elsewhere): at most once a second, whatever is tried.
const REREAD_KEYS_AFTER: Duration = Duration::from_secs(1);
/// The id of the admin key a node minted into its data directory (`ApiKeys-N` as a number).
pub const SETTING_FIRST_ADMIN_KEY: &str = "first_admin_key";
/// Set (to the node that saw it) once that key has been used: its file is then removed.
pub const SETTING_FIRST_ADMIN_KEY_USED: &str = "first_admin_key_used";

#[derive(Default)]
pub(crate) struct KeyCache {
    known: Mutex<HashMap<String, (ApiKeyRow, Instant)>>,
    /// Failed authentications: per client, per user name, per node.
    pub(crate) throttle: crate::throttle::Throttle,
    /// The minted first admin key, until this node has recorded its first use.
    first_key: Option<i64>,
    first_use_noted: std::sync::atomic::AtomicBool,
    /// Web UI sessions read from the database, by the HMAC of their id: whose, since when.
    sessions: Mutex<HashMap<String, (cuttle_storage::SessionOf, Instant)>>,
}

impl KeyCache {
    pub(crate) fn watching_first(first_key: Option<i64>) -> KeyCache {
        KeyCache {
            first_key,
            ..KeyCache::default()
        }
    }

    /// A session read less than `ttl` ago.
    pub(crate) fn cached_session(
        &self,
        hash: &str,
        ttl: Duration,
    ) -> Option<cuttle_storage::SessionOf> {
        let cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(of, _)| of.clone())
    }

    pub(crate) fn cache_session(&self, hash: String, of: cuttle_storage::SessionOf, max: usize) {
        let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= max {
            cache.clear();
        }
        cache.insert(hash, (of, Instant::now()));
    }

    pub(crate) fn forget_session(&self, hash: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// Whether `id` is the minted first key, used here for the first time.
    fn first_use(&self, id: i64) -> bool {
        self.first_key == Some(id)
            && !self
                .first_use_noted
                .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets every known key (after a revoke on this node: it takes effect here at once).
    pub(crate) fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Who made a request: the API key (its name is the actor of audit events), and the client
/// address believed under `CUTTLE_TRUSTED_PROXIES`.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) address: String,
    /// The API key (`ApiKeys-3`) or web UI user (`Users-2`) acting.
    pub(crate) principal: String,
    pub(crate) scope: Scope,
    /// For a `register-target` key: the one target it may register.
    pub(crate) target: Option<String>,
    /// For a `register-target` key: what that target may claim (none: nothing).
    pub(crate) grant: Option<cuttle_core::TargetGrant>,
}

impl Caller {
    /// The caller a found API key is, from `client` (REST's and gRPC's one way to say so).
    pub(crate) fn of_key(found: ApiKeyRow, client: Option<IpAddr>) -> Caller {
        Caller {
            name: found.name,
            address: client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            principal: format!("ApiKeys-{}", found.id),
            scope: found.scope,
            target: found.target_name,
            grant: found.grant,
        }
    }

    /// Who this is in audit events and records: the key's or user's name and id
    /// (`ci (ApiKeys-3)`, `alice (Users-2)`).
    pub(crate) fn actor(&self) -> String {
        format!("{} ({})", self.name, self.principal)
    }

    /// Refuses to queue or cancel a task of a kind this caller's scope does not reach (a 403
    /// naming the scope the kind needs).
    pub(crate) fn check_kind(&self, kind: &str) -> Result<(), ApiError> {
        let needed = cuttle_core::kind_queue_scope(kind);
        if self.scope.grants(needed) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a {kind} task needs scope {needed}; {} has scope {}",
                self.name, self.scope
            ),
        ))
    }

    /// For a `register-target` key, refuses any target but its own (operators and admins may
    /// touch any target).
    pub(crate) fn check_own_target(&self, name: &str) -> Result<(), ApiError> {
        match (&self.scope, &self.target) {
            (Scope::RegisterTarget, Some(own)) if own == name => Ok(()),
            (Scope::RegisterTarget, own) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this register-target key may only register the target {:?}, not {name:?}",
                    own.as_deref().unwrap_or("")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The audit event of a change this caller made; the store writes it in the change's own
    /// transaction.
    pub(crate) fn event(
        &self,
        action: &str,
        target: impl ToString,
        details: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            actor: self.actor(),
            action: action.to_owned(),
            target: target.to_string(),
            client_address: self.address.clone(),
            details,
        }
    }
}

/// The API key check's state: the node's, and what each route needs.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) state: AppState,
    pub(crate) needs: Arc<RouteNeeds>,
}

/// Whether a key of `scope` may call a route needing `need`; the 403 naming what is missing
/// otherwise.
/// `what` names the call (`POST /api/tasks`, `cuttle.v1.Tasks/Create`).
pub(crate) fn authorize(scope: Scope, need: Need, what: &str) -> Result<(), ApiError> {
    if scope.grants(need.scope) || (need.register_target && scope == Scope::RegisterTarget) {
        return Ok(());
    }
    let wanted = if need.register_target {
        format!(
            "scope {} (or register-target, for its own target)",
            need.scope
        )
    } else {
        format!("scope {}", need.scope)
    };
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("{what} needs {wanted}; this API key has scope {scope}"),
    ))
}

/// This node's clock in Unix milliseconds (expiry of keys already read from the database).
pub(crate) fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMs)
}

pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) async fn require_api_key(
    State(Guard { state, needs }): State<Guard>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = presented_key(req.headers()).filter(|k| !k.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "an API key is required: send X-Api-Key or Authorization: Bearer",
        ));
    };
    let client = client_address(&state, req.headers(), req.extensions());
    let found = authenticate(&state, key, client).await?;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    if let Err(refused) = authorize(
        found.scope,
        needs.need(req.method(), &route),
        &format!("{} {route}", req.method()),
    ) {
        // A known key, refused for its scope: what its client still sends is read and dropped
        // (bounded, within the body deadline), so it hears the 403 instead of a reset of a
        // connection closed with its body unread.
        let (parts, body) = req.into_parts();
        let idle = state.config.limits.body_timeout;
        crate::resources::packages::drain_refused(
            &parts.headers,
            &mut body.into_data_stream(),
            idle,
        )
        .await;
        return Err(refused);
    }
    req.extensions_mut().insert(Caller::of_key(found, client));
    Ok(next.run(req).await)
}

/// The key a presented secret is (from this node's cache for a second at most, else the
/// database), refusing an unknown or expired one, and a client that guessed too often.
pub(crate) async fn authenticate(
    state: &AppState,
    key: &str,
    client: Option<IpAddr>,
) -> Result<ApiKeyRow, ApiError> {
    let keys = state.data_keys.get();
    let hash = keys.hasher.hash(key);
    let cached = {
        let known = state.keys.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(k, _)| k.clone())
    };
    let found = match cached {
        Some(k) => k,
        None => lookup(state, key, &keys, client).await?,
    };
    if let Some(at) = found.expires_at.filter(|at| *at <= now_ms()) {
        return Err(expired(&found, at));
    }
    Ok(found)
}

/// The key stored under `hash` (a web session made with it), refusing a revoked or expired one:
/// from this node's cache for a second at most, else the database.
pub(crate) async fn authenticate_hash(state: &AppState, hash: &str) -> Result<ApiKeyRow, ApiError> {
    let cached = {
        let known = state.keys.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(k, _)| k.clone())
    };
    let found = match cached {
        Some(k) => k,
        None => {
            let Some(found) = state.store.find_api_key(hash, &[]).await? else {
                return Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key"));
            };
            let mut known = state.keys.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= CACHE_MAX {
                known.clear();
            }
            known.insert(hash.to_owned(), (found.key.clone(), Instant::now()));
            found.key
        }
    };
    if let Some(at) = found.expires_at.filter(|at| *at <= now_ms()) {
        return Err(expired(&found, at));
    }
    Ok(found)
}

fn expired(key: &ApiKeyRow, at: UnixMs) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        format!(
            "API key {} ({}) expired at {}",
            key.prefix,
            key.name,
            format_rfc3339_ms(at)
        ),
    )
}

/// Finds a key not in the cache: one query, by its HMAC, its HMAC under the previous secret
/// (during a rotation of the secret) or (made before schema 5) its bare SHA-256; a key found by
/// either of those is then stored under its HMAC.
async fn lookup(
    state: &AppState,
    key: &str,
    keys: &Arc<cuttle_storage::Keys>,
    client: Option<IpAddr>,
) -> Result<ApiKeyRow, ApiError> {
    // A client guessing keys is stopped here, without a database query per guess.
    if let Some(wait) = client.and_then(|c| state.keys.throttle.client_blocked(c, Instant::now())) {
        let secs = wait.as_secs().max(1);
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!("too many failed authentications from this address; retry in {secs} s"),
        )
        .retry_after(secs));
    }
    let legacy = ApiKeyHasher::legacy_hash(key);
    let find = |hasher: Arc<cuttle_storage::Keys>| {
        let legacy = legacy.clone();
        async move {
            let hash = hasher.hasher.hash(key);
            let previous = hasher.hasher.previous_hash(key);
            let others: Vec<&str> = previous
                .iter()
                .map(String::as_str)
                .chain([legacy.as_str()])
                .collect();
            let found = state.store.find_api_key(&hash, &others).await?;
            Ok::<_, ApiError>((found, hash, hasher))
        }
    };
    let (mut found, mut hash, mut keys) = find(keys.clone()).await?;
    if found.is_none() {
        // Another node may have re-hashed it under a secret this node has not read yet: read
        // the keys (at most once a second) and look again if they changed.
        if let Some(fresh) = state
            .data_keys
            .refresh_if_older(REREAD_KEYS_AFTER)
            .await?
            .filter(|k| k.hasher.secret_id() != keys.hasher.secret_id())
        {
            (found, hash, keys) = find(fresh).await?;
        }
    }
    let hasher = &keys.hasher;
    let Some(found) = found else {
        if let Some(c) = client {
            state.keys.throttle.client_failed(c, Instant::now());
        }
        tracing::info!(client = ?client, "unknown API key");
        return Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key"));
    };
    if found.expired {
        return Err(expired(
            &found.key,
            found.key.expires_at.unwrap_or_default(),
        ));
    }
    if found.stored_hash != hash || !hasher.is_current(&found.key.hashed_with) {
        let (id, from) = (found.key.id, &found.stored_hash);
        match state
            .store
            .upgrade_api_key_hash(id, from, &hash, &hasher.algorithm())
            .await
        {
            Ok(true) => tracing::info!(key = id, secret = %hasher.secret_id(),
                "API key re-hashed under the current secret"),
            Ok(false) => {} // another node did it
            Err(e) => tracing::warn!(key = id, error = %e, "re-hash API key"),
        }
    }
    if state.keys.first_use(found.key.id) {
        // The node that minted it removes its file from its data directory.
        let (store, node) = (state.store.clone(), state.config.node_name.clone());
        tokio::spawn(async move {
            if let Err(e) = store
                .init_setting(SETTING_FIRST_ADMIN_KEY_USED, &node)
                .await
            {
                tracing::warn!(error = %e, "record the first use of the first admin key");
            }
        });
    }
    let mut known = state.keys.known.lock().unwrap_or_else(|p| p.into_inner());
    if known.len() >= CACHE_MAX {
        known.clear();
    }
    known.insert(hash, (found.key.clone(), Instant::now()));
    Ok(found.key)
}

/// The client's address: the socket peer, or what a trusted proxy says it forwarded for.
pub(crate) fn client_address(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Option<IpAddr> {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    // Proxies may add their own header line instead of extending the client's; several lines
    // mean the same as one comma-joined line, in order.
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    // A balancer not listed as trusted: its header is ignored, and the node says so.
    if !state.config.trusted_proxies.contains(peer) {
        let sent = ["x-forwarded-for", "forwarded", "x-real-ip"]
            .into_iter()
            .find(|h| headers.contains_key(*h));
        if let Some(header) = sent {
            state.forwarders.note(peer, header);
        }
    }
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
    use axum::http::Method;

    #[test]
    fn every_route_needs_the_scope_the_docs_give_it() {
        let (_, needs) = crate::routes::keyed_routes();
        let (get, post) = ("GET", "POST");
        let check = |scope, method: &str, route| {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            authorize(scope, needs.need(&m, route), &format!("{method} {route}"))
        };
        assert!(check(Scope::Reader, get, "/api/tasks").is_ok());
        let e = check(Scope::Reader, post, "/api/tasks").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        assert!(
            e.message().contains("needs scope deployer")
                && e.message().contains("has scope reader"),
            "{}",
            e.message()
        );
        assert!(check(Scope::Deployer, post, "/api/tasks/{id}/cancel").is_ok());
        assert!(check(Scope::Deployer, "PATCH", "/api/nodes/{name}").is_err());
        assert!(check(Scope::Operator, "PATCH", "/api/nodes/{name}").is_ok());
        assert!(
            check(Scope::Operator, get, "/api/keys").is_err(),
            "keys are admin only"
        );
        assert!(check(Scope::Admin, post, "/api/keys").is_ok());
        assert!(check(Scope::Deployer, post, "/api/spaces/{space}/packages/raw").is_ok());
        assert!(check(Scope::Deployer, "PUT", "/api/spaces/{space}/projects/{id}").is_err());
        // register-target: its own registration and nothing else.
        assert!(check(Scope::RegisterTarget, post, "/api/targets").is_ok());
        for (m, r) in [
            ("PATCH", "/api/targets/{id}"),
            (get, "/api/targets"),
            (get, "/api/tasks"),
            (post, "/api/tasks"),
            ("DELETE", "/api/targets/{id}"),
        ] {
            assert!(check(Scope::RegisterTarget, m, r).is_err(), "{m} {r}");
        }
        // A route nobody declared is admin only.
        assert_eq!(
            needs.need(&Method::GET, "/api/new-thing").scope,
            Scope::Admin
        );
    }

    /// The scope table in docs/api.md and the routes say the same: every route the table
    /// names needs the scope it gives (a row's routes are the `METHOD /path` pairs in its first
    /// cell, with `…` rows left to the summary they are), and every route is in the reference.
    #[test]
    fn the_docs_give_each_route_its_declared_scope() {
        let (_, needs) = crate::routes::keyed_routes();
        let doc = include_str!("../../../docs/api.md");
        for d in needs.declared() {
            // `{*rest}` (a path's tail) is written `{rest}`.
            let written = format!("`{} {}", d.method, d.path.replace("{*", "{"));
            assert!(
                doc.contains(&written),
                "docs/api.md never names {} {}",
                d.method,
                d.path
            );
        }
        let table = doc
            .split("| method and path | scope |")
            .nth(1)
            .expect("the scope table");
        let mut checked = 0;
        for row in table.lines().skip(1).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (routes, scope) = (cells[1], cells[2]);
            let Some(named) = scope.split('`').nth(1) else {
                continue;
            };
            let Ok(scope) = named.parse::<Scope>() else {
                continue;
            };
            for pair in routes.split('`').skip(1).step_by(2) {
                let Some((method, path)) = pair.split_once(' ') else {
                    continue;
                };
                if path.contains('…') || !path.starts_with('/') {
                    continue;
                }
                for m in method.split('/') {
                    let need = needs.need(&Method::from_bytes(m.as_bytes()).unwrap(), path);
                    assert_eq!(need.scope, scope, "docs/api.md: {m} {path}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} routes read from the table");
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
        use crate::throttle::{PER_CLIENT, WINDOW};
        let cache = KeyCache::default();
        let t = &cache.throttle;
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..PER_CLIENT {
            assert!(t.client_blocked(a, t0).is_none());
            t.client_failed(a, t0);
        }
        let wait = t.client_blocked(a, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(wait, WINDOW - Duration::from_secs(5));
        assert!(
            t.client_blocked(b, t0).is_none(),
            "other clients are not affected"
        );
        assert!(
            t.client_blocked(a, t0 + WINDOW).is_none(),
            "the window ends"
        );
        t.client_failed(a, t0 + WINDOW);
        assert!(
            t.client_blocked(a, t0 + WINDOW).is_none(),
            "a new window counts afresh"
        );
    }
}

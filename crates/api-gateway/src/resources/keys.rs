//! `/api/keys`: API keys created (the key is shown once, in the answer), listed (never a key or
//! its hash) and revoked.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{format_rfc3339_ms, ApiKeyRequest, ErrorCode};
use cuttle_storage::{audit_as, generate_api_key, key_prefix, ApiKeyRow, Audit, NewApiKey, Revoke};
use serde_json::{json, Value};

use crate::auth::{now_ms, Caller};
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};
use crate::openapi::{schemas, Op};
use crate::scoped::{Api, ADMIN};
use crate::AppState;

pub(crate) const ID_PREFIX: &str = "ApiKeys-";

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/keys",
            ADMIN,
            list,
            Op::new(
                "listApiKeys",
                "The API keys, oldest first (never a key or its hash)",
            )
            .ok("every key", schemas::keys),
        )
        .post(
            "/api/keys",
            ADMIN,
            create,
            Op::new("createApiKey", "Makes an API key")
                .body(|g| g.request::<ApiKeyRequest>())
                .created(
                    "the key's record and the key itself, sent this once",
                    schemas::new_key,
                )
                .refuses(409, "the name is taken"),
        )
        .delete(
            "/api/keys/{id}",
            ADMIN,
            revoke,
            Op::new("revokeApiKey", "Revokes an API key")
                .no_content("revoked: every node refuses it within a second")
                .refuses(409, "it is the cluster's last working admin key"),
        )
}

fn key_id(raw: &str) -> Result<i64, ApiError> {
    raw.strip_prefix(ID_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no API key {raw}")))
}

/// A key as shown: never the key or its hash, only the prefix it starts with.
fn shown(k: &ApiKeyRow) -> Value {
    json!({
        "id": format!("{ID_PREFIX}{}", k.id),
        "name": k.name,
        "scope": k.scope,
        "prefix": k.prefix,
        "target": k.target_name,
        "environments": k.grant.as_ref().map(|g| g.environments.clone()),
        "roles": k.grant.as_ref().map(|g| g.roles.clone()),
        "reusable": k.grant.as_ref().map(|g| g.reusable),
        "created_at": format_rfc3339_ms(k.created_at),
        "expires_at": k.expires_at.map(format_rfc3339_ms),
        "expired": k.expires_at.is_some_and(|at| at <= now_ms()),
    })
}

async fn list(State(s): State<AppState>) -> ApiResult {
    let keys = s.store.list_api_keys().await?;
    let items: Vec<_> = keys.iter().map(shown).collect();
    Ok(Json(Page::all(items)).into_response())
}

/// Creates a key and answers with it, once: only its HMAC is stored.
async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<ApiKeyRequest>,
) -> ApiResult {
    let (row, key) = create_key(&s, &caller, req).await?;
    let mut body = shown(&row);
    body["key"] = Value::String(key);
    // The only time the key is sent: no cache may keep it.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Makes a key (audited): its record and the key itself, which is never stored (only its
/// HMAC) and so never available again. REST's and gRPC's one way.
pub(crate) async fn create_key(
    s: &AppState,
    caller: &Caller,
    req: ApiKeyRequest,
) -> Result<(ApiKeyRow, String), ApiError> {
    let lifetime = req.validate()?;
    let key = generate_api_key()
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("no randomness: {e}")))?;
    // Hashed under the secret stored now: a key made during a rotation is made current.
    let keys = s.data_keys.fresh().await.map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("this node cannot make an API key now: {e}"),
        )
    })?;
    let hasher = &keys.hasher;
    let new = NewApiKey {
        name: req.name.trim().to_owned(),
        scope: req.scope,
        prefix: key_prefix(&key),
        hash: hasher.hash(&key),
        algorithm: hasher.algorithm(),
        // At most ten years: fits.
        expires_in_secs: lifetime.map(|l| l as u32),
        target_name: req.target.clone(),
        grant: req.grant(),
    };
    let details = json!({
        "name": new.name, "scope": new.scope, "prefix": new.prefix,
        "expires_in": req.expires_in, "target": new.target_name, "grant": new.grant,
    });
    let by = caller.clone();
    let audit: Audit<i64> = Box::new(move |id| {
        by.event(
            "api_key.create",
            format!("{ID_PREFIX}{id}"),
            details.clone(),
        )
    });
    let id = s
        .store
        .insert_api_key(&new, Some(audit))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                "a key with this hash exists; try again",
            )
        })?;
    // Read back by its hash: one indexed lookup, not the whole list.
    let row = s
        .store
        .find_api_key(&new.hash, &[])
        .await?
        .map(|f| f.key)
        .filter(|k| k.id == id)
        .ok_or_else(|| {
            ApiError::not_found(format!("API key {ID_PREFIX}{id} was revoked at once"))
        })?;
    tracing::info!(key = %format!("{ID_PREFIX}{id}"), scope = %new.scope, by = %caller.name, "API key created");
    Ok((row, key))
}

/// Revokes a key: every node refuses it within a second (their caches of known keys live one
/// second). The last admin key that still works cannot be revoked: no one could manage keys.
async fn revoke(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    revoke_key(&s, &caller, &raw).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revokes a key (audited), refusing the cluster's last working admin key. REST's and gRPC's
/// one way.
pub(crate) async fn revoke_key(s: &AppState, caller: &Caller, raw: &str) -> Result<(), ApiError> {
    let id = key_id(raw)?;
    let audit = audit_as(caller.event("api_key.revoke", format!("{ID_PREFIX}{id}"), json!({})));
    // Decided where the key is deleted, in one transaction: two revokes at once never leave
    // the cluster without a working admin key.
    match s.store.revoke_api_key(id, Some(audit)).await? {
        Revoke::Revoked => {}
        Revoke::NotFound => return Err(ApiError::not_found(format!("no API key {ID_PREFIX}{id}"))),
        Revoke::LastAdmin => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this is the cluster's last working admin key: create another admin key before \
                 revoking it",
            ))
        }
    }
    s.keys.forget_all();
    tracing::info!(key = %format!("{ID_PREFIX}{id}"), by = %caller.name, "API key revoked");
    Ok(())
}

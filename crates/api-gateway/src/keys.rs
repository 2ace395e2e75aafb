//! `/api/keys`: the API keys, listed (never a key or its hash) and revoked.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{format_rfc3339_ms, ErrorCode};
use cuttle_storage::audit_as;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{path_param, ApiResult};
use crate::AppState;

const ID_PREFIX: &str = "ApiKeys-";

fn key_id(p: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let raw = path_param(p)?;
    raw.strip_prefix(ID_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no API key {raw}")))
}

pub(crate) async fn list(State(s): State<AppState>) -> ApiResult {
    let keys = s.store.list_api_keys().await?;
    let items: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({
                "id": format!("{ID_PREFIX}{}", k.id),
                "name": k.name,
                "created_at": format_rfc3339_ms(k.created_at),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// Revokes a key: every node refuses it within a second (their caches of known keys live one
/// second). The last key cannot be revoked: the cluster would have no way in left.
pub(crate) async fn revoke(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = key_id(p)?;
    let keys = s.store.list_api_keys().await?;
    if !keys.iter().any(|k| k.id == id) {
        return Err(ApiError::not_found(format!("no API key {ID_PREFIX}{id}")));
    }
    if keys.len() == 1 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this is the cluster's last API key: create another before revoking it",
        ));
    }
    let audit = audit_as(caller.event("api_key.revoke", format!("{ID_PREFIX}{id}"), json!({})));
    if !s.store.delete_api_key(id, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no API key {ID_PREFIX}{id}")));
    }
    s.keys.forget_all();
    tracing::info!(key = %format!("{ID_PREFIX}{id}"), by = %caller.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! `/api/nodes`: the cluster's nodes, their task caps and draining.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{validate_node_name, ErrorCode, NodePatch};
use cuttle_storage::audit_as;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};
use crate::openapi::{schemas, Op};
use crate::scoped::{Api, OPERATOR, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/nodes",
            READER,
            list_nodes,
            Op::new("listNodes", "The cluster's nodes")
                .ok("every node, by name", schemas::nodes)
                .link(
                    "get",
                    "getNode",
                    &[("name", "$response.body#/items/0/name")],
                ),
        )
        .get(
            "/api/nodes/{name}",
            READER,
            get_node,
            Op::new("getNode", "One node").ok("the node", schemas::node),
        )
        .patch(
            "/api/nodes/{name}",
            OPERATOR,
            patch_node,
            Op::new("patchNode", "Changes a node's task cap or drains it")
                .body(|g| g.request::<NodePatch>())
                .ok("the node as changed", schemas::node),
        )
        .delete(
            "/api/nodes/{name}",
            OPERATOR,
            delete_node,
            Op::new("deleteNode", "Forgets a node")
                .no_content("deleted (a live node adds itself again at its next heartbeat)")
                .refuses(409, "the node still owns executing tasks"),
        )
}

async fn list_nodes(State(s): State<AppState>) -> ApiResult {
    let nodes = s.store.list_nodes(s.config.offline_after).await?;
    Ok(Json(Page::all(nodes)).into_response())
}

async fn get_node(State(s): State<AppState>, PathParams(raw): PathParams<String>) -> ApiResult {
    let name = raw;
    match s.store.get_node(&name, s.config.offline_after).await? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError::not_found(format!("no node named {name:?}"))),
    }
}

async fn patch_node(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
    JsonBody(patch): JsonBody<NodePatch>,
) -> ApiResult {
    let node = change_node(&s, &caller, &raw, &patch).await?;
    Ok(Json(node).into_response())
}

/// Changes a node's task cap or draining flag (audited); the node as it is now. The API's and
/// the web UI's one way to do it.
pub(crate) async fn change_node(
    s: &AppState,
    caller: &Caller,
    name: &str,
    patch: &NodePatch,
) -> Result<cuttle_core::NodeRecord, ApiError> {
    validate_node_name(name).map_err(|_| ApiError::not_found(format!("no node named {name:?}")))?;
    patch.validate()?;
    let details = json!({"task_cap": patch.task_cap, "draining": patch.draining});
    let audit = audit_as(caller.event("node.update", name, details));
    if !s.store.patch_node(name, patch, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    }
    tracing::info!(node = %name, by = %caller.name, task_cap = ?patch.task_cap, draining = ?patch.draining, "node changed");
    s.waker.settings_changed(name.to_owned());
    s.store
        .get_node(name, s.config.offline_after)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no node named {name:?}")))
}

async fn delete_node(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    remove_node(&s, &caller, &raw).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a node's row (audited), refused while it owns executing tasks.
pub(crate) async fn remove_node(s: &AppState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    let Some(node) = s.store.get_node(name, s.config.offline_after).await? else {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    };
    // The lost-node loop works from node rows: deleting the row of a node that still owns tasks
    // could leave them Executing forever. Such a node must drain, or be marked lost, first.
    if node.running_tasks > 0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "node {name} still owns {} executing task(s): drain it and wait, or wait until \
                 it is marked offline and its tasks are failed",
                node.running_tasks
            ),
        ));
    }
    let audit = audit_as(caller.event("node.delete", name, json!({})));
    if !s.store.delete_node(name, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    }
    tracing::info!(node = %name, by = %caller.name, "node deleted");
    Ok(())
}

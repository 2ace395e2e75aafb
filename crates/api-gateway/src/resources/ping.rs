//! The load balancers' health check: `/api/nodes/ping` (and Octopus's path for it), no key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use cuttle_core::ErrorCode;
use serde_json::json;

use crate::openapi::{schemas, Content, Op};
use crate::scoped::Api;
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        .open_get("/api/nodes/ping", ping, ping_op("ping"))
        .open_get(
            "/api/octopusservernodes/ping",
            ping,
            ping_op("pingAtGuidePath"),
        )
}

fn ping_op(id: &'static str) -> Op {
    Op::new(
        id,
        "Whether this node takes work: the load balancers' health check",
    )
    .reply(200, "online: it takes work", Content::Json(schemas::ping))
    .reply(
        418,
        "draining, or shutting down",
        Content::Json(schemas::ping),
    )
    .reply(
        503,
        "it cannot reach the database, or its heartbeat is overdue",
        Content::Json(schemas::ping),
    )
}

/// The load balancer's health check, without a key: so it says only this node's name and state.
/// No addresses, no database error text (those are in the node's log and `GET /api/nodes`).
async fn ping(State(s): State<AppState>) -> Response {
    let name = s.config.node_name.as_str();
    let node = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        s.store.get_node(name, s.config.offline_after),
    )
    .await;
    let unavailable = |why: &str| {
        let body = json!({
            "node": name,
            "state": "unavailable",
            "error": {"code": ErrorCode::Unavailable.as_str(), "message": why},
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    };
    let node = match node {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => return unavailable("this node is not registered (yet)"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ping: database unreachable");
            return unavailable("this node cannot reach the database");
        }
        Err(_) => return unavailable("this node cannot reach the database"),
    };
    if node.draining || s.is_shutting_down() {
        let body = json!({"node": name, "state": "draining"});
        return (StatusCode::IM_A_TEAPOT, Json(body)).into_response();
    }
    if !node.online {
        return unavailable("this node's heartbeat is overdue");
    }
    Json(json!({"node": name, "state": "online"})).into_response()
}

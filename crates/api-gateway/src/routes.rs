use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cuttle_core::{
    validate_node_name, ErrorCode, NewTask, NodePatch, TaskId, TaskRecord, TaskState,
};
use cuttle_storage::{audit_as, Audit};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::{require_api_key, Caller};
use crate::error::ApiError;
use crate::{keys, targets, AppState, MAX_JSON_BODY};

const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;

pub(crate) fn router(state: AppState) -> Router {
    let private = Router::new()
        .route("/api/nodes", get(list_nodes))
        .route(
            "/api/nodes/{name}",
            get(get_node).patch(patch_node).delete(delete_node),
        )
        .route("/api/tasks", post(create_task).get(list_tasks))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/log", get(task_log))
        .route("/api/tasks/{id}/cancel", post(cancel_task))
        .route("/api/events", get(list_events))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/api/targets", post(targets::create).get(targets::list))
        .route(
            "/api/targets/{id}",
            get(targets::get)
                .patch(targets::patch)
                .delete(targets::delete),
        )
        .route("/metrics", get(metrics))
        .route_layer(from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .route("/api/nodes/ping", get(ping))
        .route("/api/octopusservernodes/ping", get(ping))
        // No key: a tentacle checks the cluster it was told to pin before it sends one. The
        // thumbprint is public (every gateway handshake presents it).
        .route("/api/cluster/identity", get(targets::cluster_identity))
        .merge(private)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), read_body_in_time))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            name_node,
        ))
        .with_state(state)
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The query string as a map, refusing parameters the endpoint does not know (a typo would
/// otherwise be silently ignored).
pub(crate) fn query_params(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|r| ApiError::bad_request(r.body_text()))?;
    if let Some(unknown) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {unknown:?}: use {}",
            known.join(", ")
        )));
    }
    Ok(q)
}

/// `?limit=N` for list endpoints: 1 to 1000, 100 when absent.
fn parse_limit(raw: Option<&String>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_LIST_LIMIT}, got {l:?}"
            ))),
        },
    }
}

/// Every response names the node that served it: behind a load balancer, that is the first
/// thing an operator needs when a request misbehaves.
async fn name_node(State(s): State<AppState>, mut resp: Response) -> Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(&s.config.node_name) {
        resp.headers_mut().insert("x-cuttle-node", v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

async fn method_not_allowed() -> Response {
    let err = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this path"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(err)).into_response()
}

/// Reads a JSON body with our own errors: 413 when too large, 400 with the parser's reason.
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Refuses a request whose declared `Content-Length` is over the limit before reading any of
/// its body: the client hears 413 at once instead of after sending it all, or a reset.
pub(crate) async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_JSON_BODY as u64 => too_large().into_response(),
        _ => next.run(request).await,
    }
}

/// Reads a request's body (every route takes at most 1 MiB of JSON) within the body deadline: a
/// client that sends its headers and then trickles or withholds the body gets 408 instead of
/// holding the connection and a task.
async fn read_body_in_time(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = s.config.limits.body_timeout;
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_JSON_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large().into_response(),
        Err(_) => {
            return ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs_f32()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "request body too large (limit 1 MiB)",
    )
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

pub(crate) fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|r| ApiError::bad_request(r.body_text()))
}

fn task_id(p: Result<Path<String>, PathRejection>) -> Result<TaskId, ApiError> {
    let raw = path_param(p)?;
    // A malformed id names no task: 404, like an unknown one.
    raw.parse::<TaskId>()
        .map_err(|_| ApiError::not_found(format!("no task {raw}")))
}

// ---- nodes ------------------------------------------------------------------------------

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

async fn list_nodes(State(s): State<AppState>) -> ApiResult {
    let nodes = s.store.list_nodes(s.config.offline_after).await?;
    Ok(Json(json!({ "items": nodes })).into_response())
}

async fn get_node(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = path_param(p)?;
    match s.store.get_node(&name, s.config.offline_after).await? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError::not_found(format!("no node named {name:?}"))),
    }
}

async fn patch_node(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = path_param(p)?;
    validate_node_name(&name)
        .map_err(|_| ApiError::not_found(format!("no node named {name:?}")))?;
    let patch: NodePatch = json_body(body)?;
    patch.validate()?;
    let details = json!({"task_cap": patch.task_cap, "draining": patch.draining});
    let audit = audit_as(caller.event("node.update", &name, details));
    if !s.store.patch_node(&name, &patch, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    }
    tracing::info!(node = %name, by = %caller.name, task_cap = ?patch.task_cap, draining = ?patch.draining, "node changed");
    let node = s
        .store
        .get_node(&name, s.config.offline_after)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no node named {name:?}")))?;
    Ok(Json(node).into_response())
}

async fn delete_node(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = path_param(p)?;
    let Some(node) = s.store.get_node(&name, s.config.offline_after).await? else {
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
    let audit = audit_as(caller.event("node.delete", &name, json!({})));
    if !s.store.delete_node(&name, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    }
    tracing::info!(node = %name, by = %caller.name, "node deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- tasks ------------------------------------------------------------------------------

async fn create_task(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let bytes = body_bytes(body)?;
    let task = NewTask::from_json(&bytes)?;
    let by = caller.clone();
    let audit: Audit<TaskRecord> = Box::new(move |t| {
        let details = json!({"kind": t.kind, "concurrency_tag": t.concurrency_tag});
        by.event("task.create", t.id, details)
    });
    let record = s.store.enqueue(&task, Some(audit)).await?;
    tracing::debug!(task = %record.id, kind = %record.kind, by = %caller.name, "task queued");
    s.waker.enqueued();
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

async fn list_tasks(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let q = query_params(q, &["state", "limit", "before"])?;
    let before = q.get("before").map(|b| b.parse::<TaskId>()).transpose()?;
    let state = q.get("state").map(|s| s.parse::<TaskState>()).transpose()?;
    let limit = parse_limit(q.get("limit"))?;
    let tasks = s.store.list_tasks(state, before, limit).await?;
    Ok(Json(json!({ "items": tasks })).into_response())
}

async fn get_task(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = task_id(p)?;
    match s.store.get_task(id).await? {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(ApiError::not_found(format!("no task {id}"))),
    }
}

async fn task_log(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = task_id(p)?;
    let Some(task) = s.store.get_task(id).await? else {
        return Err(ApiError::not_found(format!("no task {id}")));
    };
    let shared = s.shared.clone();
    let log = tokio::task::spawn_blocking(move || shared.open_task_log(&task))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("open task log: {e}")))?;
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "open task log");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("the shared store cannot be read: {e}"),
            ));
        }
    };
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        // Whether this is the whole log: false while the task runs, or when a node died before
        // its part could be put in place.
        (
            HeaderName::from_static("x-cuttle-log-complete"),
            if log.complete { "true" } else { "false" },
        ),
    ];
    // Streamed, part after part: a log of any size is served in constant memory.
    let stream = futures_util::stream::iter(log.parts)
        .flat_map(|f| tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(f)));
    Ok((headers, Body::from_stream(stream)).into_response())
}

async fn cancel_task(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = task_id(p)?;
    let Some(before) = s.store.get_task(id).await? else {
        return Err(ApiError::not_found(format!("no task {id}")));
    };
    if before.state.is_terminal() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("task {id} already finished ({})", before.state.as_str()),
        ));
    }
    let by = caller.clone();
    let audit: Audit<TaskRecord> =
        Box::new(move |t| by.event("task.cancel", t.id, json!({"state": t.state.as_str()})));
    let task = s
        .store
        .cancel(id, s.config.offline_after, Some(audit))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?;
    tracing::info!(task = %id, by = %caller.name, state = task.state.as_str(), "task cancel requested");
    if task.state == TaskState::Cancelling {
        if let Some(node) = &task.node {
            s.waker.cancelled(node.clone());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

// ---- events -----------------------------------------------------------------------------

async fn list_events(
    State(s): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let q = query_params(q, &["limit"])?;
    let limit = parse_limit(q.get("limit"))?;
    let events = s.store.list_events(limit).await?;
    Ok(Json(json!({ "items": events })).into_response())
}

// ---- metrics ----------------------------------------------------------------------------

async fn metrics(State(s): State<AppState>) -> ApiResult {
    let nodes = s.store.list_nodes(s.config.offline_after).await?;
    let mut out = String::new();
    out.push_str("# HELP cuttle_db_commits_total Database transactions committed by this node.\n");
    out.push_str("# TYPE cuttle_db_commits_total counter\n");
    out.push_str(&format!("cuttle_db_commits_total {}\n", s.store.commits()));
    out.push_str("# HELP cuttle_node_running_tasks Tasks executing on each node.\n");
    out.push_str("# TYPE cuttle_node_running_tasks gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "cuttle_node_running_tasks{{node=\"{}\"}} {}\n",
            n.name, n.running_tasks
        ));
    }
    out.push_str("# HELP cuttle_node_online Whether each node's heartbeat is current.\n");
    out.push_str("# TYPE cuttle_node_online gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "cuttle_node_online{{node=\"{}\"}} {}\n",
            n.name,
            u8::from(n.online)
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

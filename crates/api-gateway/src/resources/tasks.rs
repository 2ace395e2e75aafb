//! `/api/tasks`: the queue: create, list, read (and the log), cancel.

use axum::body::Body;
use axum::http::{header, HeaderName};
use cuttle_core::{ErrorCode, NewTask, TaskId, TaskRecord, TaskState};
use cuttle_storage::Audit;
use futures_util::StreamExt;

use crate::extract::{parse_limit, Page, RawBody};
use crate::openapi::{schemas, Content, Op};
use crate::scoped::{Api, DEPLOYER, READER};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, PathParams, QueryMap};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        // And the scope the task's kind needs (`Caller::check_kind`).
        .post(
            "/api/tasks",
            DEPLOYER,
            create_task,
            Op::new("createTask", "Queues a task")
                .body(|g| g.request::<NewTask>())
                .created("the task, queued", schemas::task)
                .link("get", "getTask", &[("id", "$response.body#/id")])
                .link("log", "getTaskLog", &[("id", "$response.body#/id")])
                .link("cancel", "cancelTask", &[("id", "$response.body#/id")]),
        )
        .get(
            "/api/tasks",
            READER,
            list_tasks,
            Op::new("listTasks", "The queue, newest first")
                .query(
                    "state",
                    schemas::inline::<TaskState>(),
                    "only tasks in this state",
                )
                .query(
                    "kind",
                    json!({"type": "string"}),
                    "only tasks of this kind (whatever its case)",
                )
                .query("limit", schemas::limit(), "at most this many (default 100)")
                .query(
                    "before",
                    json!({"type": "string"}),
                    "the `next` of the previous page",
                )
                .ok("a page of tasks", schemas::tasks),
        )
        .get(
            "/api/tasks/{id}",
            READER,
            get_task,
            Op::new("getTask", "One task").ok("the task", schemas::task),
        )
        .get(
            "/api/tasks/{id}/log",
            READER,
            task_log,
            Op::new("getTaskLog", "A task's log, streamed")
                .reply(200, "the log as far as it is written", Content::Text)
                .with_headers(&[(
                    "X-Cuttle-Log-Complete",
                    "`true` once the task has ended and its whole log is in place",
                )]),
        )
        .post(
            "/api/tasks/{id}/cancel",
            DEPLOYER,
            cancel_task,
            Op::new("cancelTask", "Cancels a task")
                .reply(
                    202,
                    "the task: `Canceled` when it was queued, else `Cancelling`",
                    Content::Json(schemas::task),
                )
                .refuses(409, "the task already finished"),
        )
}

/// A malformed id names no task: 404, like an unknown one.
pub(crate) fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse::<TaskId>()
        .map_err(|_| ApiError::not_found(format!("no task {raw}")))
}

async fn create_task(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawBody(bytes): RawBody,
) -> ApiResult {
    let record = create(&s, &caller, NewTask::from_json(&bytes)?).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Queues a task (audited), refusing kinds made elsewhere and kinds the caller's scope does not
/// reach. REST's and gRPC's one way to do it.
pub(crate) async fn create(
    s: &AppState,
    caller: &Caller,
    mut task: NewTask,
) -> Result<TaskRecord, ApiError> {
    if task.concurrency_tag.is_none() {
        // Two of these at once would only repeat each other's work.
        task.concurrency_tag = cuttle_core::system_tag(&task.kind).map(str::to_owned);
    }
    match task.kind {
        cuttle_core::TaskKind::Deploy(_) => {
            return Err(ApiError::bad_request(
                "kind: a deployment is created with POST /api/spaces/{space}/deployments, which \
                 checks the lifecycle",
            ))
        }
        cuttle_core::TaskKind::RunbookRun(_) => {
            return Err(ApiError::bad_request(
                "kind: a runbook run is created with POST /api/spaces/{space}/runbooks/{id}/runs",
            ))
        }
        _ => {}
    }
    caller.check_kind(task.kind.name())?;
    let by = caller.clone();
    let audit: Audit<TaskRecord> = Box::new(move |t| {
        let details = json!({"kind": t.kind, "concurrency_tag": t.concurrency_tag});
        by.event("task.create", t.id, details)
    });
    let record = s.store.enqueue(&task, Some(audit)).await?;
    tracing::debug!(task = %record.id, kind = %record.kind, by = %caller.name, "task queued");
    s.waker.enqueued();
    Ok(record)
}

async fn list_tasks(State(s): State<AppState>, q: QueryMap) -> ApiResult {
    let q = q.only(&["state", "kind", "limit", "before"])?;
    let filter = TaskFilter {
        before: q.get("before").map(|b| b.parse::<TaskId>()).transpose()?,
        state: q.get("state").map(|s| s.parse::<TaskState>()).transpose()?,
        kind: q.get("kind").map(|k| k.trim().to_owned()),
    };
    let limit = parse_limit(q.get("limit"))?;
    let (items, next) = list(&s, &filter, limit).await?;
    Ok(Json(Page {
        items,
        next: next.map(|n| n.to_string()),
    })
    .into_response())
}

/// Which tasks a list shows.
#[derive(Debug, Default)]
pub(crate) struct TaskFilter {
    pub(crate) state: Option<TaskState>,
    pub(crate) kind: Option<String>,
    /// Only tasks older than this one (the `next` of the previous page).
    pub(crate) before: Option<TaskId>,
}

/// One page of tasks, newest first, and where the following page starts when this one is full.
pub(crate) async fn list(
    s: &AppState,
    filter: &TaskFilter,
    limit: u32,
) -> Result<(Vec<TaskRecord>, Option<TaskId>), ApiError> {
    let kind = filter.kind.as_deref().filter(|k| !k.is_empty());
    let tasks = s
        .store
        .list_tasks(filter.state, kind, filter.before, limit)
        .await?;
    // A full page may have more behind it: `next` is where the following page starts.
    let next = (tasks.len() == limit as usize)
        .then(|| tasks.last().map(|t| t.id))
        .flatten();
    Ok((tasks, next))
}

async fn get_task(State(s): State<AppState>, PathParams(raw): PathParams<String>) -> ApiResult {
    Ok(Json(get(&s, &raw).await?).into_response())
}

/// One task, by its id as the client wrote it (404 for an unknown or malformed one).
pub(crate) async fn get(s: &AppState, raw: &str) -> Result<TaskRecord, ApiError> {
    let id = task_id(raw)?;
    s.store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

async fn task_log(State(s): State<AppState>, PathParams(raw): PathParams<String>) -> ApiResult {
    let id = task_id(&raw)?;
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
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    let id = task_id(&raw)?;
    let task = cancel(&s, &caller, id).await?;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

/// Cancels a task (audited): a queued one at once, an executing one through its node. The
/// API's and the web UI's one way to do it.
pub(crate) async fn cancel(
    s: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<TaskRecord, ApiError> {
    let Some(before) = s.store.get_task(id).await? else {
        return Err(ApiError::not_found(format!("no task {id}")));
    };
    if before.state.is_terminal() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("task {id} already finished ({})", before.state.as_str()),
        ));
    }
    caller.check_kind(&before.kind)?;
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
    Ok(task)
}

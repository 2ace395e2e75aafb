//! Tasks: the list (newest first, by state and kind, a page at a time) and a task's page with
//! its log, which follows a running task live (server-sent events read from the shared store,
//! so any node serves the page whichever node runs the task), and a cancel button.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use cuttle_core::{format_rfc3339_ms, TaskId, TaskRecord, TaskState};
use serde::Deserialize;

use super::{html, NoFields, SignedForm, Who};
use crate::log_follow::{read_log, LogFollow, Step, LOG_CHUNK};
use crate::AppState;

/// Tasks on one page of the list.
const PAGE: u32 = 50;

struct Row {
    id: String,
    kind: String,
    state: String,
    description: String,
    node: String,
    queued_at: String,
}

fn row(t: &TaskRecord) -> Row {
    Row {
        id: t.id.to_string(),
        kind: t.kind.clone(),
        state: t.state.as_str().to_owned(),
        description: t.description.clone(),
        node: t.node.clone().unwrap_or_default(),
        queued_at: format_rfc3339_ms(t.queued_at),
    }
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    who: Option<Who>,
    tasks: Vec<Row>,
    state: String,
    kind: String,
    /// Each state, and whether it is the one filtered on.
    states: Vec<(&'static str, bool)>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    before: Option<String>,
}

pub(super) async fn list(
    State(s): State<AppState>,
    who: Who,
    Query(q): Query<ListQuery>,
) -> Response {
    let state = q.state.parse::<TaskState>().ok();
    let before = q.before.as_deref().and_then(|b| b.parse::<TaskId>().ok());
    let kind = q.kind.trim();
    let found = match s
        .store
        .list_tasks(state, (!kind.is_empty()).then_some(kind), before, PAGE)
        .await
    {
        Ok(t) => t,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let next = (found.len() == PAGE as usize)
        .then(|| found.last().map(|t| t.id.to_string()))
        .flatten();
    let tasks = found.iter().map(row).collect();
    let page = TasksPage {
        who: Some(who),
        tasks,
        states: [
            "Queued",
            "Executing",
            "Cancelling",
            "Success",
            "Failed",
            "Canceled",
            "TimedOut",
        ]
        .into_iter()
        .map(|name| (name, state.is_some_and(|s| s.as_str() == name)))
        .collect(),
        state: state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        kind: kind.to_owned(),
        next,
    };
    html(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    who: Option<Who>,
    /// What the list shows of it.
    task: Row,
    started_at: String,
    completed_at: String,
    error: String,
    log: String,
    /// A deployment's log by step and target (empty for a log without steps).
    sections: Vec<super::log_sections::Section>,
    /// Shown by step and target: a deployment or runbook run (from its first line, even before
    /// it has one), or any log with steps.
    sectioned: bool,
    offset: u64,
    live: bool,
    may_cancel: bool,
    csrf: String,
    message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TaskQuery {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    seal: Option<String>,
}

async fn task_or_404(s: &AppState, raw: &str) -> Result<TaskRecord, Response> {
    let missing = || (StatusCode::NOT_FOUND, format!("No task {raw}.")).into_response();
    let id = raw.parse::<TaskId>().map_err(|_| missing())?;
    match s.store.get_task(id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(missing()),
        Err(e) => Err(crate::error::ApiError::from(e).into_response()),
    }
}

pub(super) async fn page(
    State(s): State<AppState>,
    who: Who,
    Path(raw): Path<String>,
    Query(q): Query<TaskQuery>,
) -> Response {
    let task = match task_or_404(&s, &raw).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (s2, t2) = (s.clone(), task.clone());
    let read = tokio::task::spawn_blocking(move || read_log(&s2, &t2, 0, LOG_CHUNK)).await;
    let (log, offset, whole) = match read {
        Ok(Ok(r)) => r,
        _ => (
            String::from("(the log cannot be read from the shared store now)\n"),
            0,
            false,
        ),
    };
    let time = |t: Option<i64>| t.map(format_rfc3339_ms).unwrap_or_default();
    let sections = super::log_sections::sections(&log);
    let page = TaskPage {
        task: row(&task),
        started_at: time(task.started_at),
        completed_at: time(task.completed_at),
        error: task.error.clone().unwrap_or_default(),
        sectioned: matches!(task.kind.as_str(), "Deploy" | "RunbookRun")
            || super::log_sections::has_steps(&sections),
        sections,
        log,
        offset,
        live: !whole || !task.state.is_terminal(),
        may_cancel: !task.state.is_terminal() && who.may_deploy,
        csrf: who.csrf.clone(),
        message: super::sealed_message(&s, q.message, q.seal),
        who: Some(who),
    };
    html(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub(super) struct Offset {
    #[serde(default)]
    offset: u64,
}

/// How often a live-log stream checks that its session still opens pages.
const RECHECK: Duration = Duration::from_secs(5);

/// Server-sent events: each `data` is new whole lines of the log; an `end` event once the task
/// has finished (its state says so) and its log is complete, or once the session no longer
/// opens pages (signed out, key revoked: checked every few seconds). A person holds at most a
/// few streams per node, and however many follow a task, the node reads it from the database
/// once per poll.
pub(super) async fn events(
    State(s): State<AppState>,
    who: Who,
    Path(raw): Path<String>,
    Query(o): Query<Offset>,
    headers: axum::http::HeaderMap,
) -> Response {
    let task = match task_or_404(&s, &raw).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(slot) = s.streams.open(&who.caller.actor()) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "You follow {} live logs on this node already; close one.",
                super::streams::PER_PERSON
            ),
        )
            .into_response();
    };
    let cookie = super::session::cookie(&headers)
        .unwrap_or_default()
        .to_owned();
    let id = task.id;
    // A browser that lost the stream (its node stopped, the balancer timed it out) comes back
    // with the id of the last event it had: the offset it had read to. It goes on from there.
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(o.offset);
    let state = Follow {
        log: LogFollow::start(&s, id, start, slot),
        done: false,
        checked: std::time::Instant::now(),
    };
    let stream = futures_util::stream::unfold(state, move |mut f| {
        let (s, cookie) = (s.clone(), cookie.clone());
        async move {
            if f.done {
                return None;
            }
            let end = |f: Follow, why: &'static str| {
                Some((
                    Ok::<_, std::convert::Infallible>(Event::default().event("end").data(why)),
                    Follow { done: true, ..f },
                ))
            };
            loop {
                if f.checked.elapsed() >= RECHECK {
                    if !super::still_signed_in(&s, &cookie).await {
                        return end(f, "signed-out");
                    }
                    f.checked = std::time::Instant::now();
                }
                match f.log.next(&s).await {
                    Step::Text { text, end_at } => {
                        // An event's data may not hold a carriage return (logs have none: the
                        // writer replaces control characters; this is for safety).
                        let text = text.replace('\r', "");
                        let event = Event::default().data(text).id(end_at.to_string());
                        return Some((Ok(event), f));
                    }
                    // (A browser dispatches no event without data: the end says "done".)
                    Step::Ended => return end(f, "done"),
                    Step::Quiet => {}
                }
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // nginx would otherwise hold the events in its buffers.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

/// Where a live-log stream is.
struct Follow {
    log: LogFollow,
    done: bool,
    checked: std::time::Instant,
}

pub(super) async fn cancel(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    SignedForm(who, NoFields {}): SignedForm<NoFields>,
) -> Response {
    let task = match task_or_404(&s, &raw).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let message = if !who.may_deploy {
        who.may_not("cancel tasks")
    } else {
        match crate::resources::tasks::cancel(&s, &who.caller, task.id).await {
            Ok(t) => format!("Cancel requested: the task is {}.", t.state.as_str()),
            Err(e) => e.message().to_owned(),
        }
    };
    Redirect::to(&format!(
        "/ui/tasks/{}?{}",
        task.id,
        super::message_query(&s, &message)
    ))
    .into_response()
}

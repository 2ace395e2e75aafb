//! `cuttle.v1.Tasks`: the queue, through the operations REST's `/api/tasks` uses.

use std::pin::Pin;

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState};
use cuttle_proto::v1::tasks_server::{Tasks, TasksServer};
use cuttle_proto::v1::{
    CancelTaskRequest, CreateTaskRequest, GetTaskRequest, ListTasksReply, ListTasksRequest,
    LogChunk, Task, TaskState as PbState, WatchLogRequest, WatchTasksRequest,
};
use futures_util::Stream;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::{
    caller, from_struct, invalid, status, stream_slot, timestamp, timestamp_opt, to_struct,
};
use crate::extract::limit_or_default;
use crate::log_follow::{LogFollow, Step};
use crate::resources::tasks as ops;
use crate::scoped::{Need, DEPLOYER, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Tasks";

/// What each method needs (creating and cancelling also need the scope of the task's kind).
pub(super) const NEEDS: &[(&str, Need)] = &[
    ("Create", DEPLOYER),
    ("Get", READER),
    ("List", READER),
    ("Cancel", DEPLOYER),
    ("WatchLog", READER),
    ("WatchTasks", READER),
];

/// How often `WatchTasks` looks, once nothing has changed for a while.
const WATCH_TASKS_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// The newest tasks `WatchTasks` looks at each time.
const WATCHED: u32 = 200;

pub(super) fn server(s: AppState) -> TasksServer<TasksApi> {
    TasksServer::new(TasksApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct TasksApi {
    s: AppState,
}

pub(super) fn pb_state(s: TaskState) -> PbState {
    match s {
        TaskState::Queued => PbState::Queued,
        TaskState::Executing => PbState::Executing,
        TaskState::Cancelling => PbState::Cancelling,
        TaskState::Success => PbState::Success,
        TaskState::Failed => PbState::Failed,
        TaskState::Canceled => PbState::Canceled,
        TaskState::TimedOut => PbState::TimedOut,
    }
}

fn core_state(s: PbState) -> Option<TaskState> {
    match s {
        PbState::Unspecified => None,
        PbState::Queued => Some(TaskState::Queued),
        PbState::Executing => Some(TaskState::Executing),
        PbState::Cancelling => Some(TaskState::Cancelling),
        PbState::Success => Some(TaskState::Success),
        PbState::Failed => Some(TaskState::Failed),
        PbState::Canceled => Some(TaskState::Canceled),
        PbState::TimedOut => Some(TaskState::TimedOut),
    }
}

pub(super) fn task(t: &TaskRecord) -> Task {
    Task {
        id: t.id.to_string(),
        kind: t.kind.clone(),
        arguments: Some(to_struct(&t.arguments)),
        state: pb_state(t.state) as i32,
        description: t.description.clone(),
        concurrency_tag: t.concurrency_tag.clone(),
        node: t.node.clone(),
        queued_at: Some(timestamp(t.queued_at)),
        started_at: timestamp_opt(t.started_at),
        completed_at: timestamp_opt(t.completed_at),
        error: t.error.clone(),
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
type TaskStream = Pin<Box<dyn Stream<Item = Result<Task, Status>> + Send>>;

/// What one `WatchTasks` call wants, and what it has seen.
struct Watching {
    state: Option<TaskState>,
    kind: Option<String>,
    /// `Projects-N/` (a deployment's concurrency tag starts with its project).
    project: Option<String>,
    /// Each task of the last look and the state it was in; `None` before the first look.
    seen: Option<std::collections::HashMap<TaskId, TaskState>>,
    looks: u32,
    pending: std::collections::VecDeque<TaskRecord>,
    _slot: crate::ui::streams::Slot,
}

impl Watching {
    fn wanted(&self, t: &TaskRecord) -> bool {
        self.state.is_none_or(|s| s == t.state)
            && self.project.as_ref().is_none_or(|p| {
                t.kind == "Deploy" && t.concurrency_tag.as_ref().is_some_and(|c| c.starts_with(p))
            })
    }

    /// Looks at the newest tasks; queues those seen in a new state since the last look.
    async fn look(&mut self, s: &AppState) -> Result<(), Status> {
        let filter = ops::TaskFilter {
            state: None,
            kind: self.kind.clone(),
            before: None,
        };
        let (page, _) = ops::list(s, &filter, WATCHED).await.map_err(status)?;
        let now: std::collections::HashMap<TaskId, TaskState> =
            page.iter().map(|t| (t.id, t.state)).collect();
        if let Some(seen) = &self.seen {
            // Oldest first, as they happened.
            for t in page.into_iter().rev() {
                if seen.get(&t.id) != Some(&t.state) && self.wanted(&t) {
                    self.pending.push_back(t);
                }
            }
        }
        self.seen = Some(now);
        Ok(())
    }
}

/// A task's log from `offset`, chunk by chunk, until it has ended and been read to its end;
/// the follower (and its place among the caller's streams) goes when the client does.
pub(super) fn follow_log(
    s: &AppState,
    actor: &str,
    id: TaskId,
    offset: u64,
) -> Result<impl Stream<Item = LogChunk> + Send + 'static, Status> {
    let slot = stream_slot(s, actor)?;
    let log = LogFollow::start(s, id, offset, slot);
    let s = s.clone();
    Ok(futures_util::stream::unfold(
        (log, offset),
        move |(mut log, at)| {
            let s = s.clone();
            async move {
                loop {
                    match log.next(&s).await {
                        Step::Text { text, end_at } => {
                            let chunk = LogChunk {
                                text,
                                offset: at,
                                end_offset: end_at,
                            };
                            return Some((chunk, (log, end_at)));
                        }
                        Step::Quiet => {}
                        Step::Ended => return None,
                    }
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl Tasks for TasksApi {
    async fn create(&self, req: Request<CreateTaskRequest>) -> Result<Response<Task>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let mut body = json!({"kind": r.kind});
        if let Some(args) = &r.arguments {
            body["arguments"] = from_struct(args);
        }
        if let Some(d) = r.description {
            body["description"] = json!(d);
        }
        if let Some(t) = r.concurrency_tag {
            body["concurrency_tag"] = json!(t);
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| invalid("arguments", e))?;
        let new = NewTask::from_json(&bytes).map_err(|e| status(e.into()))?;
        let t = ops::create(&self.s, &caller, new).await.map_err(status)?;
        Ok(Response::new(task(&t)))
    }

    async fn get(&self, req: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let t = ops::get(&self.s, &req.get_ref().id).await.map_err(status)?;
        Ok(Response::new(task(&t)))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksReply>, Status> {
        let r = req.into_inner();
        let state = PbState::try_from(r.state).map_err(|_| invalid("state", "unknown state"))?;
        let before = match r.before.trim() {
            "" => None,
            b => Some(
                b.parse::<TaskId>()
                    .map_err(|_| invalid("before", format!("not a task id: {b:?}")))?,
            ),
        };
        let limit = limit_or_default(r.limit).map_err(status)?;
        let filter = ops::TaskFilter {
            state: core_state(state),
            kind: Some(r.kind),
            before,
        };
        let (items, next) = ops::list(&self.s, &filter, limit).await.map_err(status)?;
        Ok(Response::new(ListTasksReply {
            items: items.iter().map(task).collect(),
            next: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel(&self, req: Request<CancelTaskRequest>) -> Result<Response<Task>, Status> {
        let caller = caller(&req)?;
        let id = ops::task_id(&req.get_ref().id).map_err(status)?;
        let t = ops::cancel(&self.s, &caller, id).await.map_err(status)?;
        Ok(Response::new(task(&t)))
    }

    type WatchTasksStream = TaskStream;

    async fn watch_tasks(
        &self,
        req: Request<WatchTasksRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let state = PbState::try_from(r.state).map_err(|_| invalid("state", "unknown state"))?;
        let project = match r.project_id.trim() {
            "" => None,
            p if p.starts_with("Projects-") => Some(format!("{p}/")),
            p => return Err(invalid("project_id", format!("{p:?} is not a project id"))),
        };
        let slot = stream_slot(&self.s, &caller.actor())?;
        let mut w = Watching {
            state: core_state(state),
            kind: Some(r.kind.trim().to_owned()).filter(|k| !k.is_empty()),
            project,
            seen: None,
            looks: 0,
            pending: Default::default(),
            _slot: slot,
        };
        // The first look: what is there when the call starts is not a change.
        w.look(&self.s).await?;
        let s = self.s.clone();
        let changes = futures_util::stream::unfold(w, move |mut w| {
            let s = s.clone();
            async move {
                loop {
                    if let Some(t) = w.pending.pop_front() {
                        return Some((Ok(task(&t)), w));
                    }
                    let wait = crate::ui::streams::backoff(w.looks, WATCH_TASKS_POLL);
                    tokio::time::sleep(wait).await;
                    w.looks = if w.pending.is_empty() { w.looks + 1 } else { 0 };
                    if let Err(e) = w.look(&s).await {
                        return Some((Err(e), w));
                    }
                    if !w.pending.is_empty() {
                        w.looks = 0;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(changes)))
    }

    type WatchLogStream = LogStream;

    async fn watch_log(
        &self,
        req: Request<WatchLogRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        // 404 for a task that is not there, before any stream starts.
        let t = ops::get(&self.s, &r.id).await.map_err(status)?;
        let chunks = follow_log(&self.s, &caller.actor(), t.id, r.offset)?;
        Ok(Response::new(Box::pin(futures_util::StreamExt::map(
            chunks, Ok,
        ))))
    }
}

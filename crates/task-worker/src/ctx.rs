//! What a running task has: its context (log, stop token, targets), how it can end
//! ([`TaskError`]), and the outcome the worker reports ([`Outcome`]).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cuttle_core::TaskState;
use cuttle_storage::TaskLogWriter;
use tokio_util::sync::CancellationToken;

use crate::tentacles::Targets;

/// Why a running task was asked to stop. Set once, before the stop token fires.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    /// An operator cancelled it.
    Canceled,
    /// The database no longer says this node owns it (the node was considered lost).
    Fenced,
    /// The node is shutting down and the grace period ran out.
    Shutdown(String),
    /// It ran past its time limit (seconds).
    TimedOut(u64),
}

/// What a task needs while it runs.
pub(crate) struct TaskCtx {
    pub(crate) node: String,
    pub(crate) logs: TaskLogWriter,
    pub(crate) stop: CancellationToken,
    pub(crate) reason: Arc<OnceLock<StopReason>>,
    pub(crate) work_root: PathBuf,
    pub(crate) targets: Arc<Targets>,
    /// How scripts on this node run (isolated), or why they are refused.
    pub(crate) sandbox: Arc<crate::sandbox::Sandbox>,
}

/// Why a task did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskError {
    /// It failed, and why (shown to the operator).
    Failed(String),
    /// It stopped because its stop token fired (see [`StopReason`]), after its clean-up.
    Interrupted,
}

impl From<String> for TaskError {
    fn from(why: String) -> Self {
        TaskError::Failed(why)
    }
}

impl From<&str> for TaskError {
    fn from(why: &str) -> Self {
        TaskError::Failed(why.to_owned())
    }
}

pub(crate) type TaskResult = Result<(), TaskError>;

impl TaskCtx {
    /// Runs `work` until it ends or the task is told to stop (dropping it then, which ends
    /// its remote calls: a tentacle kills a script whose call ended).
    pub(crate) async fn until_stopped<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, TaskError>>,
    ) -> Result<T, TaskError> {
        tokio::select! {
            r = work => r,
            () = self.stop.cancelled() => Err(TaskError::Interrupted),
        }
    }
}

/// How a task ended, as the worker will report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) state: TaskState,
    pub(crate) error: Option<String>,
}

impl Outcome {
    pub(crate) fn success() -> Self {
        Outcome {
            state: TaskState::Success,
            error: None,
        }
    }

    pub(crate) fn failed(msg: impl Into<String>) -> Self {
        Outcome {
            state: TaskState::Failed,
            error: Some(msg.into()),
        }
    }

    /// The outcome of a task's result; an interruption says why it was stopped.
    pub(crate) fn of(result: TaskResult, reason: Option<&StopReason>) -> Self {
        match result {
            Ok(()) => Outcome::success(),
            Err(TaskError::Failed(why)) => Outcome::failed(why),
            Err(TaskError::Interrupted) => Outcome::stopped(reason),
        }
    }

    fn stopped(reason: Option<&StopReason>) -> Self {
        match reason {
            Some(StopReason::Canceled) | None => Outcome {
                state: TaskState::Canceled,
                error: Some("canceled by request".into()),
            },
            Some(StopReason::Fenced) => {
                Outcome::failed("the task was taken from this node (it was considered lost)")
            }
            Some(StopReason::Shutdown(msg)) => Outcome {
                state: TaskState::Canceled,
                error: Some(msg.clone()),
            },
            Some(StopReason::TimedOut(secs)) => Outcome {
                state: TaskState::TimedOut,
                error: Some(format!("timed out after {secs} s")),
            },
        }
    }
}

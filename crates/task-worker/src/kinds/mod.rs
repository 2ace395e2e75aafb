//! The task kinds, one module each, behind one trait: [`Executor`]. How a task is stopped
//! (cancel, node shutdown, fencing) and how it times out is handled once, in [`run`]: a
//! deadline fires the same stop token, and an executor answers either with its own clean-up
//! followed by [`TaskError::Interrupted`].

mod deploy;
mod event_archive;
mod health_check;
mod package_reindex;
mod pull_file;
mod push_file;
mod retention;
mod script;
mod sleep;

use std::future::Future;
use std::time::Duration;

use cuttle_core::TaskKind;
use cuttle_storage::Execution;

use crate::ctx::{StopReason, TaskCtx, TaskError, TaskResult};

/// One kind of task.
pub(crate) trait Executor: Send + Sync {
    /// How long it may run; past this it is stopped and ends `TimedOut`.
    fn deadline(&self) -> Option<Duration> {
        None
    }

    /// Runs it. Once `ctx.stop` fires it cleans up and returns [`TaskError::Interrupted`].
    fn run(&self, key: Execution, ctx: &TaskCtx) -> impl Future<Output = TaskResult> + Send;
}

/// Runs a task of any kind, under its deadline.
pub(crate) async fn run(kind: TaskKind, key: Execution, ctx: &TaskCtx) -> TaskResult {
    match kind {
        TaskKind::Sleep { duration_ms } => guarded(&sleep::Sleep { duration_ms }, key, ctx).await,
        TaskKind::AdHocScript {
            script,
            timeout_secs,
            on,
            shell,
        } => {
            let s = script::Script {
                script,
                timeout_secs,
                on,
                shell,
            };
            guarded(&s, key, ctx).await
        }
        TaskKind::PushFile {
            source,
            destination,
            on,
        } => {
            let p = push_file::PushFile {
                source,
                destination,
                on,
            };
            guarded(&p, key, ctx).await
        }
        TaskKind::PullFile { source, on } => {
            guarded(&pull_file::PullFile { source, on }, key, ctx).await
        }
        TaskKind::HealthCheck { on } => guarded(&health_check::HealthCheck { on }, key, ctx).await,
        TaskKind::Deploy(args) => guarded(&deploy::Order::from(args), key, ctx).await,
        TaskKind::RunbookRun(args) => guarded(&deploy::Order::from(args), key, ctx).await,
        TaskKind::PackageReindex => guarded(&package_reindex::PackageReindex, key, ctx).await,
        TaskKind::Retention {
            package_versions_to_keep,
        } => {
            let r = retention::Retention {
                package_versions_to_keep,
            };
            guarded(&r, key, ctx).await
        }
        TaskKind::EventArchive { older_than_secs } => {
            let a = event_archive::EventArchive {
                older_than: std::time::Duration::from_secs(older_than_secs),
            };
            guarded(&a, key, ctx).await
        }
    }
}

/// Runs an executor; when its deadline passes, records why and fires its stop token, then lets
/// it finish its clean-up.
async fn guarded<E: Executor>(e: &E, key: Execution, ctx: &TaskCtx) -> TaskResult {
    let run = e.run(key, ctx);
    tokio::pin!(run);
    let deadline = e.deadline();
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = &mut run => r,
        () = expired => {
            let secs = deadline.unwrap_or_default().as_secs();
            let _ = ctx.reason.set(StopReason::TimedOut(secs));
            ctx.stop.cancel();
            match run.await {
                Ok(()) => Ok(()),
                Err(_) => Err(TaskError::Interrupted),
            }
        }
    }
}

//! The self-fencing clock, independent of every database call. A node out of touch with the
//! database for longer than the offline timeout has been declared lost by the others, who fail
//! (or re-queue) its tasks: it must stop them itself by then, or a task could run on two nodes.
//! The worker loop cannot be the one to notice — it may be waiting on the very call that hangs
//! — so a watchdog task of its own looks at the last successful contact (written by the
//! heartbeat) several times per offline timeout, and stops every running task once it is too
//! old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cuttle_core::TaskId;
use cuttle_storage::{Execution, TaskLogWriter};
use tokio_util::sync::CancellationToken;

use crate::ctx::StopReason;
use crate::worker::DbContact;

/// How a running task is stopped: its own token, and why (read when its outcome is made).
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) epoch: i64,
    pub(crate) stop: CancellationToken,
    pub(crate) reason: Arc<OnceLock<StopReason>>,
    /// When this node claimed it: a claim is itself contact with the database (a task claimed
    /// just after an outage is not fenced for the silence before it).
    claimed: std::time::Instant,
}

impl Running {
    pub(crate) fn new(epoch: i64) -> Running {
        Running {
            epoch,
            stop: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
            claimed: std::time::Instant::now(),
        }
    }

    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }
}

/// The tasks running on this node, as the watchdog sees them (the worker loop adds and removes
/// them; it alone owns the tasks).
#[derive(Clone, Default)]
pub(crate) struct Fence {
    tasks: Arc<Mutex<HashMap<TaskId, Running>>>,
}

impl Fence {
    pub(crate) fn add(&self, id: TaskId, r: &Running) {
        self.lock().insert(id, r.clone());
    }

    /// Forgets run `epoch` of `id` (not a later run of it this node claimed again).
    pub(crate) fn remove(&self, id: TaskId, epoch: i64) {
        let mut tasks = self.lock();
        if tasks.get(&id).is_some_and(|r| r.epoch == epoch) {
            tasks.remove(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Running>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `contact` until aborted: once it is older than `offline_after`, stops every
    /// running task with [`StopReason::Fenced`], saying why in its log.
    pub(crate) fn watch(
        self,
        contact: DbContact,
        offline_after: Duration,
        node: String,
        logs: TaskLogWriter,
    ) -> tokio::task::JoinHandle<()> {
        let every = (offline_after / 8).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let silent = contact.since();
                if silent <= offline_after {
                    continue;
                }
                let to_stop: Vec<(TaskId, Running)> = self
                    .lock()
                    .iter()
                    .filter(|(_, r)| !r.stop.is_cancelled())
                    .filter(|(_, r)| silent.min(r.claimed.elapsed()) > offline_after)
                    .map(|(id, r)| (*id, r.clone()))
                    .collect();
                for (id, r) in to_stop {
                    // Stopped first: writing the log line may wait on a shared store that
                    // failed with the same network.
                    r.stop(StopReason::Fenced);
                    tracing::warn!(task = %id, silent_secs = silent.as_secs(), "no database contact for longer than the offline timeout; stopping task (fenced)");
                    let line = format!(
                        "ERROR node {node} lost contact with the database for over {} s; the \
                         cluster considers it lost, so the task is stopped",
                        offline_after.as_secs()
                    );
                    let logs = logs.clone();
                    let at = Execution {
                        task: id,
                        epoch: r.epoch,
                    };
                    tokio::spawn(async move { logs.line(at, line).await });
                }
            }
        })
    }
}

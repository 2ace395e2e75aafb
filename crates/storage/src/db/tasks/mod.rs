//! The tasks area of the [`Store`]: the queue (enqueue, claim, complete, cancel) and what becomes
//! of a lost or restarted node's tasks; one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    dispatch, ms, unstarted_note, Audit, Backend, ClaimedTask, Completion, LostNode, OwnedTask,
    Store,
};
use crate::Result;

impl Store {
    /// Marks every node silent for longer than `offline_after` as lost and fails (or, for
    /// retry-safe kinds, re-queues) its executing tasks, in one transaction per node. A node is
    /// handled by exactly one caller however many schedulers run this at once.
    pub async fn handle_lost_nodes(&self, offline_after: Duration) -> Result<Vec<LostNode>> {
        dispatch!(self, b => b.handle_lost_nodes(ms(offline_after)).await)
    }

    /// Called once when a node's process starts, before its worker claims anything: tasks the
    /// database still gives this node belong to its previous process, which is gone. Re-queues
    /// the retry-safe ones and fails the rest, naming the restart.
    pub async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        dispatch!(self, b => b.release_own_tasks(name).await)
    }

    /// Gives back claims `node` holds but never started: the database recorded the claim while
    /// its answer never reached the worker (a connection dropped after the commit). Each
    /// execution still held goes back to the queue in its old place (or, when a cancel came
    /// meanwhile, becomes Canceled). Returns the tasks given back.
    pub async fn requeue_unstarted(
        &self,
        node: &str,
        executions: &[crate::Execution],
    ) -> Result<Vec<TaskId>> {
        if executions.is_empty() {
            return Ok(Vec::new());
        }
        let note = unstarted_note(node);
        dispatch!(self, b => b.requeue_unstarted(node, executions, &note).await)
    }

    /// Adds a task to the queue and wakes listeners (NOTIFY on PostgreSQL). The task carries the
    /// current trace, for the worker that runs it to continue.
    pub async fn enqueue(
        &self,
        task: &NewTask,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<TaskRecord> {
        let trace = cuttle_telemetry::trace::traceparent();
        Ok(dispatch!(self, b => b.enqueue(task, None, trace.as_deref(), audit).await)?.0)
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        dispatch!(self, b => b.get_task(id).await)
    }

    /// Newest first, of one state and one kind (whatever its case) when given; with `before`,
    /// only tasks older than that one (for paging).
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        kind: Option<&str>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        let kind = kind.map(str::to_lowercase);
        dispatch!(self, b => b.list_tasks(state, kind.as_deref(), before, limit).await)
    }

    /// Claims up to `max` queued tasks for `node` in FIFO order, in one atomic statement. Claims
    /// nothing when the node is draining, has a cap of 0, or is not registered. Never returns a
    /// task whose concurrency tag is already executing, nor two tasks with one tag.
    pub async fn claim(&self, node: &str, max: u32) -> Result<Vec<ClaimedTask>> {
        Ok(self.complete_and_claim(node, &[], max).await?.1)
    }

    /// Records how tasks ended, in one transaction. A completion is accepted only while the
    /// task is still executing under the same node and claim epoch (fencing); returns the ids
    /// that were accepted.
    pub async fn complete(&self, node: &str, done: &[Completion]) -> Result<Vec<TaskId>> {
        Ok(self.complete_and_claim(node, done, 0).await?.0)
    }

    /// [`Store::complete`] and [`Store::claim`] in one round trip and one commit: the worker's
    /// hot path. The claim may see the database as it was before the completions (PostgreSQL
    /// does), so a concurrency tag freed here may only become claimable on the next call.
    pub async fn complete_and_claim(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        if done.is_empty() && max == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let (accepted, mut claimed) =
            dispatch!(self, b => b.complete_and_claim(node, done, max).await)?;
        claimed.sort_by_key(|c| c.id);
        Ok((accepted, claimed))
    }

    /// The tasks the database says `node` is executing or should cancel.
    pub async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
        dispatch!(self, b => b.owned_tasks(node).await)
    }

    /// Cancels a task: a queued one, or one whose node is offline, becomes Canceled at once; an
    /// executing one becomes Cancelling for its node to stop. `None` when there is no such task;
    /// a finished task is returned unchanged. The event is built from the task as the cancel
    /// left it.
    pub async fn cancel(
        &self,
        id: TaskId,
        offline_after: Duration,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<Option<TaskRecord>> {
        dispatch!(self, b => b.cancel(id, ms(offline_after), audit).await)
    }

    /// Calls `wake.notify_one()` whenever any node enqueues a task, where the database can push
    /// that (PostgreSQL LISTEN/NOTIFY). Returns false where it cannot; workers then rely on
    /// gRPC wake-ups and polling.
    pub fn subscribe_enqueued(&self, wake: Arc<Notify>, shutdown: CancellationToken) -> bool {
        match &*self.backend {
            Backend::Sqlite(_) | Backend::Mssql(_) => false,
            Backend::Postgres(b) => {
                b.subscribe_enqueued(wake, shutdown);
                true
            }
        }
    }
}

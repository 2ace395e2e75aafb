//! The tasks area in SQLite.

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState, UnixMs};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use crate::db::deployments::{NewDeployment, OwnedDeployment};
use crate::db::{
    lost_error, requeue_note, restart_error, restart_requeue_note, Audit, ClaimedTask, Completion,
    LostNode, OwnedTask, CANCELED_UNSTARTED,
};
use crate::Execution;
use crate::Result;
use rusqlite::{params, OptionalExtension, Row};

const TASK_COLUMNS: &str = "seq, kind, arguments, state, description, concurrency_tag, node, \
     claim_epoch, queued_at_ms, started_at_ms, completed_at_ms, error";

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let args: String = row.get(2)?;
    let state: String = row.get(3)?;
    Ok(TaskRecord {
        id: TaskId(row.get(0)?),
        kind: row.get(1)?,
        arguments: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        state: state.parse().unwrap_or(TaskState::Failed),
        description: row.get(4)?,
        concurrency_tag: row.get(5)?,
        node: row.get(6)?,
        claim_epoch: row.get(7)?,
        queued_at: row.get(8)?,
        started_at: row.get(9)?,
        completed_at: row.get(10)?,
        error: row.get(11)?,
    })
}

/// Re-queues a node's executing retry-safe tasks and fails (or, when cancelling, cancels) the
/// rest, inside the caller's transaction.
fn release_tasks(
    tx: &rusqlite::Transaction<'_>,
    name: String,
    requeue_note: &str,
    error: &str,
) -> Result<LostNode> {
    let mut requeue = tx
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'Queued', node = NULL, started_at_ms = NULL,
                 error = ?2, queued_at_ms = {NOW}
             WHERE node = ?1 AND state = 'Executing' AND retry_safe = 1 RETURNING seq, claim_epoch"
        ))
        .map_err(db_err)?;
    let execution = |r: &Row<'_>| {
        Ok(Execution {
            task: TaskId(r.get(0)?),
            epoch: r.get(1)?,
        })
    };
    let requeued = requeue
        .query_map(params![name, requeue_note], execution)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let mut fail = tx
        .prepare_cached(&format!(
            "UPDATE tasks SET
                 state = CASE state WHEN 'Cancelling' THEN 'Canceled' ELSE 'Failed' END,
                 completed_at_ms = {NOW}, error = ?2
             WHERE node = ?1 AND state IN ('Executing', 'Cancelling') RETURNING seq, claim_epoch"
        ))
        .map_err(db_err)?;
    let failed = fail
        .query_map(params![name, error], execution)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    Ok(LostNode {
        name,
        failed,
        requeued,
    })
}

impl Sqlite {
    pub(in crate::db) async fn handle_lost_nodes(
        &self,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<LostNode>> {
        self.write(move |tx| {
            let names: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE nodes SET lost_at_ms = {NOW}
                         WHERE lost_at_ms IS NULL AND last_seen_ms <= {NOW} - ?1 RETURNING name"
                    ))
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([offline_after_ms], |r| r.get(0))
                    .map_err(db_err)?;
                rows.collect::<rusqlite::Result<_>>().map_err(db_err)?
            };
            let mut lost = Vec::with_capacity(names.len());
            for name in names {
                let error = lost_error(&name, offline_after_ms);
                let note = requeue_note(&name);
                lost.push(release_tasks(tx, name, &note, &error)?);
            }
            Ok(lost)
        })
        .await
    }

    pub(in crate::db) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        let name = name.to_owned();
        self.write(move |tx| {
            let error = restart_error(&name);
            let note = restart_requeue_note(&name);
            release_tasks(tx, name, &note, &error)
        })
        .await
    }

    pub(in crate::db) async fn requeue_unstarted(
        &self,
        node: &str,
        executions: &[Execution],
        note: &str,
    ) -> Result<Vec<TaskId>> {
        let (node, note, executions) = (node.to_owned(), note.to_owned(), executions.to_vec());
        self.write(move |tx| {
            // Every SET expression sees the row as it was, so `state` is the old state.
            let mut st = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET
                         state = CASE state WHEN 'Cancelling' THEN 'Canceled' ELSE 'Queued' END,
                         node = CASE state WHEN 'Cancelling' THEN node END,
                         started_at_ms = CASE state WHEN 'Cancelling' THEN started_at_ms END,
                         completed_at_ms = CASE state WHEN 'Cancelling' THEN {NOW} END,
                         error = CASE state WHEN 'Cancelling' THEN ?4 ELSE ?5 END
                     WHERE seq = ?2 AND claim_epoch = ?3 AND node = ?1
                       AND state IN ('Executing', 'Cancelling')"
                ))
                .map_err(db_err)?;
            let mut given_back = Vec::new();
            for e in executions {
                let n = st
                    .execute(params![node, e.task.0, e.epoch, CANCELED_UNSTARTED, note])
                    .map_err(db_err)?;
                if n == 1 {
                    given_back.push(e.task);
                }
            }
            Ok(given_back)
        })
        .await
    }

    pub(in crate::db) async fn enqueue(
        &self,
        task: &NewTask,
        deployment: Option<&NewDeployment<'_>>,
        trace_parent: Option<&str>,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<(TaskRecord, Option<i64>)> {
        let task = task.clone();
        let deployment = deployment.map(OwnedDeployment::from);
        let trace_parent = trace_parent.map(str::to_owned);
        self.write(move |tx| {
            let record = tx
                .query_row(
                    &format!(
                        "INSERT INTO tasks (kind, arguments, description, concurrency_tag, state,
                         retry_safe, queued_at_ms, trace_parent)
                     VALUES (?1, ?2, ?3, ?4, 'Queued', ?5, {NOW}, ?6) RETURNING {TASK_COLUMNS}"
                    ),
                    params![
                        task.kind.name(),
                        task.kind.arguments().to_string(),
                        task.description,
                        task.concurrency_tag,
                        task.kind.retry_safe(),
                        trace_parent
                    ],
                    task_from_row,
                )
                .map_err(db_err)?;
            let deployment_id = match &deployment {
                None => None,
                Some(d) => Some(
                    tx.query_row(
                        &format!(
                            "INSERT INTO deployments (space, project, release, environment, task,
                                 created_by, created_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}) RETURNING seq"
                        ),
                        params![
                            d.space,
                            d.project,
                            d.release,
                            d.environment,
                            record.id.0,
                            d.created_by
                        ],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(db_err)?,
                ),
            };
            insert_event(tx, audit.as_ref(), Some(&record))?;
            Ok((record, deployment_id))
        })
        .await
    }

    pub(in crate::db) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE seq = ?1"),
                [id.0],
                task_from_row,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        kind: Option<&str>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        let kind = kind.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?3 IS NULL OR seq < ?3)
                       AND (?4 IS NULL OR LOWER(kind) = ?4)
                     ORDER BY seq DESC LIMIT ?2"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![state.map(|s| s.as_str()), limit, before.map(|b| b.0), kind], task_from_row)
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    /// Records outcomes and claims new tasks in one `BEGIN IMMEDIATE` transaction: one commit
    /// per turn of a worker's loop.
    pub(in crate::db) async fn complete_and_claim(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        let (node, done) = (node.to_owned(), done.to_vec());
        self.write(move |tx| {
            let mut accepted = Vec::with_capacity(done.len());
            if !done.is_empty() {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE tasks SET state = ?4, error = ?5, completed_at_ms = {NOW}
                         WHERE seq = ?1 AND claim_epoch = ?2 AND node = ?3
                           AND state IN ('Executing', 'Cancelling')"
                    ))
                    .map_err(db_err)?;
                for d in &done {
                    let n = stmt
                        .execute(params![d.id.0, d.epoch, node, d.state.as_str(), d.error])
                        .map_err(db_err)?;
                    if n > 0 {
                        accepted.push(d.id);
                    }
                }
            }
            if max == 0 {
                return Ok((accepted, Vec::new()));
            }
            // The transaction holds the database's write lock, so this statement sees and
            // claims a consistent set: no other process claims in between.
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET state = 'Executing', node = ?1,
                         claim_epoch = claim_epoch + 1, started_at_ms = {NOW}, error = NULL
                     WHERE seq IN (
                         SELECT q.seq FROM tasks q
                         WHERE q.state = 'Queued'
                           AND EXISTS (SELECT 1 FROM nodes n
                                       WHERE n.name = ?1 AND n.draining = 0 AND n.task_cap > 0)
                           AND (q.concurrency_tag IS NULL OR (
                               NOT EXISTS (SELECT 1 FROM tasks e
                                           WHERE e.concurrency_tag = q.concurrency_tag
                                             AND e.state IN ('Executing', 'Cancelling'))
                               AND NOT EXISTS (SELECT 1 FROM tasks o
                                           WHERE o.concurrency_tag = q.concurrency_tag
                                             AND o.state = 'Queued'
                                             AND (o.queued_at_ms, o.seq) < (q.queued_at_ms, q.seq))))
                         ORDER BY q.queued_at_ms, q.seq
                         -- Never past the node's task cap as stored now, counting what
                         -- runs on it (the completions above are already applied).
                         LIMIT MIN(?2, MAX(0,
                             IFNULL((SELECT n.task_cap FROM nodes n WHERE n.name = ?1), 0)
                             - (SELECT COUNT(*) FROM tasks r
                                WHERE r.node = ?1 AND r.state IN ('Executing', 'Cancelling')))))
                     RETURNING seq, claim_epoch, kind, arguments, started_at_ms - queued_at_ms,
                         trace_parent"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![node, max], |r| {
                    let args: String = r.get(3)?;
                    Ok(ClaimedTask {
                        id: TaskId(r.get(0)?),
                        epoch: r.get(1)?,
                        kind: r.get(2)?,
                        arguments: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
                        waited_ms: r.get(4)?,
                        trace_parent: r.get(5)?,
                    })
                })
                .map_err(db_err)?;
            let claimed = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
            Ok((accepted, claimed))
        })
        .await
    }

    pub(in crate::db) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
        let node = node.to_owned();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, claim_epoch, state FROM tasks
                     WHERE node = ?1 AND state IN ('Executing', 'Cancelling')",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([node], |r| {
                    let state: String = r.get(2)?;
                    Ok(OwnedTask {
                        id: TaskId(r.get(0)?),
                        epoch: r.get(1)?,
                        state: state.parse().unwrap_or(TaskState::Executing),
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn cancel(
        &self,
        id: TaskId,
        offline_after_ms: UnixMs,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<Option<TaskRecord>> {
        self.write(move |tx| {
            // Queued, or owned by a node that stopped heartbeating: nobody else will finish the
            // cancel, so it is final now.
            tx.execute(
                &format!(
                    "UPDATE tasks SET state = 'Canceled', completed_at_ms = {NOW},
                         error = CASE state WHEN 'Queued' THEN 'canceled before it started'
                                 ELSE 'canceled; node ' || COALESCE(node, '?') || ' is offline' END
                     WHERE seq = ?1 AND (state = 'Queued' OR (state IN ('Executing', 'Cancelling')
                       AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = tasks.node
                                       AND n.last_seen_ms > {NOW} - ?2)))"
                ),
                params![id.0, offline_after_ms],
            )
            .map_err(db_err)?;
            tx.execute(
                "UPDATE tasks SET state = 'Cancelling'
                 WHERE seq = ?1 AND state = 'Executing'",
                [id.0],
            )
            .map_err(db_err)?;
            let task = tx
                .query_row(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE seq = ?1"),
                    [id.0],
                    task_from_row,
                )
                .optional()
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), task.as_ref())?;
            Ok(task)
        })
        .await
    }
}

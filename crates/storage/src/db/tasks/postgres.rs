//! The tasks area in PostgreSQL.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState, UnixMs};

use super::super::postgres::{insert_event, Postgres, NOW};
use super::super::postgres_tls::MakeRustls;
use crate::db::deployments::NewDeployment;
use crate::db::{
    lost_error, requeue_note, restart_error, restart_requeue_note, Audit, ClaimedTask, Completion,
    LostNode, OwnedTask, CANCELED_UNSTARTED,
};
use crate::Execution;
use crate::Result;
use tokio::sync::Notify;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Config, Row};
use tokio_util::sync::CancellationToken;

const TASK_COLUMNS: &str = "seq, kind, arguments, state, description, concurrency_tag, node, \
     claim_epoch, queued_at_ms, started_at_ms, completed_at_ms, error";

const NOTIFY_CHANNEL: &str = "cuttle_tasks";

fn task_from_row(row: &Row) -> TaskRecord {
    let args: String = row.get(2);
    let state: String = row.get(3);
    TaskRecord {
        id: TaskId(row.get(0)),
        kind: row.get(1),
        arguments: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        state: state.parse().unwrap_or(TaskState::Failed),
        description: row.get(4),
        concurrency_tag: row.get(5),
        node: row.get(6),
        claim_epoch: row.get(7),
        queued_at: row.get(8),
        started_at: row.get(9),
        completed_at: row.get(10),
        error: row.get(11),
    }
}

/// `seq, claim_epoch` rows as executions.
fn executions(rows: &[Row]) -> Vec<Execution> {
    rows.iter()
        .map(|r| Execution {
            task: TaskId(r.get(0)),
            epoch: r.get(1),
        })
        .collect()
}

/// A unique-index violation: two claimers raced for one concurrency tag.
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Holds one LISTEN connection until shutdown (`Ok`) or until it breaks (`Err`).
async fn listen(
    config: &Config,
    tls: MakeRustls,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(Ok(())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    let out = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            msg = rx.recv() => match msg {
                Some(Ok(())) => wake.notify_one(),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
        }
    };
    driver.abort();
    if out.is_ok() && !shutdown.is_cancelled() {
        // The connection closed without an error: treat as lost so the caller reconnects.
        return client.batch_execute("SELECT 1").await;
    }
    out
}

impl Postgres {
    pub(in crate::db) async fn handle_lost_nodes(
        &self,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<LostNode>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.map_err(e))?;
        // The row lock taken by this UPDATE makes a second scheduler wait, then re-check
        // `lost_at_ms IS NULL` and skip the node: exactly one scheduler handles each loss.
        let names: Vec<String> = tx
            .query(
                &format!(
                    "UPDATE nodes SET lost_at_ms = {NOW}
                     WHERE lost_at_ms IS NULL AND last_seen_ms <= {NOW} - $1 RETURNING name"
                ),
                &[&offline_after_ms],
            )
            .await
            .map_err(|e| self.map_err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut lost = Vec::with_capacity(names.len());
        for name in names {
            let error = lost_error(&name, offline_after_ms);
            let note = requeue_note(&name);
            lost.push(self.release_tasks(&tx, name, &note, &error).await?);
        }
        tx.commit().await.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(lost)
    }

    pub(in crate::db) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.map_err(e))?;
        let error = restart_error(name);
        let released = self
            .release_tasks(&tx, name.to_owned(), &restart_requeue_note(name), &error)
            .await?;
        tx.commit().await.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(released)
    }

    pub(in crate::db) async fn requeue_unstarted(
        &self,
        node: &str,
        executions: &[Execution],
        note: &str,
    ) -> Result<Vec<TaskId>> {
        let c = self.conn().await?;
        let ids: Vec<i64> = executions.iter().map(|e| e.task.0).collect();
        let epochs: Vec<i64> = executions.iter().map(|e| e.epoch).collect();
        // Every SET expression sees the row as it was, so `state` below is the old state.
        let rows = c
            .query(
                &format!(
                    "UPDATE tasks t SET
                         state = CASE t.state WHEN 'Cancelling' THEN 'Canceled' ELSE 'Queued' END,
                         node = CASE t.state WHEN 'Cancelling' THEN t.node END,
                         started_at_ms = CASE t.state WHEN 'Cancelling' THEN t.started_at_ms END,
                         completed_at_ms = CASE t.state WHEN 'Cancelling' THEN {NOW} END,
                         error = CASE t.state WHEN 'Cancelling' THEN $4 ELSE $5 END
                     FROM unnest($2::bigint[], $3::bigint[]) AS v(seq, epoch)
                     WHERE t.seq = v.seq AND t.claim_epoch = v.epoch AND t.node = $1
                       AND t.state IN ('Executing', 'Cancelling')
                     RETURNING t.seq"
                ),
                &[&node, &ids, &epochs, &CANCELED_UNSTARTED, &note],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(rows.iter().map(|r| TaskId(r.get(0))).collect())
    }

    pub(in crate::db) async fn enqueue(
        &self,
        task: &NewTask,
        deployment: Option<&NewDeployment<'_>>,
        trace_parent: Option<&str>,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<(TaskRecord, Option<i64>)> {
        let args = task.kind.arguments().to_string();
        let kind = task.kind.name();
        let retry = task.kind.retry_safe();
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH t AS (
                     INSERT INTO tasks (kind, arguments, description, concurrency_tag, state,
                         retry_safe, queued_at_ms, trace_parent)
                     VALUES ($1, $2, $3, $4, 'Queued', $5, {NOW}, $6) RETURNING {TASK_COLUMNS})
                 SELECT t.*, pg_notify('{NOTIFY_CHANNEL}', '') FROM t"
            )
        });
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
            Type::TEXT,
        ];
        let mut c = self.conn().await?;
        // NOTIFY is delivered at commit, so a woken worker always finds the row.
        let written: std::result::Result<_, tokio_postgres::Error> = async {
            let st = c.prepared(&SQL, &types).await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_one(
                    &st,
                    &[
                        &kind,
                        &args,
                        &task.description,
                        &task.concurrency_tag,
                        &retry,
                        &trace_parent,
                    ],
                )
                .await?;
            let record = task_from_row(&row);
            let deployment_id = match deployment {
                None => None,
                Some(d) => Some(
                    tx.query_one(
                        &format!(
                            "INSERT INTO deployments (space, project, release, environment, task,
                                 created_by, created_at_ms)
                             VALUES ($1, $2, $3, $4, $5, $6, {NOW}) RETURNING seq"
                        ),
                        &[
                            &d.space,
                            &d.project,
                            &d.release,
                            &d.environment,
                            &record.id.0,
                            &d.created_by,
                        ],
                    )
                    .await?
                    .get::<_, i64>(0),
                ),
            };
            insert_event(&tx, audit.as_ref(), Some(&record)).await?;
            tx.commit().await?;
            Ok((record, deployment_id))
        }
        .await;
        let record = written.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(record)
    }

    pub(in crate::db) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE seq = $1"),
                &[&id.0],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(task_from_row))
    }

    pub(in crate::db) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        kind: Option<&str>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        let c = self.conn().await?;
        let state = state.map(|s| s.as_str());
        let rows = c
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1::text IS NULL OR state = $1) AND ($3::bigint IS NULL OR seq < $3)
                       AND ($4::text IS NULL OR LOWER(kind) = $4)
                     ORDER BY seq DESC LIMIT $2"
                ),
                &[&state, &(limit as i64), &before.map(|b| b.0), &kind],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Records outcomes and claims new tasks in one statement: one round trip and one commit
    /// per turn of a worker's loop, however many tasks finished or start.
    pub(in crate::db) async fn complete_and_claim(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        // Both CTEs see the snapshot from before the statement: a tag freed by `done` is
        // claimable on the next turn, not in this one, so the unique index is never hit here
        // by our own rows.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH done AS (
                 UPDATE tasks t SET state = v.state, error = v.error, completed_at_ms = {NOW}
                 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[])
                      AS v(seq, epoch, state, error)
                 WHERE t.seq = v.seq AND t.claim_epoch = v.epoch AND t.node = $1
                   AND t.state IN ('Executing', 'Cancelling')
                 RETURNING t.seq),
             claimed AS (
                 UPDATE tasks t SET state = 'Executing', node = $1,
                     claim_epoch = t.claim_epoch + 1, started_at_ms = {NOW}, error = NULL
                 FROM (
                     SELECT q.seq FROM tasks q
                     WHERE q.state = 'Queued'
                       AND EXISTS (SELECT 1 FROM nodes n
                                   WHERE n.name = $1 AND NOT n.draining AND n.task_cap > 0)
                       AND (q.concurrency_tag IS NULL OR (
                           NOT EXISTS (SELECT 1 FROM tasks e
                                       WHERE e.concurrency_tag = q.concurrency_tag
                                         AND e.state IN ('Executing', 'Cancelling'))
                           AND NOT EXISTS (SELECT 1 FROM tasks o
                                       WHERE o.concurrency_tag = q.concurrency_tag
                                         AND o.state = 'Queued'
                                         AND (o.queued_at_ms, o.seq) < (q.queued_at_ms, q.seq))))
                     ORDER BY q.queued_at_ms, q.seq
                     -- Never past the node's task cap as stored now (a change reaches the
                     -- next claim, not the next heartbeat), counting what runs on it but
                     -- what this statement completes (not what it refused: a stale epoch).
                     LIMIT LEAST($6, GREATEST(0,
                         COALESCE((SELECT n.task_cap FROM nodes n WHERE n.name = $1), 0)
                         - (SELECT COUNT(*) FROM tasks r
                            WHERE r.node = $1 AND r.state IN ('Executing', 'Cancelling')
                              AND r.seq NOT IN (SELECT seq FROM done))))
                     FOR UPDATE SKIP LOCKED) c
                 WHERE t.seq = c.seq
                 RETURNING t.seq, t.claim_epoch, t.kind, t.arguments,
                     t.started_at_ms - t.queued_at_ms AS waited, t.trace_parent)
             SELECT TRUE, seq, 0::bigint, NULL::text, NULL::text, 0::bigint, NULL::text FROM done
             UNION ALL
             SELECT FALSE, seq, claim_epoch, kind, arguments, waited, trace_parent FROM claimed"
            )
        });
        let mut c = self.conn().await?;
        let types = [
            Type::TEXT,
            Type::INT8_ARRAY,
            Type::INT8_ARRAY,
            Type::TEXT_ARRAY,
            Type::TEXT_ARRAY,
            Type::INT8,
        ];
        let st = c
            .prepared(&SQL, &types)
            .await
            .map_err(|e| self.map_err(e))?;
        let ids: Vec<i64> = done.iter().map(|d| d.id.0).collect();
        let epochs: Vec<i64> = done.iter().map(|d| d.epoch).collect();
        let states: Vec<&str> = done.iter().map(|d| d.state.as_str()).collect();
        let errors: Vec<Option<&str>> = done.iter().map(|d| d.error.as_deref()).collect();
        let max = i64::from(max);
        let params: [&(dyn ToSql + Sync); 6] = [&node, &ids, &epochs, &states, &errors, &max];
        // Two nodes can claim tasks with one tag at the same moment; the unique index makes the
        // later statement fail whole (outcomes included), and a retry sees the tag executing.
        let mut attempt = 0;
        let rows = loop {
            attempt += 1;
            match c.query(&st, &params).await {
                Ok(rows) => break rows,
                Err(e) if is_unique_violation(&e) && attempt < 5 => {
                    tracing::debug!(attempt, "claim raced on a concurrency tag; retrying");
                }
                Err(e) => return Err(self.map_err(e)),
            }
        };
        self.committed();
        let mut accepted = Vec::new();
        let mut claimed = Vec::new();
        for r in &rows {
            let id = TaskId(r.get(1));
            if r.get::<_, bool>(0) {
                accepted.push(id);
            } else {
                let args: Option<String> = r.get(4);
                claimed.push(ClaimedTask {
                    id,
                    epoch: r.get(2),
                    kind: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    arguments: args
                        .and_then(|a| serde_json::from_str(&a).ok())
                        .unwrap_or(serde_json::Value::Null),
                    waited_ms: r.get(5),
                    trace_parent: r.get(6),
                });
            }
        }
        Ok((accepted, claimed))
    }

    pub(in crate::db) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
        const SQL: &str = "SELECT seq, claim_epoch, state FROM tasks
                           WHERE node = $1 AND state IN ('Executing', 'Cancelling')";
        let mut c = self.conn().await?;
        let st = c
            .prepared(SQL, &[Type::TEXT])
            .await
            .map_err(|e| self.map_err(e))?;
        let rows = c.query(&st, &[&node]).await.map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| OwnedTask {
                id: TaskId(r.get(0)),
                epoch: r.get(1),
                state: r
                    .get::<_, String>(2)
                    .parse()
                    .unwrap_or(TaskState::Executing),
            })
            .collect())
    }

    pub(in crate::db) async fn cancel(
        &self,
        id: TaskId,
        offline_after_ms: UnixMs,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<Option<TaskRecord>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.map_err(e))?;
        // Queued, or owned by a node that stopped heartbeating: nobody else will finish the
        // cancel, so it is final now.
        tx.execute(
            &format!(
                "UPDATE tasks SET state = 'Canceled', completed_at_ms = {NOW},
                     error = CASE state WHEN 'Queued' THEN 'canceled before it started'
                             ELSE 'canceled; node ' || COALESCE(node, '?') || ' is offline' END
                 WHERE seq = $1 AND (state = 'Queued' OR (state IN ('Executing', 'Cancelling')
                   AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = tasks.node
                                   AND n.last_seen_ms > {NOW} - $2)))"
            ),
            &[&id.0, &offline_after_ms],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        tx.execute(
            "UPDATE tasks SET state = 'Cancelling' WHERE seq = $1 AND state = 'Executing'",
            &[&id.0],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        let row = tx
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE seq = $1"),
                &[&id.0],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        let task = row.as_ref().map(task_from_row);
        insert_event(&tx, audit.as_ref(), task.as_ref())
            .await
            .map_err(|e| self.map_err(e))?;
        tx.commit().await.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(task)
    }

    pub(in crate::db) fn subscribe_enqueued(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let target = self.target.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            while !shutdown.is_cancelled() {
                match listen(&config, tls.clone(), &wake, &shutdown).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(db = %target, error = %e, "task notification listener lost its connection; reconnecting");
                        // Anything enqueued meanwhile is found by the fallback poll; wake once
                        // now so a worker looks straight away after reconnecting.
                        wake.notify_one();
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
    }

    /// Re-queues a node's executing retry-safe tasks and fails (or, when cancelling, cancels)
    /// the rest, inside the caller's transaction.
    pub(in crate::db) async fn release_tasks(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        name: String,
        requeue_note: &str,
        error: &str,
    ) -> Result<LostNode> {
        let requeued = executions(
            &tx.query(
                &format!(
                    "UPDATE tasks SET state = 'Queued', node = NULL, started_at_ms = NULL,
                         error = $2, queued_at_ms = {NOW}
                     WHERE node = $1 AND state = 'Executing' AND retry_safe RETURNING seq, claim_epoch"
                ),
                &[&name, &requeue_note],
            )
            .await
            .map_err(|e| self.map_err(e))?,
        );
        let failed = executions(
            &tx.query(
                &format!(
                    "UPDATE tasks SET
                         state = CASE state WHEN 'Cancelling' THEN 'Canceled' ELSE 'Failed' END,
                         completed_at_ms = {NOW}, error = $2
                     WHERE node = $1 AND state IN ('Executing', 'Cancelling') RETURNING seq, claim_epoch"
                ),
                &[&name, &error],
            )
            .await
            .map_err(|e| self.map_err(e))?,
        );
        Ok(LostNode {
            name,
            failed,
            requeued,
        })
    }
}

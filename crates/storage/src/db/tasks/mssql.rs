//! The tasks area in SQL Server.

use std::sync::LazyLock;

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState, UnixMs};

use super::super::mssql::task_columns;
use super::super::mssql::{
    age_ms, insert_event, int64, ms, opt_text, query, rows, run, run_in_transaction, run_racing,
    text, MsConn, Mssql, OptText, Retry,
};
use crate::db::deployments::NewDeployment;
use crate::db::{
    lost_error, requeue_note, restart_error, restart_requeue_note, Audit, ClaimedTask, Completion,
    LostNode, OwnedTask, CANCELED_UNSTARTED,
};
use crate::Execution;
use crate::{Error, Result};
use tiberius::error::Error as TdsError;
use tiberius::{Row, ToSql};

/// Outcomes per batch: 4 parameters each, 2 more for the node and the claim size, under the
/// 2,100 a request may carry.
const MAX_COMPLETIONS_PER_BATCH: usize = 500;
const _: () = assert!(2 + 4 * MAX_COMPLETIONS_PER_BATCH <= 2100);
const _: () = assert!(3 + 2 * MAX_COMPLETIONS_PER_BATCH <= 2100);

fn task_from_row(r: &Row) -> TaskRecord {
    TaskRecord {
        id: TaskId(int64(r, 0)),
        kind: text(r, 1),
        arguments: serde_json::from_str(&text(r, 2)).unwrap_or(serde_json::Value::Null),
        state: text(r, 3).parse().unwrap_or(TaskState::Failed),
        description: text(r, 4),
        concurrency_tag: opt_text(r, 5),
        node: opt_text(r, 6),
        claim_epoch: int64(r, 7),
        queued_at: int64(r, 8),
        started_at: r.get::<i64, _>(9),
        completed_at: r.get::<i64, _>(10),
        error: opt_text(r, 11),
    }
}

fn executions(rows: &[Row]) -> Vec<Execution> {
    rows.iter()
        .map(|r| Execution {
            task: TaskId(int64(r, 0)),
            epoch: int64(r, 1),
        })
        .collect()
}

/// Re-queues a node's executing retry-safe tasks and fails (or, when cancelling, cancels) the
/// rest, inside the caller's transaction: one round trip, two result sets.
async fn release_tasks(
    c: &mut MsConn,
    name: String,
    requeue_note: &str,
    error: &str,
) -> std::result::Result<LostNode, TdsError> {
    let mut sets = query(
        c,
        "UPDATE tasks SET state = N'Queued', node = NULL, started_at = NULL, error = @P2,
             queued_at = SYSUTCDATETIME()
         OUTPUT inserted.seq, inserted.claim_epoch
         WHERE node = @P1 AND state = N'Executing' AND retry_safe = 1;
         UPDATE tasks SET
             state = CASE state WHEN N'Cancelling' THEN N'Canceled' ELSE N'Failed' END,
             completed_at = SYSUTCDATETIME(), error = @P3
         OUTPUT inserted.seq, inserted.claim_epoch
         WHERE node = @P1 AND state IN (N'Executing', N'Cancelling');",
        &[&name.as_str(), &requeue_note, &error],
    )
    .await?
    .into_iter();
    let requeued = executions(&sets.next().unwrap_or_default());
    let failed = executions(&sets.next().unwrap_or_default());
    Ok(LostNode {
        name,
        failed,
        requeued,
    })
}

/// Gives back node `@P1`'s unstarted claims: execution `i` is `@P{4+2i}` (task), `@P{5+2i}`
/// (epoch); `@P2` is the error of a cancelled one, `@P3` the note on a re-queued one. Every SET
/// expression sees the row as it was, so `state` is the old state throughout.
///
/// The update joins its `VALUES` list in `FROM … WHERE` rather than `FROM tasks t JOIN (VALUES
/// …)`: both are T-SQL, but Babelfish rejects a joined list (or table variable) when the
/// statement also has an `OUTPUT` clause ("missing FROM-clause entry").
fn requeue_unstarted_sql(executions: usize) -> String {
    let values: Vec<String> = (0..executions)
        .map(|i| format!("(@P{}, @P{})", 4 + 2 * i, 5 + 2 * i))
        .collect();
    format!(
        "UPDATE tasks SET
             state = CASE tasks.state WHEN N'Cancelling' THEN N'Canceled' ELSE N'Queued' END,
             node = CASE tasks.state WHEN N'Cancelling' THEN tasks.node END,
             started_at = CASE tasks.state WHEN N'Cancelling' THEN tasks.started_at END,
             completed_at = CASE tasks.state WHEN N'Cancelling' THEN SYSUTCDATETIME() END,
             error = CASE tasks.state WHEN N'Cancelling' THEN @P2 ELSE @P3 END
         OUTPUT inserted.seq
         FROM (VALUES {}) AS v (seq, epoch)
         WHERE tasks.seq = v.seq AND tasks.claim_epoch = v.epoch AND tasks.node = @P1
           AND tasks.state IN (N'Executing', N'Cancelling')",
        values.join(", ")
    )
}

/// The worker's hot path for `done` outcomes and (when `claim`) a claim of up to `@P2` tasks
/// for node `@P1`. Outcome `i` is `@P{3+4i}` (task) .. `@P{6+4i}` (error). Returns one result
/// set of accepted task ids when `done > 0`, then one of claimed tasks when `claim`. The error
/// parameters are [`OptText`]s; the `VALUES` list is joined as in [`requeue_unstarted_sql`].
fn complete_and_claim_sql(done: usize, claim: bool) -> String {
    let mut sql = String::from("BEGIN TRANSACTION;\n");
    if done > 0 {
        let values: Vec<String> = (0..done)
            .map(|i| {
                let p = 3 + 4 * i;
                format!(
                    "(@P{}, @P{}, @P{}, CAST(@P{} AS NVARCHAR(MAX)))",
                    p,
                    p + 1,
                    p + 2,
                    p + 3
                )
            })
            .collect();
        sql.push_str(&format!(
            "UPDATE tasks SET state = v.state, error = v.error, completed_at = SYSUTCDATETIME()
             OUTPUT inserted.seq
             FROM (VALUES {}) AS v (seq, epoch, state, error)
             WHERE tasks.seq = v.seq AND tasks.claim_epoch = v.epoch AND tasks.node = @P1
               AND tasks.state IN (N'Executing', N'Cancelling');\n",
            values.join(", ")
        ));
    }
    if claim {
        // The outer `state = N'Queued'` decides who wins a row when two claimers pick it (on
        // Babelfish, which ignores the hints, they can): the loser re-checks it and skips.
        // With READ_COMMITTED_SNAPSHOT on, READPAST is accepted because UPDLOCK makes this a
        // locking read (the widely used queue form; a plain READPAST read would be refused).
        // Never past the node's task cap as stored now (a change reaches the next claim, not
        // the next heartbeat), counting what runs on it after the completions above.
        sql.push_str(
            "DECLARE @take BIGINT = ISNULL((SELECT task_cap FROM nodes WHERE name = @P1), 0)
                 - (SELECT COUNT_BIG(*) FROM tasks
                    WHERE node = @P1 AND state IN (N'Executing', N'Cancelling'));
             IF @take > @P2 SET @take = @P2;
             IF @take < 0 SET @take = 0;\n",
        );
        sql.push_str(
            "UPDATE tasks SET state = N'Executing', node = @P1, claim_epoch = claim_epoch + 1,
                 started_at = SYSUTCDATETIME(), error = NULL
             OUTPUT inserted.seq, inserted.claim_epoch, inserted.kind, inserted.arguments,
                    DATEDIFF_BIG(MILLISECOND, inserted.queued_at, inserted.started_at),
                    inserted.trace_parent
             WHERE state = N'Queued' AND seq IN (
                 SELECT TOP (@take) q.seq FROM tasks q WITH (UPDLOCK, READPAST, ROWLOCK)
                 WHERE q.state = N'Queued'
                   AND EXISTS (SELECT 1 FROM nodes n
                               WHERE n.name = @P1 AND n.draining = 0 AND n.task_cap > 0)
                   AND (q.concurrency_tag IS NULL OR (
                       NOT EXISTS (SELECT 1 FROM tasks e
                                   WHERE e.concurrency_tag = q.concurrency_tag
                                     AND e.state IN (N'Executing', N'Cancelling'))
                       AND NOT EXISTS (SELECT 1 FROM tasks o
                                   WHERE o.concurrency_tag = q.concurrency_tag
                                     AND o.state = N'Queued'
                                     AND (o.queued_at < q.queued_at
                                          OR (o.queued_at = q.queued_at AND o.seq < q.seq)))))
                 ORDER BY q.queued_at, q.seq);\n",
        );
    }
    sql.push_str("COMMIT TRANSACTION;");
    sql
}

impl Mssql {
    pub(in crate::db) async fn handle_lost_nodes(
        &self,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<LostNode>> {
        static MARK: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE nodes SET lost_at = SYSUTCDATETIME() OUTPUT inserted.name
                 WHERE lost_at IS NULL AND {} >= @P1;",
                age_ms!("last_seen")
            )
        });
        // The row lock taken by the UPDATE makes a second scheduler wait, then re-check
        // `lost_at IS NULL` and skip the node: exactly one scheduler handles each loss. Not
        // retried after a lost connection: a committed first attempt would be invisible.
        let lost = run_in_transaction!(self, |c| {
            let names: Vec<String> = rows(c, &MARK, &[&offline_after_ms])
                .await?
                .iter()
                .map(|r| text(r, 0))
                .collect();
            let mut lost = Vec::with_capacity(names.len());
            for name in names {
                let error = lost_error(&name, offline_after_ms);
                lost.push(release_tasks(c, name.clone(), &requeue_note(&name), &error).await?);
            }
            lost
        })?;
        self.committed();
        Ok(lost)
    }

    pub(in crate::db) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        let error = restart_error(name);
        let note = restart_requeue_note(name);
        let released = run_in_transaction!(self, |c| {
            let released = release_tasks(c, name.to_owned(), &note, &error).await?;
            released
        })?;
        self.committed();
        Ok(released)
    }

    pub(in crate::db) async fn requeue_unstarted(
        &self,
        node: &str,
        executions: &[Execution],
        note: &str,
    ) -> Result<Vec<TaskId>> {
        let mut given_back = Vec::new();
        // Conditional on the epoch and state: running it twice changes nothing more.
        for chunk in executions.chunks(MAX_COMPLETIONS_PER_BATCH) {
            let sql = requeue_unstarted_sql(chunk.len());
            let mut params: Vec<&dyn ToSql> = vec![&node, &CANCELED_UNSTARTED, &note];
            for e in chunk {
                params.push(&e.task.0);
                params.push(&e.epoch);
            }
            let rows = run!(self, Retry::Idempotent, |c| rows(c, &sql, &params).await)?;
            self.committed();
            given_back.extend(rows.iter().map(|r| TaskId(int64(r, 0))));
        }
        Ok(given_back)
    }

    pub(in crate::db) async fn enqueue(
        &self,
        task: &NewTask,
        deployment: Option<&NewDeployment<'_>>,
        trace_parent: Option<&str>,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<(TaskRecord, Option<i64>)> {
        const SQL: &str = concat!(
            "INSERT INTO tasks (kind, arguments, description, concurrency_tag, state, retry_safe,
                 queued_at, trace_parent)
             OUTPUT ",
            task_columns!("inserted"),
            " VALUES (@P1, @P2, @P3, CAST(@P4 AS NVARCHAR(MAX)), N'Queued', @P5, SYSUTCDATETIME(),
                 CAST(@P6 AS VARCHAR(64)))"
        );
        let args = task.kind.arguments().to_string();
        let kind = task.kind.name();
        let retry_safe = task.kind.retry_safe();
        let tag = OptText(task.concurrency_tag.as_deref());
        // A lost connection may have inserted the task: never retried then.
        let record = run_in_transaction!(self, |c| {
            let inserted = rows(
                c,
                SQL,
                &[
                    &kind,
                    &args.as_str(),
                    &task.description.as_str(),
                    &tag,
                    &retry_safe,
                    &OptText(trace_parent),
                ],
            )
            .await?;
            let record = inserted.first().map(task_from_row);
            let mut deployment_id = None;
            if let (Some(d), Some(r)) = (deployment, &record) {
                let made = rows(
                    c,
                    "INSERT INTO deployments (space, project, [release], environment, task,
                         created_by, created_at)
                     OUTPUT inserted.seq
                     VALUES (@P1, @P2, @P3, @P4, @P5, @P6, SYSUTCDATETIME())",
                    &[
                        &d.space,
                        &d.project,
                        &d.release,
                        &d.environment,
                        &r.id.0,
                        &d.created_by,
                    ],
                )
                .await?;
                deployment_id = made.first().map(|x| int64(x, 0));
            }
            insert_event(c, audit.as_ref(), record.as_ref()).await?;
            record.map(|r| (r, deployment_id))
        })?;
        self.committed();
        record.ok_or_else(|| Error::Database("insert returned no row".into()))
    }

    pub(in crate::db) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        const SQL: &str = concat!(
            "SELECT ",
            task_columns!("t"),
            " FROM tasks t WHERE t.seq = @P1"
        );
        let rows = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&id.0]).await)?;
        Ok(rows.first().map(task_from_row))
    }

    pub(in crate::db) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        kind: Option<&str>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        const SQL: &str = concat!(
            "SELECT TOP (@P2) ",
            task_columns!("t"),
            " FROM tasks t
             WHERE (@P1 IS NULL OR t.state = CAST(@P1 AS NVARCHAR(4000)))
               AND (@P3 IS NULL OR t.seq < @P3)
               AND (@P4 IS NULL OR LOWER(t.kind) = CAST(@P4 AS NVARCHAR(4000)))
             ORDER BY t.seq DESC"
        );
        let state = OptText(state.map(|s| s.as_str()));
        let kind = OptText(kind);
        let before = before.map(|b| b.0);
        let limit = i64::from(limit);
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&state, &limit, &before, &kind]).await
        })?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Records outcomes and claims new tasks in one batch and one transaction: one round trip
    /// and one commit per turn of a worker's loop.
    pub(in crate::db) async fn complete_and_claim(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        let mut accepted = Vec::with_capacity(done.len());
        // A request carries at most 2,100 parameters: outcomes beyond one batch's share are
        // recorded first, each chunk in its own transaction (each is fenced on its own).
        let mut chunks: Vec<&[Completion]> = done.chunks(MAX_COMPLETIONS_PER_BATCH).collect();
        let last = chunks.pop().unwrap_or(&[]);
        for chunk in chunks {
            accepted.extend(self.complete_and_claim_batch(node, chunk, 0).await?.0);
        }
        let (more, claimed) = self.complete_and_claim_batch(node, last, max).await?;
        accepted.extend(more);
        Ok((accepted, claimed))
    }

    pub(in crate::db) async fn complete_and_claim_batch(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        let sql = complete_and_claim_sql(done.len(), max > 0);
        let max = i64::from(max);
        let states: Vec<&str> = done.iter().map(|d| d.state.as_str()).collect();
        let errors: Vec<OptText> = done.iter().map(|d| OptText(d.error.as_deref())).collect();
        let mut params: Vec<&dyn ToSql> = Vec::with_capacity(2 + 4 * done.len());
        params.push(&node);
        params.push(&max);
        for ((d, state), error) in done.iter().zip(&states).zip(&errors) {
            params.push(&d.id.0);
            params.push(&d.epoch);
            params.push(state);
            params.push(error);
        }
        // Every failure rolls the whole batch back (XACT_ABORT), outcomes included, so a
        // deadlock or a race on a tag's unique index is simply run again. A lost connection is
        // not: the claim may have committed (the worker gives such claims back).
        let sets = run_racing!(self, Retry::RolledBackOnly, |c| {
            query(c, &sql, &params).await
        })?;
        self.committed();
        let mut sets = sets.into_iter();
        let accepted = if done.is_empty() {
            Vec::new()
        } else {
            sets.next()
                .unwrap_or_default()
                .iter()
                .map(|r| TaskId(int64(r, 0)))
                .collect()
        };
        let claimed = sets
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| ClaimedTask {
                id: TaskId(int64(r, 0)),
                epoch: int64(r, 1),
                kind: text(r, 2),
                arguments: serde_json::from_str(&text(r, 3)).unwrap_or(serde_json::Value::Null),
                waited_ms: int64(r, 4),
                trace_parent: opt_text(r, 5),
            })
            .collect();
        Ok((accepted, claimed))
    }

    pub(in crate::db) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "SELECT seq, claim_epoch, state FROM tasks
                     WHERE node = @P1 AND state IN (N'Executing', N'Cancelling')",
                &[&node],
            )
            .await
        })?;
        Ok(rows
            .iter()
            .map(|r| OwnedTask {
                id: TaskId(int64(r, 0)),
                epoch: int64(r, 1),
                state: text(r, 2).parse().unwrap_or(TaskState::Executing),
            })
            .collect())
    }

    pub(in crate::db) async fn cancel(
        &self,
        id: TaskId,
        offline_after_ms: UnixMs,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<Option<TaskRecord>> {
        // Queued, or owned by a node that stopped heartbeating: nobody else will finish the
        // cancel, so it is final now.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE tasks SET state = N'Canceled', completed_at = SYSUTCDATETIME(),
                     error = CASE state WHEN N'Queued' THEN N'canceled before it started'
                             ELSE N'canceled; node ' + COALESCE(node, N'?') + N' is offline' END
                 WHERE seq = @P1 AND (state = N'Queued' OR (state IN (N'Executing', N'Cancelling')
                   AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = tasks.node
                                   AND {} < @P2)));
                 UPDATE tasks SET state = N'Cancelling' WHERE seq = @P1 AND state = N'Executing';
                 SELECT {} FROM tasks t WHERE t.seq = @P1;",
                age_ms!("n.last_seen"),
                task_columns!("t"),
            )
        });
        let task = run_in_transaction!(self, |c| {
            let task = rows(c, &SQL, &[&id.0, &offline_after_ms])
                .await?
                .first()
                .map(task_from_row);
            insert_event(c, audit.as_ref(), task.as_ref()).await?;
            task
        })?;
        self.committed();
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_and_claim_numbers_its_parameters() {
        let sql = complete_and_claim_sql(3, true);
        for p in 1..=14 {
            assert!(sql.contains(&format!("@P{p}")), "@P{p} missing");
        }
        assert!(!sql.contains("@P15"));
        assert!(sql.contains("(@P11, @P12, @P13, CAST(@P14 AS NVARCHAR(MAX)))"));
        assert!(sql.contains("WITH (UPDLOCK, READPAST, ROWLOCK)"));
        assert!(sql.trim_end().ends_with("COMMIT TRANSACTION;"));
        let biggest = complete_and_claim_sql(MAX_COMPLETIONS_PER_BATCH, true);
        assert!(biggest.contains(&format!("@P{}", 2 + 4 * MAX_COMPLETIONS_PER_BATCH)));
    }

    #[test]
    fn complete_only_and_claim_only_batches_have_one_statement_each() {
        let complete = complete_and_claim_sql(1, false);
        assert_eq!(complete.matches("UPDATE").count(), 1);
        assert!(!complete.contains("TOP (@P2)"));
        let claim = complete_and_claim_sql(0, true);
        assert_eq!(claim.matches("UPDATE").count(), 1);
        assert!(!claim.contains("@P3"));
        // The re-check that keeps a row from being claimed twice when hints are ignored.
        assert!(claim.contains("WHERE state = N'Queued' AND seq IN ("));
    }

    #[test]
    fn requeue_unstarted_numbers_its_parameters() {
        let sql = requeue_unstarted_sql(2);
        assert!(sql.contains("(VALUES (@P4, @P5), (@P6, @P7))"));
        assert!(!sql.contains("@P8"));
    }

    #[test]
    fn task_columns_convert_times_to_unix_milliseconds() {
        let cols = task_columns!("inserted");
        assert!(cols.starts_with("inserted.seq, inserted.kind, "));
        assert!(cols.ends_with(", inserted.error"));
        assert_eq!(cols.matches("DATEDIFF_BIG").count(), 3);
        assert!(cols.contains(
            "DATEDIFF_BIG(MILLISECOND, CAST('1970-01-01' AS DATETIME2(3)), inserted.queued_at)"
        ));
    }
}

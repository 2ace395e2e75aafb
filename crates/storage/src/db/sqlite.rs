//! SQLite: the embedded default. One file in WAL mode; several processes on one host may share
//! it. Every write runs in a `BEGIN IMMEDIATE` transaction, so claims are atomic across
//! processes. Calls run on the blocking pool, one at a time per process.
//!
//! Why this file is long: it is the whole `Store` in SQLite's dialect, one method per call,
//! kept together while the schema was one area (queue, nodes, targets, keys). It is to be
//! split by area (`tasks`, `nodes`, `targets`, `keys`, …) when the deployment tables land,
//! as the other dialects are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cuttle_core::{
    EventRecord, NewTask, NodePatch, NodeRecord, TaskId, TaskRecord,
    TaskState, UnixMs,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::{
    lost_error, requeue_note, restart_error, restart_requeue_note,
    Audit, ClaimedTask, Completion, LostNode, MigrationReport, NodeRegistration, NodeState,
    OwnedTask, CANCELED_UNSTARTED, SCHEMA_VERSION,
};
use crate::{Error, Execution, Result};

const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_events.sql")),
    (
        3,
        include_str!("../../migrations/sqlite/0003_storage_ok.sql"),
    ),
    (4, include_str!("../../migrations/sqlite/0004_targets.sql")),
    (
        5,
        include_str!("../../migrations/sqlite/0005_keys_and_trust.sql"),
    ),
];

/// The database clock in Unix milliseconds.
pub(super) const NOW: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: String,
    commits: Arc<AtomicU64>,
}

pub(super) fn db_err(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

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

impl Sqlite {
    pub(super) async fn open(path: &str, commits: Arc<AtomicU64>) -> Result<Sqlite> {
        let p = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let unavailable = |e: rusqlite::Error| Error::Unavailable {
                target: format!("sqlite file {p}"),
                reason: e.to_string(),
            };
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&p, flags).map_err(unavailable)?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
            // WAL lets readers run beside the one writer; FULL makes every commit durable.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(unavailable)?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %p, mode, "sqlite refused WAL mode");
            }
            conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
                .map_err(unavailable)?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::Database(e.to_string()))??;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            commits,
        })
    }

    /// Runs `f` on the connection, on the blocking pool.
    pub(super) async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: rusqlite rolls back
            // unfinished transactions on drop.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Database(format!("sqlite call panicked: {e}")))?
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and counts the commit.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let commits = self.commits.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(db_err)?;
            commits.fetch_add(1, Ordering::Relaxed);
            Ok(out)
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<()> {
        let path = self.path.clone();
        self.with(move |c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| Error::Unavailable {
                    target: format!("sqlite file {path}"),
                    reason: e.to_string(),
                })
        })
        .await
    }

    pub(super) async fn migrate(&self) -> Result<MigrationReport> {
        let commits = self.commits.clone();
        self.with(move |conn| {
            // EXCLUSIVE: a second process blocks here (busy timeout) until the first commits.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(db_err)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
            )
            .map_err(db_err)?;
            let from: u32 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if from > SCHEMA_VERSION {
                return Err(Error::SchemaTooNew {
                    found: from,
                    supported: SCHEMA_VERSION,
                });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
                tx.execute_batch(sql)
                    .map_err(|e| Error::Database(format!("migration {version:04} failed: {e}")))?;
                tx.execute(
                    &format!(
                        "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, {NOW})"
                    ),
                    params![version],
                )
                .map_err(db_err)?;
                tracing::info!(version, "applied migration");
            }
            tx.commit().map_err(db_err)?;
            commits.fetch_add(1, Ordering::Relaxed);
            Ok(MigrationReport {
                from,
                to: SCHEMA_VERSION.max(from),
            })
        })
        .await
    }

    pub(super) async fn schema_version(&self) -> Result<u32> {
        self.with(|c| {
            let exists: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if !exists {
                return Ok(0);
            }
            c.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
                .map_err(db_err)
        })
        .await
    }









    pub(super) async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        let reg = reg.clone();
        self.write(move |tx| {
            tx.query_row(
                &format!(
                    "INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at_ms, last_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, {NOW}, {NOW})
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                         version = excluded.version, http_address = excluded.http_address,
                         grpc_address = excluded.grpc_address,
                         gateway_address = excluded.gateway_address,
                         started_at_ms = excluded.started_at_ms,
                         last_seen_ms = excluded.last_seen_ms, lost_at_ms = NULL,
                         storage_ok = 1
                     RETURNING task_cap, draining"
                ),
                params![
                    reg.name,
                    reg.roles,
                    reg.version,
                    reg.http_address,
                    reg.grpc_address,
                    reg.gateway_address,
                    reg.initial_task_cap
                ],
                |r| {
                    Ok(NodeState {
                        task_cap: r.get(0)?,
                        draining: r.get(1)?,
                    })
                },
            )
            .map_err(db_err)
        })
        .await
    }

    pub(super) async fn heartbeat(
        &self,
        name: &str,
        storage_ok: bool,
    ) -> Result<Option<NodeState>> {
        let name = name.to_owned();
        self.write(move |tx| {
            tx.query_row(
                &format!(
                    "UPDATE nodes SET last_seen_ms = {NOW}, lost_at_ms = NULL, storage_ok = ?2
                     WHERE name = ?1 RETURNING task_cap, draining"
                ),
                params![name, storage_ok],
                |r| {
                    Ok(NodeState {
                        task_cap: r.get(0)?,
                        draining: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(super) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        let name = name.map(str::to_owned);
        self.with(move |c| {
            let sql = format!(
                "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                     n.last_seen_ms > {NOW} - ?1, n.last_seen_ms, n.started_at_ms,
                     (SELECT COUNT(*) FROM tasks t WHERE t.node = n.name
                        AND t.state IN ('Executing', 'Cancelling')),
                     n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                 FROM nodes n WHERE (?2 IS NULL OR n.name = ?2) ORDER BY n.name"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params![offline_after_ms, name], |r| {
                    let roles: String = r.get(1)?;
                    Ok(NodeRecord {
                        name: r.get(0)?,
                        roles: roles.split(',').map(str::to_owned).collect(),
                        version: r.get(2)?,
                        task_cap: r.get(3)?,
                        draining: r.get(4)?,
                        online: r.get(5)?,
                        last_seen: r.get(6)?,
                        started_at: r.get(7)?,
                        running_tasks: r.get(8)?,
                        http_address: r.get(9)?,
                        grpc_address: r.get(10)?,
                        gateway_address: r.get(11)?,
                        storage_ok: r.get(12)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    pub(super) async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let (name, patch) = (name.to_owned(), patch.clone());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE nodes SET task_cap = COALESCE(?2, task_cap),
                         draining = COALESCE(?3, draining) WHERE name = ?1",
                    params![name, patch.task_cap, patch.draining],
                )
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn delete_node(&self, name: &str, audit: Option<Audit<()>>) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute("DELETE FROM nodes WHERE name = ?1", [name])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn handle_lost_nodes(
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

    pub(super) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        let name = name.to_owned();
        self.write(move |tx| {
            let error = restart_error(&name);
            let note = restart_requeue_note(&name);
            release_tasks(tx, name, &note, &error)
        })
        .await
    }

    pub(super) async fn requeue_unstarted(
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







    pub(super) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |tx| {
            let claimed = tx
                .execute(
                    "UPDATE settings SET value = CAST(?2 AS TEXT)
                     WHERE key = ?1 AND CAST(value AS INTEGER) < ?2",
                    params![key, n],
                )
                .map_err(db_err)?;
            Ok(claimed == 1)
        })
        .await
    }

    pub(super) async fn enqueue(
        &self,
        task: &NewTask,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<TaskRecord> {
        let task = task.clone();
        self.write(move |tx| {
            let record = tx
                .query_row(
                    &format!(
                        "INSERT INTO tasks (kind, arguments, description, concurrency_tag, state,
                         retry_safe, queued_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 'Queued', ?5, {NOW}) RETURNING {TASK_COLUMNS}"
                    ),
                    params![
                        task.kind.name(),
                        task.kind.arguments().to_string(),
                        task.description,
                        task.concurrency_tag,
                        task.kind.retry_safe()
                    ],
                    task_from_row,
                )
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), Some(&record))?;
            Ok(record)
        })
        .await
    }

    pub(super) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
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

    pub(super) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR state = ?1) AND (?3 IS NULL OR seq < ?3)
                     ORDER BY seq DESC LIMIT ?2"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![state.map(|s| s.as_str()), limit, before.map(|b| b.0)], task_from_row)
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    /// Records outcomes and claims new tasks in one `BEGIN IMMEDIATE` transaction: one commit
    /// per turn of a worker's loop.
    pub(super) async fn complete_and_claim(
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
                         LIMIT ?2)
                     RETURNING seq, claim_epoch, kind, arguments"
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
                    })
                })
                .map_err(db_err)?;
            let claimed = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
            Ok((accepted, claimed))
        })
        .await
    }

    pub(super) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
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

    pub(super) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                     FROM events ORDER BY seq DESC LIMIT ?1",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([limit], |r| {
                    let details: String = r.get(6)?;
                    Ok(EventRecord {
                        id: format!("Events-{}", r.get::<_, i64>(0)?),
                        occurred_at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        client_address: r.get(5)?,
                        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    pub(super) async fn cancel(
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

/// Writes the audit event of a change, built from its result, inside the change's transaction;
/// nothing when the change did not happen (`result` is `None`).
pub(super) fn insert_event<R>(
    tx: &rusqlite::Transaction<'_>,
    audit: Option<&Audit<R>>,
    result: Option<&R>,
) -> Result<()> {
    let (Some(audit), Some(result)) = (audit, result) else {
        return Ok(());
    };
    let e = audit(result);
    tx.execute(
        &format!(
            "INSERT INTO events (occurred_at_ms, actor, action, target, client_address, details)
             VALUES ({NOW}, ?1, ?2, ?3, ?4, ?5)"
        ),
        params![
            e.actor,
            e.action,
            e.target,
            e.client_address,
            e.details.to_string()
        ],
    )
    .map_err(db_err)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_run_from_one_to_the_schema_version() {
        let versions: Vec<u32> = super::MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=super::SCHEMA_VERSION).collect::<Vec<_>>());
    }
}

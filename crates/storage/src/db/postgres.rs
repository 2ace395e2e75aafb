//! PostgreSQL: tokio-postgres over a bb8 pool. Claims use `FOR UPDATE SKIP LOCKED`, so many
//! workers claim in parallel without waiting on each other; enqueue NOTIFYs listeners. Hot-path
//! statements are prepared once per pooled connection, so each call is one round trip with no
//! parsing or planning.
//!
//! Why this file is long: it is the whole `Store` in PostgreSQL's dialect, one method per call,
//! kept together while the schema was one area (queue, nodes, targets, keys). It is to be
//! split by area (`tasks`, `nodes`, `targets`, `keys`, …) when the deployment tables land,
//! as the other dialects are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::LazyLock;

use bb8::{Pool, PooledConnection};
use cuttle_core::{
    EventRecord, NewTask, NodePatch, NodeRecord, TaskId, TaskRecord,
    TaskState, UnixMs,
};
use tokio::sync::Notify;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Config, Row, Statement};
use tokio_util::sync::CancellationToken;

use super::gate::{self, ConnectFailure};
use super::postgres_tls::{self, MakeRustls};
use super::{
    lost_error, requeue_note, restart_error, restart_requeue_note,
    Audit, ClaimedTask, Completion, LostNode, MigrationReport, NodeRegistration, NodeState,
    OwnedTask, StoreOptions, CANCELED_UNSTARTED, SCHEMA_VERSION,
};
use crate::{Error, Execution, Result};

const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_events.sql")),
    (
        3,
        include_str!("../../migrations/postgres/0003_storage_ok.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_targets.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_keys_and_trust.sql"),
    ),
];

/// The database clock in Unix milliseconds.
pub(super) const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// An error and its causes ("error connecting to server: Connection refused (os error 111)").
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Advisory-lock key that serialises schema migrations across nodes ("cuttle" in ASCII).
const MIGRATION_LOCK: i64 = 0x6375_7474_6c65;

const NOTIFY_CHANNEL: &str = "cuttle_tasks";

const TASK_COLUMNS: &str = "seq, kind, arguments, state, description, concurrency_tag, node, \
     claim_epoch, queued_at_ms, started_at_ms, completed_at_ms, error";

/// Opens pooled connections, each with its own cache of prepared statements.
pub(super) struct Manager {
    config: Config,
    tls: MakeRustls,
    last_failure: ConnectFailure,
}

/// A pooled connection. Hot-path statements are prepared once per connection, so each call is
/// one bind-and-execute round trip with no parsing or planning.
pub(super) struct PgConn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl std::ops::Deref for PgConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl PgConn {
    async fn prepared(
        &mut self,
        sql: &'static str,
        types: &[Type],
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare_typed(sql, types).await?;
        self.prepared.insert(sql, st.clone());
        Ok(st)
    }
}

/// Runs `$body` (an expression using `$tx`, a transaction on a pooled connection, that may `?`
/// driver errors) and commits; gives the driver's result for the caller to map.
macro_rules! in_transaction {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut conn = $self.conn().await?;
        let result: std::result::Result<_, tokio_postgres::Error> = async {
            let $tx = conn.transaction().await?;
            let out = $body;
            $tx.commit().await?;
            Ok(out)
        }
        .await;
        result
    }};
}
pub(super) use in_transaction;

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> std::result::Result<PgConn, Self::Error> {
        let connected = self.config.connect(self.tls.clone()).await;
        self.last_failure
            .record(connected.as_ref().err().map(with_causes));
        let (client, connection) = connected?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(PgConn {
            client,
            prepared: HashMap::new(),
        })
    }

    async fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), Self::Error> {
        conn.client.simple_query("").await.map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

pub(super) struct Postgres {
    pool: Pool<Manager>,
    /// Shared with the pool's manager: set while the database refuses connections.
    last_failure: ConnectFailure,
    config: Config,
    tls: MakeRustls,
    target: String,
    commits: Arc<AtomicU64>,
}

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

impl Postgres {
    pub(super) async fn connect(
        url: &str,
        opts: &StoreOptions,
        commits: Arc<AtomicU64>,
    ) -> Result<(Postgres, String)> {
        // sslmode and sslrootcert are Cuttle's to apply (tokio-postgres knows neither all the
        // modes nor the root certificate).
        let (url, tls_params) = postgres_tls::split(url)?;
        let tls = MakeRustls::new(&tls_params)?;
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::InvalidUrl(format!("{}: {e}", super::redact_url(&url))))?;
        config.ssl_mode(tls_params.mode.driver_mode());
        config.connect_timeout(opts.connect_timeout);
        config.application_name("cuttle-server");
        let target = describe(&config);
        let last_failure = ConnectFailure::default();
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
            last_failure: last_failure.clone(),
        };
        let pool = Pool::builder()
            .max_size(opts.pool_size.max(1))
            .connection_timeout(opts.connect_timeout)
            .retry_connection(false)
            .build_unchecked(manager);
        let pg = Postgres {
            pool,
            last_failure,
            config,
            tls,
            target: target.clone(),
            commits,
        };
        pg.ping().await?;
        Ok((pg, target))
    }

    pub(super) fn map_err(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            return Error::Database(format!("{}: {}", db.code().code(), db.message()));
        }
        Error::Unavailable {
            target: self.target.clone(),
            reason: with_causes(&e),
        }
    }

    pub(super) async fn conn(&self) -> Result<PooledConnection<'_, Manager>> {
        gate::checkout(&self.pool, &self.last_failure, &self.target, |e| {
            self.map_err(e)
        })
        .await
    }

    pub(super) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) async fn ping(&self) -> Result<()> {
        let c = self.conn().await?;
        c.simple_query("SELECT 1")
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    pub(super) async fn migrate(&self) -> Result<MigrationReport> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(|e| self.map_err(e))?;
        // Held until commit: a second node waits here while the first creates the schema.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.map_err(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
        )
        .await
        .map_err(|e| self.map_err(e))?;
        let row = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        let from = row.get::<_, i32>(0) as u32;
        if from > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found: from,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
            tx.batch_execute(sql)
                .await
                .map_err(|e| Error::Database(format!("migration {version:04} failed: {e}")))?;
            tx.execute(
                &format!(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, {NOW})"
                ),
                &[&(*version as i32)],
            )
            .await
            .map_err(|e| self.map_err(e))?;
            tracing::info!(version, "applied migration");
        }
        tx.commit().await.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(MigrationReport {
            from,
            to: SCHEMA_VERSION.max(from),
        })
    }

    pub(super) async fn schema_version(&self) -> Result<u32> {
        let c = self.conn().await?;
        let row = c
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await
            .map_err(|e| self.map_err(e))?;
        if !row.get::<_, bool>(0) {
            return Ok(0);
        }
        let row = c
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.get::<_, i32>(0) as u32)
    }







    /// Runs one `DELETE` (its `$1` is `key`) and, when it removed a row, writes the change's
    /// audit event in the same transaction. True when a row was removed.
    pub(super) async fn delete_with_event(
        &self,
        sql: &str,
        key: &(dyn ToSql + Sync),
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let found = in_transaction!(self, |tx| {
            let n = tx.execute(sql, &[key]).await?;
            insert_event(&tx, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(found)
    }



    pub(super) async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        let c = self.conn().await?;
        let cap = reg.initial_task_cap as i32;
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at_ms, last_seen_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, {NOW}, {NOW})
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                         version = excluded.version, http_address = excluded.http_address,
                         grpc_address = excluded.grpc_address,
                         gateway_address = excluded.gateway_address,
                         started_at_ms = excluded.started_at_ms,
                         last_seen_ms = excluded.last_seen_ms, lost_at_ms = NULL,
                         storage_ok = TRUE
                     RETURNING task_cap, draining"
                ),
                &[
                    &reg.name,
                    &reg.roles,
                    &reg.version,
                    &reg.http_address,
                    &reg.grpc_address,
                    &reg.gateway_address,
                    &cap,
                ],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(NodeState {
            task_cap: row.get::<_, i32>(0) as u32,
            draining: row.get(1),
        })
    }

    pub(super) async fn heartbeat(
        &self,
        name: &str,
        storage_ok: bool,
    ) -> Result<Option<NodeState>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE nodes SET last_seen_ms = {NOW}, lost_at_ms = NULL, storage_ok = $2
                 WHERE name = $1 RETURNING task_cap, draining"
            )
        });
        let mut c = self.conn().await?;
        let st = c
            .prepared(&SQL, &[Type::TEXT, Type::BOOL])
            .await
            .map_err(|e| self.map_err(e))?;
        let row = c
            .query(&st, &[&name, &storage_ok])
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(row.first().map(|r| NodeState {
            task_cap: r.get::<_, i32>(0) as u32,
            draining: r.get(1),
        }))
    }

    pub(super) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                         n.last_seen_ms > {NOW} - $1, n.last_seen_ms, n.started_at_ms,
                         (SELECT COUNT(*) FROM tasks t WHERE t.node = n.name
                            AND t.state IN ('Executing', 'Cancelling')),
                         n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                     FROM nodes n WHERE ($2::text IS NULL OR n.name = $2) ORDER BY n.name"
                ),
                &[&offline_after_ms, &name],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                name: r.get(0),
                roles: r
                    .get::<_, String>(1)
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                version: r.get(2),
                task_cap: r.get::<_, i32>(3) as u32,
                draining: r.get(4),
                online: r.get(5),
                last_seen: r.get(6),
                started_at: r.get(7),
                running_tasks: r.get::<_, i64>(8) as u32,
                http_address: r.get(9),
                grpc_address: r.get(10),
                gateway_address: r.get(11),
                storage_ok: r.get(12),
            })
            .collect())
    }

    pub(super) async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let cap = patch.task_cap.map(|c| c as i32);
        let found = in_transaction!(self, |tx| {
            let n = tx
                .execute(
                    "UPDATE nodes SET task_cap = COALESCE($2, task_cap),
                         draining = COALESCE($3, draining) WHERE name = $1",
                    &[&name, &cap, &patch.draining],
                )
                .await?;
            insert_event(&tx, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(found)
    }

    pub(super) async fn delete_node(&self, name: &str, audit: Option<Audit<()>>) -> Result<bool> {
        self.delete_with_event("DELETE FROM nodes WHERE name = $1", &name, audit)
            .await
    }

    pub(super) async fn handle_lost_nodes(
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

    pub(super) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
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

    /// Re-queues a node's executing retry-safe tasks and fails (or, when cancelling, cancels)
    /// the rest, inside the caller's transaction.
    async fn release_tasks(
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

    pub(super) async fn requeue_unstarted(
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







    pub(super) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        let c = self.conn().await?;
        // The row lock makes a racing caller wait, then re-check the condition and miss.
        let claimed = c
            .execute(
                "UPDATE settings SET value = $2::BIGINT::TEXT
                 WHERE key = $1 AND value::BIGINT < $2::BIGINT",
                &[&key, &n],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(claimed == 1)
    }

    pub(super) async fn enqueue(
        &self,
        task: &NewTask,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<TaskRecord> {
        let args = task.kind.arguments().to_string();
        let kind = task.kind.name();
        let retry = task.kind.retry_safe();
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH t AS (
                     INSERT INTO tasks (kind, arguments, description, concurrency_tag, state,
                         retry_safe, queued_at_ms)
                     VALUES ($1, $2, $3, $4, 'Queued', $5, {NOW}) RETURNING {TASK_COLUMNS})
                 SELECT t.*, pg_notify('{NOTIFY_CHANNEL}', '') FROM t"
            )
        });
        let types = [Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::BOOL];
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
                    ],
                )
                .await?;
            let record = task_from_row(&row);
            insert_event(&tx, audit.as_ref(), Some(&record)).await?;
            tx.commit().await?;
            Ok(record)
        }
        .await;
        let record = written.map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(record)
    }

    pub(super) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
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

    pub(super) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        let c = self.conn().await?;
        let state = state.map(|s| s.as_str());
        let rows = c
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1::text IS NULL OR state = $1) AND ($3::bigint IS NULL OR seq < $3)
                     ORDER BY seq DESC LIMIT $2"
                ),
                &[&state, &(limit as i64), &before.map(|b| b.0)],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Records outcomes and claims new tasks in one statement: one round trip and one commit
    /// per turn of a worker's loop, however many tasks finished or start.
    pub(super) async fn complete_and_claim(
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
                     LIMIT $6
                     FOR UPDATE SKIP LOCKED) c
                 WHERE t.seq = c.seq
                 RETURNING t.seq, t.claim_epoch, t.kind, t.arguments)
             SELECT TRUE, seq, 0::bigint, NULL::text, NULL::text FROM done
             UNION ALL
             SELECT FALSE, seq, claim_epoch, kind, arguments FROM claimed"
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
                });
            }
        }
        Ok((accepted, claimed))
    }

    pub(super) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
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

    pub(super) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                 FROM events ORDER BY seq DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                id: format!("Events-{}", r.get::<_, i64>(0)),
                occurred_at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                client_address: r.get(5),
                details: serde_json::from_str(&r.get::<_, String>(6))
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    pub(super) async fn cancel(
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

    pub(super) fn subscribe_enqueued(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
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
}

/// Writes the audit event of a change, built from its result, inside the change's transaction;
/// nothing when the change did not happen (`result` is `None`).
pub(super) async fn insert_event<R>(
    tx: &tokio_postgres::Transaction<'_>,
    audit: Option<&Audit<R>>,
    result: Option<&R>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (Some(audit), Some(result)) = (audit, result) else {
        return Ok(());
    };
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO events (occurred_at_ms, actor, action, target, client_address, details)
             VALUES ({NOW}, $1, $2, $3, $4, $5)"
        )
    });
    let e = audit(result);
    let details = e.details.to_string();
    tx.execute(
        SQL.as_str(),
        &[&e.actor, &e.action, &e.target, &e.client_address, &details],
    )
    .await?;
    Ok(())
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

/// "postgres host:port/db", for messages; never the password.
fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("postgres {host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_run_from_one_to_the_schema_version() {
        let versions: Vec<u32> = super::MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=super::SCHEMA_VERSION).collect::<Vec<_>>());
    }
}

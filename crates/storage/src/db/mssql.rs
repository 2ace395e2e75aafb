//! SQL Server (and Babelfish for PostgreSQL): tiberius over a bb8 pool, TLS through rustls.
//!
//! The T-SQL here is valid on SQL Server 2016+ and runs unchanged on Babelfish, so: no `MERGE`
//! (update, then insert when nothing was updated, retried on a duplicate-key race), no DML
//! through a CTE, READ COMMITTED only. Correctness never rests on a table hint: the claim's
//! `UPDLOCK, READPAST, ROWLOCK` only let SQL Server's claimers skip each other's rows, while the
//! outer `state = 'Queued'` re-check and the filtered unique index on running tags decide.
//!
//! Every connection runs with `XACT_ABORT ON`, so an error inside a transaction rolls it back
//! whole; a failed call also rolls back anything still open before the connection returns to the
//! pool. Transient errors are retried with backoff and jitter (see [`retry`]).
//!
//! Why this file is long: it is the whole `Store` in SQL Server's dialect, one method per call,
//! kept together while the schema was one area (queue, nodes, targets, keys). It is to be
//! split by area (`tasks`, `nodes`, `targets`, `keys`, …) when the deployment tables land,
//! as the other dialects are.

mod retry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bb8::{Pool, PooledConnection};
use cuttle_core::{
    EventRecord, NewTask, NodePatch, NodeRecord, TaskId, TaskRecord,
    TaskState, UnixMs,
};
use tiberius::error::Error as TdsError;
use tiberius::{AuthMethod, Client, ColumnData, EncryptionLevel, Row, SqlBrowser, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::gate::{self, ConnectFailure};
use super::mssql_config::{Encrypt, MssqlConfig};
use super::{
    lost_error, requeue_note, restart_error, restart_requeue_note,
    Audit, ClaimedTask, Completion, LostNode, MigrationReport, NodeRegistration, NodeState,
    OwnedTask, StoreOptions, CANCELED_UNSTARTED, SCHEMA_VERSION,
};
use crate::{Error, Execution, Result};
pub(super) use retry::Retry;
use retry::{classify, Transient};

const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/mssql/0001_init.sql")),
    (2, include_str!("../../migrations/mssql/0002_events.sql")),
    (
        3,
        include_str!("../../migrations/mssql/0003_storage_ok.sql"),
    ),
    (4, include_str!("../../migrations/mssql/0004_targets.sql")),
    (
        5,
        include_str!("../../migrations/mssql/0005_keys_and_trust.sql"),
    ),
];

/// Opens the migration's transaction and takes the application lock that serialises schema
/// migrations across nodes, then makes sure the version table exists.
const MIGRATION_BEGIN: &str = "BEGIN TRANSACTION;
     DECLARE @locked INT;
     EXEC @locked = sp_getapplock @Resource = N'cuttle-schema-migration', @LockMode = N'Exclusive',
         @LockOwner = N'Transaction', @LockTimeout = 120000;
     IF @locked < 0
         THROW 50000, N'timed out waiting for another node''s schema migration', 1;
     IF OBJECT_ID(N'schema_migrations', N'U') IS NULL
         CREATE TABLE schema_migrations (
             version    INT NOT NULL CONSTRAINT schema_migrations_pk PRIMARY KEY,
             applied_at DATETIME2(3) NOT NULL);";

/// Set on every new connection. `XACT_ABORT` makes any error roll back the whole transaction;
/// the ANSI options are the ones filtered indexes require of every statement that writes to
/// their table (the TDS login already asks for most of them; this makes it explicit).
const SESSION_SETUP: &str = "SET XACT_ABORT ON; SET ANSI_NULLS ON; SET ANSI_PADDING ON; \
     SET ANSI_WARNINGS ON; SET ARITHABORT ON; SET CONCAT_NULL_YIELDS_NULL ON; \
     SET QUOTED_IDENTIFIER ON; SET NUMERIC_ROUNDABORT OFF; \
     SET TRANSACTION ISOLATION LEVEL READ COMMITTED;";

/// Undoes whatever a failed call left open, before its connection is reused.
const ROLLBACK_OPEN: &str = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;";

/// Runs `$body` (an expression using `$c: &mut MsConn`, giving a tiberius result) on a pooled
/// connection, retrying transient failures as `$retry` allows. A macro rather than a method
/// taking a closure: the futures stay `Send` without boxing.
macro_rules! run {
    ($self:ident, $retry:expr, |$c:ident| $body:expr) => {{
        let mut attempt = 1;
        loop {
            let mut conn = match $self.conn().await {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            let result: std::result::Result<_, TdsError> = async {
                let $c: &mut MsConn = &mut conn;
                $body
            }
            .await;
            match result {
                Ok(v) => break Ok::<_, Error>(v),
                Err(e) => match $self.after_failure(conn, e, $retry, attempt).await {
                    Ok(()) => attempt += 1,
                    Err(e) => break Err(e),
                },
            }
        }
    }};
}

/// [`run!`], and a duplicate key (a racing writer got there first; the statement was rolled
/// back whole) runs it again, up to 4 more times: an update-then-insert upsert's second run
/// updates, and a claim that raced on a concurrency tag's unique index sees the tag running.
macro_rules! run_racing {
    ($self:ident, $retry:expr, |$c:ident| $body:expr) => {{
        let mut raced = 0;
        loop {
            match run!($self, $retry, |$c| $body) {
                Err(Error::Conflict(_)) if raced < 4 => {
                    raced += 1;
                    tracing::debug!(
                        attempt = raced,
                        "raced with another writer; running it again"
                    );
                }
                other => break other,
            }
        }
    }};
}

/// [`run!`] with `$body` inside one transaction, not retried after a lost connection (a
/// committed first attempt would be invisible). Opened in a plain batch: a transaction begun
/// inside `sp_executesql` must end there (error 266), and `$body` spans several statements.
macro_rules! run_in_transaction {
    ($self:ident, |$c:ident| $body:expr) => {
        run!($self, Retry::RolledBackOnly, |$c| {
            batch($c, "BEGIN TRANSACTION").await?;
            let out = $body;
            batch($c, "COMMIT TRANSACTION").await?;
            Ok(out)
        })
    };
}

/// Milliseconds since the Unix epoch of a DATETIME2 column or expression.
macro_rules! ms {
    ($col:expr) => {
        concat!(
            "DATEDIFF_BIG(MILLISECOND, CAST('1970-01-01' AS DATETIME2(3)), ",
            $col,
            ")"
        )
    };
}

/// Milliseconds from a DATETIME2 column to the database clock (how long ago).
macro_rules! age_ms {
    ($col:expr) => {
        concat!("DATEDIFF_BIG(MILLISECOND, ", $col, ", SYSUTCDATETIME())")
    };
}

pub(super) use {age_ms, ms, run, run_in_transaction, run_racing};

/// The columns of a task row, in the order [`task_from_row`] reads them; `$p` is the table
/// alias or `inserted`.
macro_rules! task_columns {
    ($p:literal) => {
        concat!(
            $p,
            ".seq, ",
            $p,
            ".kind, ",
            $p,
            ".arguments, ",
            $p,
            ".state, ",
            $p,
            ".description, ",
            $p,
            ".concurrency_tag, ",
            $p,
            ".node, ",
            $p,
            ".claim_epoch, ",
            ms!(concat!($p, ".queued_at")),
            ", ",
            ms!(concat!($p, ".started_at")),
            ", ",
            ms!(concat!($p, ".completed_at")),
            ", ",
            $p,
            ".error"
        )
    };
}

type Tds = Client<Compat<TcpStream>>;

/// A text parameter that may be NULL; bind nullable text only through this, never as an
/// `Option<&str>`, and read it in SQL only as `CAST(@Pn AS NVARCHAR(…))`.
///
/// tiberius sends a NULL string with wire type NULLTYPE (0x1F): SQL Server takes it, Babelfish
/// refuses the whole request ("Data type 0x1F is unknown"). A NULL `INT` goes as a typed `INTN`,
/// which both take, so a missing value is sent as that, and every statement reads the parameter
/// as `CAST(@Pn AS NVARCHAR(…))`: text either way, and comparisons with text columns stay text
/// (an `INT` parameter would make SQL Server convert the column to `INT`). Written values are
/// cast to `NVARCHAR(MAX)`, so one too long for its column is refused, never cut short;
/// compared ones to `NVARCHAR(4000)` (the longest indexed column is far shorter).
#[derive(Clone, Copy)]
pub(super) struct OptText<'a>(pub(super) Option<&'a str>);

impl ToSql for OptText<'_> {
    fn to_sql(&self) -> ColumnData<'_> {
        match self.0 {
            Some(s) => ColumnData::String(Some(s.into())),
            None => ColumnData::I32(None),
        }
    }
}

/// A pooled connection, marked broken when a call failed in a way that leaves its state unknown.
pub(super) struct MsConn {
    client: Tds,
    broken: bool,
}

pub(super) struct Manager {
    config: tiberius::Config,
    connect_timeout: Duration,
    last_failure: ConnectFailure,
}

impl Manager {
    async fn open(&self) -> std::result::Result<MsConn, TdsError> {
        let mut config = self.config.clone();
        // Azure SQL may send the client to another address (gateway redirection) once.
        for _ in 0..3 {
            let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect_named(&config))
                .await
                .map_err(|_| TdsError::Io {
                    kind: std::io::ErrorKind::TimedOut,
                    message: format!(
                        "no TCP connection within {} s",
                        self.connect_timeout.as_secs_f32()
                    ),
                })??;
            tcp.set_nodelay(true)?;
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Ok(mut client) => {
                    client
                        .simple_query(SESSION_SETUP)
                        .await?
                        .into_results()
                        .await?;
                    return Ok(MsConn {
                        client,
                        broken: false,
                    });
                }
                Err(TdsError::Routing { host, port }) => {
                    config.host(&host);
                    config.port(port);
                }
                Err(e) => return Err(e),
            }
        }
        Err(TdsError::Protocol(
            "the server redirected the connection more than twice".into(),
        ))
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = MsConn;
    type Error = TdsError;

    async fn connect(&self) -> std::result::Result<MsConn, Self::Error> {
        let opened = self.open().await;
        self.last_failure
            .record(opened.as_ref().err().map(|e| e.to_string()));
        opened
    }

    async fn is_valid(&self, conn: &mut MsConn) -> std::result::Result<(), Self::Error> {
        conn.client
            .simple_query("SELECT 1")
            .await?
            .into_results()
            .await?;
        Ok(())
    }

    fn has_broken(&self, conn: &mut MsConn) -> bool {
        conn.broken
    }
}

pub(super) struct Mssql {
    pool: Pool<Manager>,
    last_failure: ConnectFailure,
    target: String,
    database: String,
    commits: Arc<AtomicU64>,
}

/// The tiberius settings for a parsed connection string and Cuttle's own options.
fn tds_config(c: &MssqlConfig, opts: &StoreOptions) -> tiberius::Config {
    let mut t = tiberius::Config::new();
    t.host(&c.host);
    t.port(c.port);
    if let Some(i) = &c.instance {
        t.instance_name(i);
    }
    t.database(&c.database);
    t.authentication(AuthMethod::sql_server(&c.user, &c.password));
    t.application_name(&c.application_name);
    t.encryption(match c.encrypt {
        Encrypt::Off => EncryptionLevel::Off,
        Encrypt::On => EncryptionLevel::Required,
        Encrypt::Strict => EncryptionLevel::Strict,
    });
    if c.trust_server_certificate {
        t.trust_cert();
    }
    t.multi_subnet_failover(c.multi_subnet_failover);
    let connect = c.connect_timeout.unwrap_or(opts.connect_timeout);
    t.handshake_timeout(Some(connect));
    t.command_timeout(Some(opts.command_timeout));
    t
}

pub(super) fn text(r: &Row, i: usize) -> String {
    r.get::<&str, _>(i).unwrap_or_default().to_owned()
}

pub(super) fn opt_text(r: &Row, i: usize) -> Option<String> {
    r.get::<&str, _>(i).map(str::to_owned)
}

pub(super) fn int64(r: &Row, i: usize) -> i64 {
    r.get::<i64, _>(i).unwrap_or_default()
}

fn flag(r: &Row, i: usize) -> bool {
    r.get::<bool, _>(i).unwrap_or_default()
}

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

/// Runs a batch without parameters and returns every result set it produced.
pub(super) async fn batch(c: &mut MsConn, sql: &str) -> std::result::Result<Vec<Vec<Row>>, TdsError> {
    c.client.simple_query(sql).await?.into_results().await
}

/// Runs `sql` and returns every result set it produced.
pub(super) async fn query(
    c: &mut MsConn,
    sql: &str,
    params: &[&dyn ToSql],
) -> std::result::Result<Vec<Vec<Row>>, TdsError> {
    c.client.query(sql, params).await?.into_results().await
}

/// Runs `sql` and returns the rows of all its result sets, in order.
pub(super) async fn rows(
    c: &mut MsConn,
    sql: &str,
    params: &[&dyn ToSql],
) -> std::result::Result<Vec<Row>, TdsError> {
    Ok(query(c, sql, params).await?.into_iter().flatten().collect())
}

/// Runs `sql` and returns the rows it changed.
pub(super) async fn execute(
    c: &mut MsConn,
    sql: &str,
    params: &[&dyn ToSql],
) -> std::result::Result<u64, TdsError> {
    Ok(c.client.execute(sql, params).await?.total())
}

impl Mssql {
    pub(super) async fn connect(
        config: &MssqlConfig,
        opts: &StoreOptions,
        commits: Arc<AtomicU64>,
    ) -> Result<(Mssql, String)> {
        // tiberius uses rustls' process-wide provider when one is set; Cuttle's TLS is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let target = config.describe();
        let last_failure = ConnectFailure::default();
        let connect_timeout = config.connect_timeout.unwrap_or(opts.connect_timeout);
        let manager = Manager {
            config: tds_config(config, opts),
            connect_timeout,
            last_failure: last_failure.clone(),
        };
        let pool = Pool::builder()
            .max_size(opts.pool_size.max(1))
            .connection_timeout(connect_timeout)
            .retry_connection(false)
            // A dead connection fails its call and is dropped (`broken`); idempotent calls are
            // retried on a new one. No round trip spent checking each checkout.
            .test_on_check_out(false)
            .build_unchecked(manager);
        let db = Mssql {
            pool,
            last_failure,
            target: target.clone(),
            database: config.database.clone(),
            commits,
        };
        db.ping().await?;
        db.warn_without_read_committed_snapshot().await;
        Ok((db, target))
    }

    fn map_err(&self, e: TdsError) -> Error {
        match (&e, classify(&e)) {
            // A duplicate key (2627 constraint, 2601 unique index): a racing writer won.
            (TdsError::Server(t), _) if matches!(t.code(), 2601 | 2627) => {
                Error::Conflict(t.message().to_owned())
            }
            (TdsError::Server(t), Transient::No) => {
                Error::Database(format!("{}: {}", t.code(), t.message()))
            }
            (TdsError::Tls(_), _) => Error::Unavailable {
                target: self.target.clone(),
                reason: format!("{e} (check Encrypt and TrustServerCertificate)"),
            },
            _ => Error::Unavailable {
                target: self.target.clone(),
                reason: e.to_string(),
            },
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

    /// After a failed call: rolls back anything left open (or drops the connection when its
    /// state is unknown), then either waits out the backoff and returns `Ok` (run the call
    /// again) or returns the error to give up with.
    pub(super) async fn after_failure(
        &self,
        mut c: PooledConnection<'_, Manager>,
        e: TdsError,
        retry: Retry,
        attempt: u32,
    ) -> Result<()> {
        let class = classify(&e);
        if class == Transient::ConnectionLost || !matches!(e, TdsError::Server(_)) {
            c.broken = true;
        } else if let Err(e) = batch(&mut c, ROLLBACK_OPEN).await {
            tracing::debug!(error = %e, "rollback after a failed call failed; dropping the connection");
            c.broken = true;
        }
        drop(c);
        match retry.delay(class, attempt) {
            Some(delay) => {
                tracing::debug!(db = %self.target, attempt, error = %e, "transient database error; retrying");
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(self.map_err(e)),
        }
    }

    pub(super) async fn ping(&self) -> Result<()> {
        run!(self, Retry::Idempotent, |c| batch(c, "SELECT 1").await)?;
        Ok(())
    }

    /// Without READ_COMMITTED_SNAPSHOT a reader waits on every row a writer holds: the claim's
    /// look at running tags would queue behind other nodes' claims. Warn with the fix.
    async fn warn_without_read_committed_snapshot(&self) {
        let checked = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "SELECT CAST(SERVERPROPERTY('BabelfishVersion') AS NVARCHAR(100)),
                         (SELECT CAST(is_read_committed_snapshot_on AS INT) FROM sys.databases
                          WHERE name = DB_NAME())",
                &[],
            )
            .await
        });
        match checked {
            Ok(rows) => {
                let Some(r) = rows.first() else { return };
                let babelfish = opt_text(r, 0);
                let rcsi = r.get::<i32, _>(1) == Some(1);
                if babelfish.is_none() && !rcsi {
                    tracing::warn!(
                        db = %self.target,
                        "READ_COMMITTED_SNAPSHOT is off for this database: readers will wait on \
                         writers' row locks and task claims can stall under load. Turn it on \
                         (it needs a moment with no other connections): ALTER DATABASE [{}] SET \
                         READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE; see \
                         docs/sql-server.md",
                        self.database.replace(']', "]]")
                    );
                }
            }
            Err(e) => {
                tracing::warn!(db = %self.target, error = %e, "could not check READ_COMMITTED_SNAPSHOT")
            }
        }
    }

    pub(super) async fn migrate(&self) -> Result<MigrationReport> {
        let from = run!(self, Retry::Idempotent, |c| {
            // The application lock is held until commit: a second node waits here while the
            // first creates the schema, then finds it done. Plain batches, not parameterised
            // ones: a transaction opened inside sp_executesql must also end there (error 266).
            batch(c, MIGRATION_BEGIN).await?;
            let from = rows(
                c,
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .first()
            .and_then(|r| r.get::<i32, _>(0))
            .unwrap_or(0) as u32;
            if from > SCHEMA_VERSION {
                batch(c, ROLLBACK_OPEN).await?;
                return Ok(Err(Error::SchemaTooNew {
                    found: from,
                    supported: SCHEMA_VERSION,
                }));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
                if let Err(e) = batch(c, sql).await {
                    batch(c, ROLLBACK_OPEN).await?;
                    return Ok(Err(Error::Database(format!(
                        "migration {version:04} failed: {e}"
                    ))));
                }
                execute(
                    c,
                    "INSERT INTO schema_migrations (version, applied_at)
                         VALUES (@P1, SYSUTCDATETIME())",
                    &[&(*version as i32)],
                )
                .await?;
                tracing::info!(version, "applied migration");
            }
            batch(c, "COMMIT TRANSACTION").await?;
            Ok(Ok(from))
        })??;
        self.committed();
        Ok(MigrationReport {
            from,
            to: SCHEMA_VERSION.max(from),
        })
    }

    pub(super) async fn schema_version(&self) -> Result<u32> {
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "IF OBJECT_ID(N'schema_migrations', N'U') IS NULL SELECT CAST(0 AS INT)
                     ELSE SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
        })?;
        Ok(rows.first().and_then(|r| r.get::<i32, _>(0)).unwrap_or(0) as u32)
    }







    /// Runs one `DELETE` (its `@P1` is `key`) and, when it removed a row, writes the change's
    /// audit event in the same transaction. True when a row was removed.
    pub(super) async fn delete_with_event(
        &self,
        sql: &str,
        key: &dyn ToSql,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let found = run_in_transaction!(self, |c| {
            let n = execute(c, sql, &[key]).await?;
            insert_event(c, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })?;
        self.committed();
        Ok(found)
    }



    pub(super) async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        let cap = reg.initial_task_cap as i32;
        let gateway = OptText(reg.gateway_address.as_deref());
        let rows = run_racing!(self, Retry::Idempotent, |c| {
            rows(
                c,
                // `@@ROWCOUNT` of an UPDATE with an OUTPUT clause is 0 on Babelfish: the row
                // is read back by a SELECT instead, in the same transaction.
                "BEGIN TRANSACTION;
                 UPDATE nodes SET roles = @P2, version = @P3, http_address = @P4,
                     grpc_address = @P5, gateway_address = CAST(@P6 AS NVARCHAR(MAX)),
                     started_at = SYSUTCDATETIME(), last_seen = SYSUTCDATETIME(),
                     lost_at = NULL, storage_ok = 1
                 WHERE name = @P1;
                 IF @@ROWCOUNT = 0
                     INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at, last_seen)
                     VALUES (@P1, @P2, @P3, @P4, @P5, CAST(@P6 AS NVARCHAR(MAX)), @P7, 0,
                         SYSUTCDATETIME(), SYSUTCDATETIME());
                 SELECT task_cap, draining FROM nodes WHERE name = @P1;
                 COMMIT TRANSACTION;",
                &[
                    &reg.name.as_str(),
                    &reg.roles.as_str(),
                    &reg.version.as_str(),
                    &reg.http_address.as_str(),
                    &reg.grpc_address.as_str(),
                    &gateway,
                    &cap,
                ],
            )
            .await
        })?;
        self.committed();
        rows.first()
            .map(node_state)
            .ok_or_else(|| Error::Database("node upsert returned no row".into()))
    }

    pub(super) async fn heartbeat(
        &self,
        name: &str,
        storage_ok: bool,
    ) -> Result<Option<NodeState>> {
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "UPDATE nodes SET last_seen = SYSUTCDATETIME(), lost_at = NULL,
                         storage_ok = @P2
                     OUTPUT inserted.task_cap, inserted.draining
                     WHERE name = @P1",
                &[&name, &storage_ok],
            )
            .await
        })?;
        self.committed();
        Ok(rows.first().map(node_state))
    }

    pub(super) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                     CAST(CASE WHEN {} < @P1 THEN 1 ELSE 0 END AS BIT), {}, {},
                     (SELECT COUNT_BIG(*) FROM tasks t WHERE t.node = n.name
                        AND t.state IN (N'Executing', N'Cancelling')),
                     n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                 FROM nodes n
                 WHERE (@P2 IS NULL OR n.name = CAST(@P2 AS NVARCHAR(4000))) ORDER BY n.name",
                age_ms!("n.last_seen"),
                ms!("n.last_seen"),
                ms!("n.started_at"),
            )
        });
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, &SQL, &[&offline_after_ms, &OptText(name)]).await
        })?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                name: text(r, 0),
                roles: text(r, 1).split(',').map(str::to_owned).collect(),
                version: text(r, 2),
                task_cap: r.get::<i32, _>(3).unwrap_or(0) as u32,
                draining: flag(r, 4),
                online: flag(r, 5),
                last_seen: int64(r, 6),
                started_at: int64(r, 7),
                running_tasks: int64(r, 8) as u32,
                http_address: text(r, 9),
                grpc_address: text(r, 10),
                gateway_address: opt_text(r, 11),
                storage_ok: flag(r, 12),
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
        let found = run_in_transaction!(self, |c| {
            let n = execute(
                c,
                "UPDATE nodes SET task_cap = COALESCE(@P2, task_cap),
                         draining = COALESCE(@P3, draining) WHERE name = @P1",
                &[&name, &cap, &patch.draining],
            )
            .await?;
            insert_event(c, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })?;
        self.committed();
        Ok(found)
    }

    pub(super) async fn delete_node(&self, name: &str, audit: Option<Audit<()>>) -> Result<bool> {
        self.delete_with_event("DELETE FROM nodes WHERE name = @P1", &name, audit)
            .await
    }

    pub(super) async fn handle_lost_nodes(
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

    pub(super) async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        let error = restart_error(name);
        let note = restart_requeue_note(name);
        let released = run_in_transaction!(self, |c| {
            let released = release_tasks(c, name.to_owned(), &note, &error).await?;
            released
        })?;
        self.committed();
        Ok(released)
    }

    pub(super) async fn requeue_unstarted(
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







    pub(super) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        // The row lock makes a racing caller wait, then re-check the condition and miss. Not
        // retried after a lost connection: a committed first attempt would read as a miss.
        let claimed = run!(self, Retry::RolledBackOnly, |c| {
            // The CASE keeps the cast to this key's row: SQL Server does not promise to test
            // `[key]` first, and other settings hold text.
            execute(
                c,
                "UPDATE settings SET value = CAST(@P2 AS NVARCHAR(20))
                 WHERE [key] = @P1
                   AND CASE WHEN [key] = @P1 THEN CAST(value AS BIGINT) END < @P2",
                &[&key, &n],
            )
            .await
        })?;
        self.committed();
        Ok(claimed == 1)
    }

    pub(super) async fn enqueue(
        &self,
        task: &NewTask,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<TaskRecord> {
        const SQL: &str = concat!(
            "INSERT INTO tasks (kind, arguments, description, concurrency_tag, state, retry_safe,
                 queued_at)
             OUTPUT ",
            task_columns!("inserted"),
            " VALUES (@P1, @P2, @P3, CAST(@P4 AS NVARCHAR(MAX)), N'Queued', @P5, SYSUTCDATETIME())"
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
                ],
            )
            .await?;
            let record = inserted.first().map(task_from_row);
            insert_event(c, audit.as_ref(), record.as_ref()).await?;
            record
        })?;
        self.committed();
        record.ok_or_else(|| Error::Database("insert returned no row".into()))
    }

    pub(super) async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        const SQL: &str = concat!(
            "SELECT ",
            task_columns!("t"),
            " FROM tasks t WHERE t.seq = @P1"
        );
        let rows = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&id.0]).await)?;
        Ok(rows.first().map(task_from_row))
    }

    pub(super) async fn list_tasks(
        &self,
        state: Option<TaskState>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        const SQL: &str = concat!(
            "SELECT TOP (@P2) ",
            task_columns!("t"),
            " FROM tasks t
             WHERE (@P1 IS NULL OR t.state = CAST(@P1 AS NVARCHAR(4000)))
               AND (@P3 IS NULL OR t.seq < @P3)
             ORDER BY t.seq DESC"
        );
        let state = OptText(state.map(|s| s.as_str()));
        let before = before.map(|b| b.0);
        let limit = i64::from(limit);
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&state, &limit, &before]).await
        })?;
        Ok(rows.iter().map(task_from_row).collect())
    }

    /// Records outcomes and claims new tasks in one batch and one transaction: one round trip
    /// and one commit per turn of a worker's loop.
    pub(super) async fn complete_and_claim(
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

    async fn complete_and_claim_batch(
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
            })
            .collect();
        Ok((accepted, claimed))
    }

    pub(super) async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
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

    pub(super) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        const SQL: &str = concat!(
            "SELECT TOP (@P1) seq, ",
            ms!("occurred_at"),
            ", actor, [action], target, client_address, details FROM events ORDER BY seq DESC"
        );
        let limit = i64::from(limit);
        let rows = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&limit]).await)?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                id: format!("Events-{}", int64(r, 0)),
                occurred_at: int64(r, 1),
                actor: text(r, 2),
                action: text(r, 3),
                target: text(r, 4),
                client_address: text(r, 5),
                details: serde_json::from_str(&text(r, 6)).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    pub(super) async fn cancel(
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

fn node_state(r: &Row) -> NodeState {
    NodeState {
        task_cap: r.get::<i32, _>(0).unwrap_or(0) as u32,
        draining: flag(r, 1),
    }
}

/// Writes the audit event of a change, built from its result, inside the change's transaction;
/// nothing when the change did not happen (`result` is `None`).
pub(super) async fn insert_event<R>(
    c: &mut MsConn,
    audit: Option<&Audit<R>>,
    result: Option<&R>,
) -> std::result::Result<(), TdsError> {
    let (Some(audit), Some(result)) = (audit, result) else {
        return Ok(());
    };
    let e = audit(result);
    let details = e.details.to_string();
    execute(
        c,
        "INSERT INTO events (occurred_at, actor, [action], target, client_address, details)
         VALUES (SYSUTCDATETIME(), @P1, @P2, @P3, @P4, @P5)",
        &[
            &e.actor.as_str(),
            &e.action.as_str(),
            &e.target.as_str(),
            &e.client_address.as_str(),
            &details.as_str(),
        ],
    )
    .await?;
    Ok(())
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

/// Outcomes per batch: 4 parameters each, 2 more for the node and the claim size, under the
/// 2,100 a request may carry.
const MAX_COMPLETIONS_PER_BATCH: usize = 500;
const _: () = assert!(2 + 4 * MAX_COMPLETIONS_PER_BATCH <= 2100);
const _: () = assert!(3 + 2 * MAX_COMPLETIONS_PER_BATCH <= 2100);

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
        sql.push_str(
            "UPDATE tasks SET state = N'Executing', node = @P1, claim_epoch = claim_epoch + 1,
                 started_at = SYSUTCDATETIME(), error = NULL
             OUTPUT inserted.seq, inserted.claim_epoch, inserted.kind, inserted.arguments
             WHERE state = N'Queued' AND seq IN (
                 SELECT TOP (@P2) q.seq FROM tasks q WITH (UPDLOCK, READPAST, ROWLOCK)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_from_one_to_the_schema_version() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    }

    #[test]
    fn migrations_avoid_what_babelfish_lacks() {
        for (v, sql) in MIGRATIONS {
            let upper = sql.to_ascii_uppercase();
            for banned in [
                "MERGE ",
                "GO\n",
                "SERIAL",
                "TEXT NOT",
                "BOOLEAN",
                "TIMESTAMP",
            ] {
                assert!(!upper.contains(banned), "migration {v} uses {banned:?}");
            }
        }
    }

    /// The parameters each outcome binds are the ones the statement names, and stay within the
    /// 2,100 a request may carry.
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

    #[test]
    fn connection_settings_follow_the_string() {
        let parsed = MssqlConfig::parse(
            "Server=tcp:db.example,14330;Database=cuttle;User Id=cuttle;Password=hunter2;\
             Encrypt=strict;Connect Timeout=7",
        )
        .unwrap();
        let t = tds_config(&parsed, &StoreOptions::default());
        assert_eq!(t.get_addr(), "db.example:14330");
        assert_eq!(t.get_handshake_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(
            t.get_command_timeout(),
            Some(StoreOptions::default().command_timeout)
        );
        assert!(!format!("{parsed:?}").contains("hunter2"));
    }
}

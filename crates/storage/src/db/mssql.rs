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
//! This file is the dialect's core: connecting, migrations, and the helpers every area's
//! `mssql.rs` uses. The statements live with their area (`keys/`, `nodes/`, `settings/`,
//! `targets/`, `tasks/`, `events/`).

mod retry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::{Pool, PooledConnection};
use tiberius::error::Error as TdsError;
use tiberius::{AuthMethod, Client, ColumnData, EncryptionLevel, Row, SqlBrowser, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::gate::{self, ConnectFailure};
use super::mssql_config::{Encrypt, MssqlConfig};
use super::{Audit, MigrationReport, StoreOptions, SCHEMA_VERSION};
use crate::{Error, Result};
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
    (6, include_str!("../../migrations/mssql/0006_documents.sql")),
    (7, include_str!("../../migrations/mssql/0007_releases.sql")),
    (
        8,
        include_str!("../../migrations/mssql/0008_deployments.sql"),
    ),
    (9, include_str!("../../migrations/mssql/0009_packages.sql")),
    (
        10,
        include_str!("../../migrations/mssql/0010_key_grants.sql"),
    ),
    (11, include_str!("../../migrations/mssql/0011_sessions.sql")),
    (
        12,
        include_str!("../../migrations/mssql/0012_node_instance.sql"),
    ),
    (
        13,
        include_str!("../../migrations/mssql/0013_task_trace.sql"),
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
            // Broken until the call ends one way or the other: a call cut short (the store's
            // deadline drops this future) leaves the connection in an unknown state — a
            // transaction open, an answer half read — and it must not go back to the pool.
            conn.broken = true;
            let result: std::result::Result<_, tiberius::error::Error> = async {
                let $c: &mut $crate::db::mssql::MsConn = &mut conn;
                $body
            }
            .await;
            match result {
                Ok(v) => {
                    conn.broken = false;
                    break Ok::<_, $crate::Error>(v);
                }
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
                Err($crate::Error::Conflict(_)) if raced < 4 => {
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
        run!($self, $crate::db::mssql::Retry::RolledBackOnly, |$c| {
            $crate::db::mssql::batch($c, "BEGIN TRANSACTION").await?;
            let out = $body;
            $crate::db::mssql::batch($c, "COMMIT TRANSACTION").await?;
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

pub(super) use {age_ms, ms, run, run_in_transaction, run_racing, task_columns};

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
    pub(super) broken: bool,
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
    pool_max: u32,
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

pub(super) fn flag(r: &Row, i: usize) -> bool {
    r.get::<bool, _>(i).unwrap_or_default()
}

/// Runs a batch without parameters and returns every result set it produced.
pub(super) async fn batch(
    c: &mut MsConn,
    sql: &str,
) -> std::result::Result<Vec<Vec<Row>>, TdsError> {
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
            pool_max: opts.pool_size.max(1),
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

    pub(super) fn pool_state(&self) -> crate::PoolState {
        super::gate::pool_state(&self.pool, self.pool_max)
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
        } else {
            // The server refused the statement and nothing is left open: usable again.
            c.broken = false;
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

    pub(super) async fn now_ms(&self) -> Result<i64> {
        const SQL: &str = concat!("SELECT ", ms!("SYSUTCDATETIME()"));
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[]).await)?;
        found
            .first()
            .map(|r| int64(r, 0))
            .ok_or_else(|| Error::Database("SYSUTCDATETIME() answered no row".into()))
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

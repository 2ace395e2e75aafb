//! PostgreSQL: tokio-postgres over a bb8 pool. Claims use `FOR UPDATE SKIP LOCKED`, so many
//! workers claim in parallel without waiting on each other; enqueue NOTIFYs listeners. Hot-path
//! statements are prepared once per pooled connection, so each call is one round trip with no
//! parsing or planning.
//!
//! This file is the dialect's core: connecting, migrations, and the helpers every area's
//! `postgres.rs` uses. The statements live with their area (`keys/`, `nodes/`, `settings/`,
//! `targets/`, `tasks/`, `events/`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::LazyLock;

use bb8::{Pool, PooledConnection};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Statement};

use super::gate::{self, ConnectFailure};
use super::postgres_tls::{self, MakeRustls};
use super::{Audit, MigrationReport, StoreOptions, SCHEMA_VERSION};
use crate::{Error, Result};

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
    (
        6,
        include_str!("../../migrations/postgres/0006_documents.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_releases.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_deployments.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_packages.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_key_grants.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_sessions.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_node_instance.sql"),
    ),
    (
        13,
        include_str!("../../migrations/postgres/0013_task_trace.sql"),
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

/// Opens pooled connections, each with its own cache of prepared statements.
pub(super) struct Manager {
    config: Config,
    tls: MakeRustls,
    last_failure: ConnectFailure,
    /// Set on every new connection: the server ends a statement running longer.
    statement_timeout: Duration,
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
    pub(super) async fn prepared(
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

/// How a checked write ends: committed, or rolled back (what was read said not to write), with
/// what the caller gets either way.
pub(super) enum TxEnd<T> {
    Commit(T),
    Rollback(T),
}

/// Runs `$body` (an async block evaluating to `Result<TxEnd<T>, Failed>`, free to `return`
/// early) in a transaction on one connection, commits or rolls back as it says, maps the failure
/// ([`Postgres::failed`]) and counts the commit. The area modules' multi-statement writes.
macro_rules! checked_write {
    ($self:ident, |$tx:ident| $body:block) => {{
        let mut conn = $self.conn().await?;
        let done: std::result::Result<_, $crate::db::postgres::Failed> = async {
            let $tx = conn.transaction().await?;
            let end: std::result::Result<
                $crate::db::postgres::TxEnd<_>,
                $crate::db::postgres::Failed,
            > = async { $body }.await;
            match end? {
                $crate::db::postgres::TxEnd::Commit(v) => {
                    $tx.commit().await?;
                    Ok((v, true))
                }
                $crate::db::postgres::TxEnd::Rollback(v) => Ok((v, false)),
            }
        }
        .await;
        let (out, committed) = done.map_err(|f| $self.failed(f))?;
        if committed {
            $self.committed();
        }
        out
    }};
}
pub(super) use checked_write;

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
        // Session settings rather than startup options: poolers (PgBouncer, RDS Proxy) refuse
        // startup options they do not know. The second ends a transaction a node cut off in
        // the middle of it left open, with its locks, on the server.
        client
            .batch_execute(&format!(
                "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}",
                ms = self.statement_timeout.as_millis()
            ))
            .await?;
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
    pub(super) config: Config,
    pub(super) tls: MakeRustls,
    pub(super) target: String,
    commits: Arc<AtomicU64>,
    pool_max: u32,
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
        // Every call is bounded, whatever fails: the server ends a statement running past the
        // command timeout (set on each new connection, `Manager::connect`); the kernel gives up
        // a connection whose sent data goes unacknowledged that long, and probes an idle one (a
        // dead peer found in about 11 s); and each call has a deadline of its own (`dispatch!`).
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(opts.command_timeout);
        let target = describe(&config);
        if !tls_params.verifies() && !is_local(&config) {
            tracing::warn!(database = %target, sslmode = tls_params.mode_name(),
                "the database's certificate is not checked: anyone on the path can pose as it and \
                 read what this node sends, its password included; add sslmode=verify-full (and \
                 sslrootcert) to CUTTLE_DATABASE_URL");
        }
        let last_failure = ConnectFailure::default();
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
            last_failure: last_failure.clone(),
            statement_timeout: opts.command_timeout,
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
            pool_max: opts.pool_size.max(1),
        };
        pg.ping().await?;
        Ok((pg, target))
    }

    pub(super) fn map_err(&self, e: tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        // PostgreSQL stores no NUL character in text or JSON (the other databases do): what
        // was asked is refused, as the API's edge refuses it, never a fault of the node's.
        if [
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNTRANSLATABLE_CHARACTER,
        ]
        .iter()
        .any(|c| e.code() == Some(c))
        {
            return Error::Invalid(
                "a text value holds a NUL character (\\u0000), which is never stored".into(),
            );
        }
        if let Some(db) = e.as_db_error() {
            return Error::Database(format!("{}: {}", db.code().code(), db.message()));
        }
        Error::Unavailable {
            target: self.target.clone(),
            reason: with_causes(&e),
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

    pub(super) async fn now_ms(&self) -> Result<i64> {
        let c = self.conn().await?;
        let row = c
            .query_one(&format!("SELECT {NOW}"), &[])
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.get(0))
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
        // A migration may rightly outlast the statement timeout every other call has (and waits
        // for another node's migration to finish first).
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(|e| self.map_err(e))?;
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

/// Whether every host the configuration names is this machine (a Unix socket, loopback).
fn is_local(config: &Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
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

/// Why a write in an explicit transaction did not happen: the database failed, or what was
/// read broke a rule (the area modules' multi-statement writes).
pub(super) enum Failed {
    Db(tokio_postgres::Error),
    Row(Error),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Failed::Db(e)
    }
}

impl Postgres {
    /// The error of a failed write: a unique violation is a conflict (a racing writer won).
    pub(super) fn failed(&self, f: Failed) -> Error {
        match f {
            Failed::Db(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                Error::Conflict(e.to_string())
            }
            Failed::Db(e) => self.map_err(e),
            Failed::Row(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_host_is_local_and_only_checking_modes_verify() {
        let local = |url: &str| super::is_local(&url.parse::<tokio_postgres::Config>().unwrap());
        assert!(local("postgres://u@localhost/db"));
        assert!(local("postgres://u@127.0.0.1/db"));
        assert!(local("host=/run/postgresql dbname=db"));
        assert!(!local("postgres://u@db.internal/db"));
        assert!(!local("host=localhost,db.internal dbname=db"));
        let verifies = |url: &str| super::postgres_tls::split(url).unwrap().1.verifies();
        assert!(!verifies("postgres://u@db/x"));
        assert!(!verifies("postgres://u@db/x?sslmode=require"));
        assert!(verifies(
            "postgres://u@db/x?sslmode=require&sslrootcert=%2Fca.pem"
        ));
        assert!(verifies("postgres://u@db/x?sslmode=verify-full"));
    }

    #[test]
    fn migrations_run_from_one_to_the_schema_version() {
        let versions: Vec<u32> = super::MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=super::SCHEMA_VERSION).collect::<Vec<_>>());
    }
}

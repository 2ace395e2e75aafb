//! SQLite: the embedded default. One file in WAL mode; several processes on one host may share
//! it. Every write runs in a `BEGIN IMMEDIATE` transaction, so claims are atomic across
//! processes. Calls run on the blocking pool, one at a time per process.
//!
//! This file is the dialect's core: connecting, migrations, and the helpers every area's
//! `sqlite.rs` uses. The statements live with their area (`keys/`, `nodes/`, `settings/`,
//! `targets/`, `tasks/`, `events/`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{Audit, MigrationReport, SCHEMA_VERSION};
use crate::{Error, Result};

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
    (
        6,
        include_str!("../../migrations/sqlite/0006_documents.sql"),
    ),
    (7, include_str!("../../migrations/sqlite/0007_releases.sql")),
    (
        8,
        include_str!("../../migrations/sqlite/0008_deployments.sql"),
    ),
    (9, include_str!("../../migrations/sqlite/0009_packages.sql")),
    (
        10,
        include_str!("../../migrations/sqlite/0010_key_grants.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_sessions.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_node_instance.sql"),
    ),
    (
        13,
        include_str!("../../migrations/sqlite/0013_task_trace.sql"),
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

    /// A consistent copy of the database into the new file `dest`.
    pub(super) async fn vacuum_into(&self, dest: &std::path::Path) -> Result<()> {
        let dest = dest.to_string_lossy().into_owned();
        self.with(move |c| {
            c.execute("VACUUM INTO ?1", [dest]).map_err(db_err)?;
            Ok(())
        })
        .await
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

    pub(super) async fn now_ms(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row(&format!("SELECT {NOW}"), [], |r| r.get(0))
                .map_err(db_err)
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

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_run_from_one_to_the_schema_version() {
        let versions: Vec<u32> = super::MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=super::SCHEMA_VERSION).collect::<Vec<_>>());
    }
}

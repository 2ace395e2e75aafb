//! The releases area in SQL Server.

use tiberius::Row;

use super::super::mssql::{
    execute, insert_event, int64, ms, rows, run, run_in_transaction, text, Mssql, Retry,
};
use super::{NewRelease, Release, ReleaseRow};
use crate::db::Audit;
use crate::{Error, Result};

/// The release columns in the order [`read`] takes them, the time in milliseconds.
macro_rules! release_columns {
    () => {
        concat!(
            "seq, space, project, version, notes, snapshot, created_by, ",
            ms!("created_at")
        )
    };
}

fn read(r: &Row) -> ReleaseRow {
    ReleaseRow {
        id: int64(r, 0),
        space: text(r, 1),
        project: int64(r, 2),
        version: text(r, 3),
        notes: text(r, 4),
        snapshot: text(r, 5),
        created_by: text(r, 6),
        created_at: int64(r, 7),
    }
}

impl Mssql {
    pub(in crate::db) async fn create_release(
        &self,
        r: &NewRelease<'_>,
        key: &str,
        snapshot: &str,
        audit: Option<Audit<Release>>,
    ) -> Result<ReleaseRow> {
        const BY_ID: &str = concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE seq = @P1"
        );
        let row = run_in_transaction!(self, |c| {
            let made = rows(
                c,
                "INSERT INTO releases (space, project, version, version_key, notes, snapshot,
                     created_by, created_at)
                 OUTPUT inserted.seq
                 VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, SYSUTCDATETIME())",
                &[
                    &r.space,
                    &r.project,
                    &r.version,
                    &key,
                    &r.notes,
                    &snapshot,
                    &r.created_by,
                ],
            )
            .await?;
            let id = made.first().map(|x| int64(x, 0)).unwrap_or_default();
            let row = rows(c, BY_ID, &[&id]).await?.first().map(read);
            if let Some(row) = &row {
                let release = Release {
                    id: row.id,
                    space: row.space.clone(),
                    project: row.project,
                    version: row.version.clone(),
                    notes: row.notes.clone(),
                    snapshot: r.snapshot.clone(),
                    created_by: row.created_by.clone(),
                    created_at: row.created_at,
                };
                insert_event(c, audit.as_ref(), Some(&release)).await?;
            }
            row
        })?;
        self.committed();
        row.ok_or_else(|| Error::Database("insert returned no row".into()))
    }

    pub(in crate::db) async fn get_release(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<ReleaseRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE seq = @P1 AND space = @P2"
        );
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&id, &space])
            .await)?;
        Ok(found.first().map(read))
    }

    pub(in crate::db) async fn list_releases(&self, project: i64) -> Result<Vec<ReleaseRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE project = @P1 ORDER BY seq"
        );
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&project]).await)?;
        Ok(found.iter().map(read).collect())
    }

    pub(in crate::db) async fn delete_release(
        &self,
        space: &str,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let found = run_in_transaction!(self, |c| {
            let n = execute(
                c,
                "DELETE FROM releases WHERE seq = @P1 AND space = @P2",
                &[&id, &space],
            )
            .await?;
            insert_event(c, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })?;
        self.committed();
        Ok(found)
    }

    /// The comparison follows the column's collation: a snapshot differing from `old` only in
    /// case would match, and snapshots differ in their sealed values (random), never in case.
    pub(in crate::db) async fn replace_release_snapshot(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let n = run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE releases SET snapshot = @P1 WHERE seq = @P2 AND snapshot = @P3",
                &[&new, &id, &old],
            )
            .await
        })?;
        self.committed();
        Ok(n == 1)
    }

    pub(in crate::db) async fn release_snapshots_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let found = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "SELECT TOP (@P2) seq, snapshot FROM releases WHERE seq > @P1 ORDER BY seq",
                &[&after, &limit],
            )
            .await
        })?;
        Ok(found.iter().map(|r| (int64(r, 0), text(r, 1))).collect())
    }
}

//! The releases area in SQLite.

use rusqlite::{params, OptionalExtension, Row};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{NewRelease, Release, ReleaseRow, RELEASE_COLUMNS};
use crate::db::Audit;
use crate::{Error, Result};

fn read(r: &Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.get(0)?,
        space: r.get(1)?,
        project: r.get(2)?,
        version: r.get(3)?,
        notes: r.get(4)?,
        snapshot: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
    })
}

impl Sqlite {
    pub(in crate::db) async fn create_release(
        &self,
        r: &NewRelease<'_>,
        key: &str,
        snapshot: &str,
        audit: Option<Audit<Release>>,
    ) -> Result<ReleaseRow> {
        let (space, project, version, notes, by) = (
            r.space.to_owned(),
            r.project,
            r.version.to_owned(),
            r.notes.to_owned(),
            r.created_by.to_owned(),
        );
        let (key, snapshot) = (key.to_owned(), snapshot.to_owned());
        self.write(move |tx| {
            let row = tx
                .query_row(
                    &format!(
                        "INSERT INTO releases (space, project, version, version_key, notes,
                             snapshot, created_by, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {NOW})
                         RETURNING {RELEASE_COLUMNS}"
                    ),
                    params![space, project, version, key, notes, snapshot, by],
                    read,
                )
                .map_err(|e| match &e {
                    rusqlite::Error::SqliteFailure(f, _)
                        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                    {
                        Error::Conflict(e.to_string())
                    }
                    _ => db_err(e),
                })?;
            if audit.is_some() {
                insert_event(tx, audit.as_ref(), Some(&row.clone().parse()?))?;
            }
            Ok(row)
        })
        .await
    }

    pub(in crate::db) async fn get_release(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<ReleaseRow>> {
        let space = space.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE seq = ?1 AND space = ?2"),
                params![id, space],
                read,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn list_releases(&self, project: i64) -> Result<Vec<ReleaseRow>> {
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE project = ?1 ORDER BY seq"
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map([project], read)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::db) async fn delete_release(
        &self,
        space: &str,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let space = space.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM releases WHERE seq = ?1 AND space = ?2",
                    params![id, space],
                )
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }

    pub(in crate::db) async fn replace_release_snapshot(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let (old, new) = (old.to_owned(), new.to_owned());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE releases SET snapshot = ?1 WHERE seq = ?2 AND snapshot = ?3",
                    params![new, id, old],
                )
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    pub(in crate::db) async fn release_snapshots_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        self.with(move |c| {
            let mut st = c
                .prepare("SELECT seq, snapshot FROM releases WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(db_err)?;
            let rows = st
                .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }
}

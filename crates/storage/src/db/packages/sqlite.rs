//! The packages area in SQLite.

use rusqlite::{params, OptionalExtension, Row};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{NewPackage, PackageRecord, PackageRow, PACKAGE_COLUMNS};
use crate::db::Audit;
use crate::{Error, Result};

fn read(r: &Row<'_>) -> rusqlite::Result<PackageRow> {
    Ok(PackageRow {
        id: r.get(0)?,
        space: r.get(1)?,
        package_id: r.get(2)?,
        version: r.get(3)?,
        format: r.get(4)?,
        size: r.get(5)?,
        sha256: r.get(6)?,
        file: r.get(7)?,
        uploaded_by: r.get(8)?,
        uploaded_at: r.get(9)?,
    })
}

impl Sqlite {
    pub(in crate::db) async fn add_package(
        &self,
        p: &NewPackage<'_>,
        key: &str,
        size: i64,
        replace: bool,
        audit: Option<Audit<PackageRecord>>,
    ) -> Result<(PackageRow, Option<PackageRow>)> {
        let values = (
            p.space.to_owned(),
            p.package_id.to_owned(),
            key.to_owned(),
            p.version.to_owned(),
            p.version_key.to_owned(),
            p.format.extension(),
            p.sha256.to_owned(),
            p.file.to_owned(),
            p.uploaded_by.to_owned(),
        );
        self.write(move |tx| {
            let (space, id, key, version, version_key, format, sha, file, by) = values;
            let replaced = if replace {
                let old = tx
                    .query_row(
                        &format!(
                            "SELECT {PACKAGE_COLUMNS} FROM packages
                             WHERE space = ?1 AND package_key = ?2 AND version_key = ?3"
                        ),
                        params![space, key, version_key],
                        read,
                    )
                    .optional()
                    .map_err(db_err)?;
                if let Some(old) = &old {
                    tx.execute("DELETE FROM packages WHERE seq = ?1", [old.id])
                        .map_err(db_err)?;
                }
                old
            } else {
                None
            };
            let row = tx
                .query_row(
                    &format!(
                        "INSERT INTO packages (space, package_id, package_key, version,
                             version_key, format, size_bytes, sha256, file, uploaded_by,
                             uploaded_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {NOW})
                         RETURNING {PACKAGE_COLUMNS}"
                    ),
                    params![
                        space,
                        id,
                        key,
                        version,
                        version_key,
                        format,
                        size,
                        sha,
                        file,
                        by
                    ],
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
            Ok((row, replaced))
        })
        .await
    }

    pub(in crate::db) async fn get_package(
        &self,
        space: &str,
        key: &str,
        version_key: &str,
    ) -> Result<Option<PackageRow>> {
        let (space, key, version_key) = (space.to_owned(), key.to_owned(), version_key.to_owned());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages
                     WHERE space = ?1 AND package_key = ?2 AND version_key = ?3"
                ),
                params![space, key, version_key],
                read,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn list_packages(
        &self,
        space: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<PackageRow>> {
        let (space, key) = (space.map(str::to_owned), key.map(str::to_owned));
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages
                     WHERE (?1 IS NULL OR space = ?1) AND (?2 IS NULL OR package_key = ?2)"
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map(params![space, key], read)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::db) async fn delete_package(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.write(move |tx| {
            let n = tx
                .execute("DELETE FROM packages WHERE seq = ?1", [id])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }
}

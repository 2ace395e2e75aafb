//! The packages area in SQL Server.

use tiberius::Row;

use super::super::mssql::{
    execute, insert_event, int64, ms, rows, run, run_in_transaction, text, Mssql, OptText, Retry,
};
use super::{NewPackage, PackageRecord, PackageRow};
use crate::db::Audit;
use crate::{Error, Result};

/// The package columns in the order [`read`] takes them, the time in milliseconds.
macro_rules! package_columns {
    () => {
        concat!(
            "seq, space, package_id, version, format, size_bytes, sha256, [file], uploaded_by, ",
            ms!("uploaded_at")
        )
    };
}

fn read(r: &Row) -> PackageRow {
    PackageRow {
        id: int64(r, 0),
        space: text(r, 1),
        package_id: text(r, 2),
        version: text(r, 3),
        format: text(r, 4),
        size: int64(r, 5),
        sha256: text(r, 6),
        file: text(r, 7),
        uploaded_by: text(r, 8),
        uploaded_at: int64(r, 9),
    }
}

impl Mssql {
    pub(in crate::db) async fn add_package(
        &self,
        p: &NewPackage<'_>,
        key: &str,
        size: i64,
        replace: bool,
        audit: Option<Audit<PackageRecord>>,
    ) -> Result<(PackageRow, Option<PackageRow>)> {
        const BY_KEY: &str = concat!(
            "SELECT ",
            package_columns!(),
            " FROM packages WITH (UPDLOCK) WHERE space = @P1 AND package_key = @P2 AND version_key = @P3"
        );
        const BY_ID: &str = concat!(
            "SELECT ",
            package_columns!(),
            " FROM packages WHERE seq = @P1"
        );
        let format = p.format.extension();
        let done = run_in_transaction!(self, |c| {
            let replaced = if replace {
                let old = rows(c, BY_KEY, &[&p.space, &key, &p.version_key])
                    .await?
                    .first()
                    .map(read);
                if let Some(old) = &old {
                    execute(c, "DELETE FROM packages WHERE seq = @P1", &[&old.id]).await?;
                }
                old
            } else {
                None
            };
            let made = rows(
                c,
                "INSERT INTO packages (space, package_id, package_key, version, version_key,
                     format, size_bytes, sha256, [file], uploaded_by, uploaded_at)
                 OUTPUT inserted.seq
                 VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, SYSUTCDATETIME())",
                &[
                    &p.space,
                    &p.package_id,
                    &key,
                    &p.version,
                    &p.version_key,
                    &format,
                    &size,
                    &p.sha256,
                    &p.file,
                    &p.uploaded_by,
                ],
            )
            .await?;
            let id = made.first().map(|x| int64(x, 0)).unwrap_or_default();
            let row = rows(c, BY_ID, &[&id]).await?.first().map(read);
            if let Some(row) = &row {
                let added = PackageRecord {
                    id: row.id,
                    space: row.space.clone(),
                    package_id: row.package_id.clone(),
                    version: row.version.clone(),
                    format: p.format,
                    size: p.size,
                    sha256: row.sha256.clone(),
                    file: row.file.clone(),
                    uploaded_by: row.uploaded_by.clone(),
                    uploaded_at: row.uploaded_at,
                };
                insert_event(c, audit.as_ref(), Some(&added)).await?;
            }
            row.map(|r| (r, replaced))
        })?;
        self.committed();
        done.ok_or_else(|| Error::Database("insert returned no row".into()))
    }

    pub(in crate::db) async fn get_package(
        &self,
        space: &str,
        key: &str,
        version_key: &str,
    ) -> Result<Option<PackageRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            package_columns!(),
            " FROM packages WHERE space = @P1 AND package_key = @P2 AND version_key = @P3"
        );
        let found = run!(self, Retry::Idempotent, |c| rows(
            c,
            SQL,
            &[&space, &key, &version_key]
        )
        .await)?;
        Ok(found.first().map(read))
    }

    pub(in crate::db) async fn list_packages(
        &self,
        space: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<PackageRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            package_columns!(),
            " FROM packages WHERE (@P1 IS NULL OR space = CAST(@P1 AS NVARCHAR(50)))
               AND (@P2 IS NULL OR package_key = CAST(@P2 AS NVARCHAR(100)))"
        );
        let found = run!(self, Retry::Idempotent, |c| rows(
            c,
            SQL,
            &[&OptText(space), &OptText(key)]
        )
        .await)?;
        Ok(found.iter().map(read).collect())
    }

    pub(in crate::db) async fn delete_package(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let found = run_in_transaction!(self, |c| {
            let n = execute(c, "DELETE FROM packages WHERE seq = @P1", &[&id]).await?;
            insert_event(c, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })?;
        self.committed();
        Ok(found)
    }
}

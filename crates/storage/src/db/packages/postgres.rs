//! The packages area in PostgreSQL.

use tokio_postgres::Row;

use super::super::postgres::{checked_write, insert_event, Failed, Postgres, TxEnd, NOW};
use super::{NewPackage, PackageRecord, PackageRow, PACKAGE_COLUMNS};
use crate::db::Audit;
use crate::Result;

fn read(r: &Row) -> PackageRow {
    PackageRow {
        id: r.get(0),
        space: r.get(1),
        package_id: r.get(2),
        version: r.get(3),
        format: r.get(4),
        size: r.get(5),
        sha256: r.get(6),
        file: r.get(7),
        uploaded_by: r.get(8),
        uploaded_at: r.get(9),
    }
}

impl Postgres {
    pub(in crate::db) async fn add_package(
        &self,
        p: &NewPackage<'_>,
        key: &str,
        size: i64,
        replace: bool,
        audit: Option<Audit<PackageRecord>>,
    ) -> Result<(PackageRow, Option<PackageRow>)> {
        let format = p.format.extension();
        let done = checked_write!(self, |tx| {
            let replaced = if replace {
                tx.query_opt(
                    &format!(
                        "DELETE FROM packages
                         WHERE space = $1 AND package_key = $2 AND version_key = $3
                         RETURNING {PACKAGE_COLUMNS}"
                    ),
                    &[&p.space, &key, &p.version_key],
                )
                .await?
                .as_ref()
                .map(read)
            } else {
                None
            };
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO packages (space, package_id, package_key, version,
                             version_key, format, size_bytes, sha256, file, uploaded_by,
                             uploaded_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {NOW})
                         RETURNING {PACKAGE_COLUMNS}"
                    ),
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
            let row = read(&row);
            if audit.is_some() {
                let added = row.clone().parse().map_err(Failed::Row)?;
                insert_event(&tx, audit.as_ref(), Some(&added)).await?;
            }
            Ok(TxEnd::Commit((row, replaced)))
        });
        Ok(done)
    }

    pub(in crate::db) async fn get_package(
        &self,
        space: &str,
        key: &str,
        version_key: &str,
    ) -> Result<Option<PackageRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages
                     WHERE space = $1 AND package_key = $2 AND version_key = $3"
                ),
                &[&space, &key, &version_key],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(read))
    }

    pub(in crate::db) async fn list_packages(
        &self,
        space: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<PackageRow>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages
                     WHERE ($1::text IS NULL OR space = $1) AND ($2::text IS NULL OR package_key = $2)"
                ),
                &[&space, &key],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(read).collect())
    }

    pub(in crate::db) async fn delete_package(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let done = checked_write!(self, |tx| {
            let n = tx
                .execute("DELETE FROM packages WHERE seq = $1", &[&id])
                .await?;
            insert_event(&tx, audit.as_ref(), (n > 0).then_some(&())).await?;
            Ok(TxEnd::Commit(n > 0))
        });
        Ok(done)
    }
}

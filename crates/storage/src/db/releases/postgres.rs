//! The releases area in PostgreSQL.

use tokio_postgres::Row;

use super::super::postgres::{checked_write, insert_event, Failed, Postgres, TxEnd, NOW};
use super::{NewRelease, Release, ReleaseRow, RELEASE_COLUMNS};
use crate::db::Audit;
use crate::Result;

fn read(r: &Row) -> ReleaseRow {
    ReleaseRow {
        id: r.get(0),
        space: r.get(1),
        project: r.get(2),
        version: r.get(3),
        notes: r.get(4),
        snapshot: r.get(5),
        created_by: r.get(6),
        created_at: r.get(7),
    }
}

impl Postgres {
    pub(in crate::db) async fn create_release(
        &self,
        r: &NewRelease<'_>,
        key: &str,
        snapshot: &str,
        audit: Option<Audit<Release>>,
    ) -> Result<ReleaseRow> {
        let done = checked_write!(self, |tx| {
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO releases (space, project, version, version_key, notes,
                             snapshot, created_by, created_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, {NOW})
                         RETURNING {RELEASE_COLUMNS}"
                    ),
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
            let row = read(&row);
            if audit.is_some() {
                let release = row.clone().parse().map_err(Failed::Row)?;
                insert_event(&tx, audit.as_ref(), Some(&release)).await?;
            }
            Ok(TxEnd::Commit(row))
        });
        Ok(done)
    }

    pub(in crate::db) async fn get_release(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<ReleaseRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE seq = $1 AND space = $2"),
                &[&id, &space],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(read))
    }

    pub(in crate::db) async fn list_releases(&self, project: i64) -> Result<Vec<ReleaseRow>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE project = $1 ORDER BY seq"),
                &[&project],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(read).collect())
    }

    pub(in crate::db) async fn delete_release(
        &self,
        space: &str,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let done = checked_write!(self, |tx| {
            let n = tx
                .execute(
                    "DELETE FROM releases WHERE seq = $1 AND space = $2",
                    &[&id, &space],
                )
                .await?;
            insert_event(&tx, audit.as_ref(), (n > 0).then_some(&())).await?;
            Ok(TxEnd::Commit(n > 0))
        });
        Ok(done)
    }

    pub(in crate::db) async fn replace_release_snapshot(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE releases SET snapshot = $1 WHERE seq = $2 AND snapshot = $3",
                &[&new, &id, &old],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(n == 1)
    }

    pub(in crate::db) async fn release_snapshots_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, snapshot FROM releases WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

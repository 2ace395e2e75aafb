//! The deployments area in SQLite.

use rusqlite::{params, OptionalExtension, Row};

use super::super::sqlite::{db_err, Sqlite};
use super::{DeploymentFilter, DeploymentRow};
use crate::Result;

const SELECT: &str = "SELECT d.seq, d.space, d.project, d.release, d.environment, d.task,
     t.state, d.created_by, d.created_at_ms, t.completed_at_ms
     FROM deployments d JOIN tasks t ON t.seq = d.task";

fn read(r: &Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        space: r.get(1)?,
        project: r.get(2)?,
        release: r.get(3)?,
        environment: r.get(4)?,
        task: r.get(5)?,
        state: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        completed_at: r.get(9)?,
    })
}

impl Sqlite {
    pub(in crate::db) async fn list_deployments(
        &self,
        filter: DeploymentFilter<'_>,
    ) -> Result<Vec<DeploymentRow>> {
        let (sql, release, space, project, before, limit) = match filter {
            DeploymentFilter::Release(r) => (
                format!("{SELECT} WHERE d.release = ?1 ORDER BY d.seq DESC"),
                Some(r),
                None,
                None,
                None,
                None,
            ),
            DeploymentFilter::Space {
                space,
                project,
                before,
                limit,
            } => (
                format!(
                    "{SELECT} WHERE d.space = ?1 AND (?2 IS NULL OR d.project = ?2)
                     AND (?3 IS NULL OR d.seq < ?3)
                     ORDER BY d.seq DESC LIMIT ?4"
                ),
                None,
                Some(space.to_owned()),
                project,
                before,
                Some(i64::from(limit)),
            ),
        };
        self.with(move |c| {
            let mut st = c.prepare(&sql).map_err(db_err)?;
            let rows = match release {
                Some(r) => st.query_map([r], read),
                None => st.query_map(params![space, project, before, limit], read),
            }
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::db) async fn get_deployment(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<DeploymentRow>> {
        let space = space.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!("{SELECT} WHERE d.seq = ?1 AND d.space = ?2"),
                params![id, space],
                read,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }
}

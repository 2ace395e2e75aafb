//! The deployments area in PostgreSQL.

use tokio_postgres::Row;

use super::super::postgres::Postgres;
use super::{DeploymentFilter, DeploymentRow};
use crate::Result;

const SELECT: &str = "SELECT d.seq, d.space, d.project, d.release, d.environment, d.task,
     t.state, d.created_by, d.created_at_ms, t.completed_at_ms
     FROM deployments d JOIN tasks t ON t.seq = d.task";

fn read(r: &Row) -> DeploymentRow {
    DeploymentRow {
        id: r.get(0),
        space: r.get(1),
        project: r.get(2),
        release: r.get(3),
        environment: r.get(4),
        task: r.get(5),
        state: r.get(6),
        created_by: r.get(7),
        created_at: r.get(8),
        completed_at: r.get(9),
    }
}

impl Postgres {
    pub(in crate::db) async fn list_deployments(
        &self,
        filter: DeploymentFilter<'_>,
    ) -> Result<Vec<DeploymentRow>> {
        let c = self.conn().await?;
        let rows = match filter {
            DeploymentFilter::Release(r) => {
                c.query(
                    &format!("{SELECT} WHERE d.release = $1 ORDER BY d.seq DESC"),
                    &[&r],
                )
                .await
            }
            DeploymentFilter::Space {
                space,
                project,
                before,
                limit,
            } => {
                c.query(
                    &format!(
                        "{SELECT} WHERE d.space = $1 AND ($2::bigint IS NULL OR d.project = $2)
                         AND ($3::bigint IS NULL OR d.seq < $3)
                         ORDER BY d.seq DESC LIMIT $4"
                    ),
                    &[&space, &project, &before, &i64::from(limit)],
                )
                .await
            }
        }
        .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(read).collect())
    }

    pub(in crate::db) async fn get_deployment(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<DeploymentRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("{SELECT} WHERE d.seq = $1 AND d.space = $2"),
                &[&id, &space],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(read))
    }
}

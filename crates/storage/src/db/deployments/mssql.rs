//! The deployments area in SQL Server.

use tiberius::Row;

use super::super::mssql::{int64, ms, rows, run, text, Mssql, Retry};
use super::{DeploymentFilter, DeploymentRow};
use crate::Result;

macro_rules! select {
    () => {
        concat!(
            "SELECT d.seq, d.space, d.project, d.[release], d.environment, d.task, t.state, \
             d.created_by, ",
            ms!("d.created_at"),
            " AS created_at_ms, ",
            ms!("t.completed_at"),
            " AS completed_at_ms FROM deployments d JOIN tasks t ON t.seq = d.task"
        )
    };
}

fn read(r: &Row) -> DeploymentRow {
    DeploymentRow {
        id: int64(r, 0),
        space: text(r, 1),
        project: int64(r, 2),
        release: int64(r, 3),
        environment: text(r, 4),
        task: int64(r, 5),
        state: text(r, 6),
        created_by: text(r, 7),
        created_at: int64(r, 8),
        completed_at: r.get::<i64, _>(9),
    }
}

impl Mssql {
    pub(in crate::db) async fn list_deployments(
        &self,
        filter: DeploymentFilter<'_>,
    ) -> Result<Vec<DeploymentRow>> {
        const BY_RELEASE: &str = concat!(select!(), " WHERE d.[release] = @P1 ORDER BY d.seq DESC");
        const BY_SPACE: &str = concat!(
            "SELECT TOP (@P3) * FROM (",
            select!(),
            " WHERE d.space = @P1 AND (@P2 IS NULL OR d.project = @P2) \
             AND (@P4 IS NULL OR d.seq < @P4)) AS x ORDER BY x.seq DESC"
        );
        let found = match filter {
            DeploymentFilter::Release(r) => {
                run!(self, Retry::Idempotent, |c| rows(c, BY_RELEASE, &[&r])
                    .await)?
            }
            DeploymentFilter::Space {
                space,
                project,
                before,
                limit,
            } => {
                let limit = i64::from(limit);
                run!(self, Retry::Idempotent, |c| {
                    rows(c, BY_SPACE, &[&space, &project, &limit, &before]).await
                })?
            }
        };
        Ok(found.iter().map(read).collect())
    }

    pub(in crate::db) async fn get_deployment(
        &self,
        space: &str,
        id: i64,
    ) -> Result<Option<DeploymentRow>> {
        const SQL: &str = concat!(select!(), " WHERE d.seq = @P1 AND d.space = @P2");
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&id, &space])
            .await)?;
        Ok(found.first().map(read))
    }
}

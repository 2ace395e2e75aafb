//! The gauges in SQL Server.

use super::super::mssql::{age_ms, ms, opt_text, rows, run, text, Mssql, Retry};
use super::GaugeRow;
use crate::Result;

impl Mssql {
    pub(in crate::db) async fn gauge_rows(&self) -> Result<Vec<GaugeRow>> {
        const SQL: &str = concat!(
            "SELECT CAST(N'task' AS NVARCHAR(20)), state, kind, COUNT_BIG(*) FROM tasks
                 WHERE state IN (N'Queued', N'Executing', N'Cancelling') GROUP BY state, kind
             UNION ALL SELECT N'oldest', NULL, NULL, MAX(",
            age_ms!("queued_at"),
            ") FROM tasks WHERE state = N'Queued'
             UNION ALL SELECT N'sessions', node, NULL, COUNT_BIG(*) FROM target_sessions
                 GROUP BY node
             UNION ALL SELECT N'now', NULL, NULL, ",
            ms!("SYSUTCDATETIME()")
        );
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[]).await)?;
        Ok(found
            .iter()
            .map(|r| GaugeRow {
                what: text(r, 0),
                a: opt_text(r, 1),
                b: opt_text(r, 2),
                value: r.get::<i64, _>(3),
            })
            .collect())
    }
}

//! The gauges in PostgreSQL.

use super::super::postgres::{Postgres, NOW};
use super::GaugeRow;
use crate::Result;

impl Postgres {
    pub(in crate::db) async fn gauge_rows(&self) -> Result<Vec<GaugeRow>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT 'task'::text, state, kind, COUNT(*)::bigint FROM tasks
                         WHERE state IN ('Queued', 'Executing', 'Cancelling') GROUP BY state, kind
                     UNION ALL SELECT 'oldest', NULL, NULL, {NOW} - MIN(queued_at_ms) FROM tasks
                         WHERE state = 'Queued'
                     UNION ALL SELECT 'sessions', node, NULL, COUNT(*)::bigint
                         FROM target_sessions GROUP BY node
                     UNION ALL SELECT 'now', NULL, NULL, {NOW}"
                ),
                &[],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| GaugeRow {
                what: r.get(0),
                a: r.get(1),
                b: r.get(2),
                value: r.get(3),
            })
            .collect())
    }
}

//! The gauges in SQLite.

use super::super::sqlite::{db_err, Sqlite, NOW};
use super::GaugeRow;
use crate::Result;

impl Sqlite {
    pub(in crate::db) async fn gauge_rows(&self) -> Result<Vec<GaugeRow>> {
        self.with(move |c| {
            let sql = format!(
                "SELECT 'task', state, kind, COUNT(*) FROM tasks
                     WHERE state IN ('Queued', 'Executing', 'Cancelling') GROUP BY state, kind
                 UNION ALL SELECT 'oldest', NULL, NULL, {NOW} - MIN(queued_at_ms) FROM tasks
                     WHERE state = 'Queued'
                 UNION ALL SELECT 'sessions', node, NULL, COUNT(*) FROM target_sessions
                     GROUP BY node
                 UNION ALL SELECT 'now', NULL, NULL, {NOW}"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(GaugeRow {
                        what: r.get(0)?,
                        a: r.get(1)?,
                        b: r.get(2)?,
                        value: r.get(3)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }
}

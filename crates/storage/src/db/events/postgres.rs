//! The events area in PostgreSQL.

use cuttle_core::EventRecord;

use super::super::postgres::Postgres;
use crate::Result;

impl Postgres {
    pub(in crate::db) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                 FROM events ORDER BY seq DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                id: format!("Events-{}", r.get::<_, i64>(0)),
                occurred_at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                client_address: r.get(5),
                details: serde_json::from_str(&r.get::<_, String>(6))
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }
}

//! The events area in PostgreSQL.

use cuttle_core::{EventRecord, UnixMs};

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

    pub(in crate::db) async fn events_between(
        &self,
        from_ms: UnixMs,
        to_ms: UnixMs,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, EventRecord)>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                 FROM events WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2 AND seq > $3
                 ORDER BY seq LIMIT $4",
                &[&from_ms, &to_ms, &after, &i64::from(limit)],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                Ok((
                    seq,
                    EventRecord {
                        id: format!("Events-{seq}"),
                        occurred_at: r.get(1),
                        actor: r.get(2),
                        action: r.get(3),
                        target: r.get(4),
                        client_address: r.get(5),
                        details: super::parse_details(seq, r.get(6))?,
                    },
                ))
            })
            .collect()
    }

    pub(in crate::db) async fn delete_events_between(
        &self,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<u64> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM events WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2",
                &[&from_ms, &to_ms],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(n)
    }

    pub(in crate::db) async fn oldest_event_at(&self) -> Result<Option<UnixMs>> {
        let c = self.conn().await?;
        let row = c
            .query_one("SELECT MIN(occurred_at_ms) FROM events", &[])
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.get(0))
    }
}

//! The events area in SQL Server.

use cuttle_core::{EventRecord, UnixMs};

use super::super::mssql::{execute, int64, ms, rows, run, text, Mssql, Retry};
use crate::Result;

impl Mssql {
    pub(in crate::db) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        const SQL: &str = concat!(
            "SELECT TOP (@P1) seq, ",
            ms!("occurred_at"),
            ", actor, [action], target, client_address, details FROM events ORDER BY seq DESC"
        );
        let limit = i64::from(limit);
        let rows = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[&limit]).await)?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                id: format!("Events-{}", int64(r, 0)),
                occurred_at: int64(r, 1),
                actor: text(r, 2),
                action: text(r, 3),
                target: text(r, 4),
                client_address: text(r, 5),
                details: serde_json::from_str(&text(r, 6)).unwrap_or(serde_json::Value::Null),
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
        const SQL: &str = concat!(
            "SELECT TOP (@P4) seq, ",
            ms!("occurred_at"),
            ", actor, [action], target, client_address, details FROM events WHERE ",
            ms!("occurred_at"),
            " >= @P1 AND ",
            ms!("occurred_at"),
            " < @P2 AND seq > @P3 ORDER BY seq"
        );
        let limit = i64::from(limit);
        let found = run!(self, Retry::Idempotent, |c| rows(
            c,
            SQL,
            &[&from_ms, &to_ms, &after, &limit]
        )
        .await)?;
        found
            .iter()
            .map(|r| {
                let seq = int64(r, 0);
                Ok((
                    seq,
                    EventRecord {
                        id: format!("Events-{seq}"),
                        occurred_at: int64(r, 1),
                        actor: text(r, 2),
                        action: text(r, 3),
                        target: text(r, 4),
                        client_address: text(r, 5),
                        details: super::parse_details(seq, &text(r, 6))?,
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
        const SQL: &str = concat!(
            "DELETE FROM events WHERE ",
            ms!("occurred_at"),
            " >= @P1 AND ",
            ms!("occurred_at"),
            " < @P2"
        );
        // Deleting again what is already gone deletes nothing: safe to repeat.
        let n = run!(self, Retry::Idempotent, |c| execute(
            c,
            SQL,
            &[&from_ms, &to_ms]
        )
        .await)?;
        self.committed();
        Ok(n)
    }

    pub(in crate::db) async fn oldest_event_at(&self) -> Result<Option<UnixMs>> {
        const SQL: &str = concat!("SELECT MIN(", ms!("occurred_at"), ") FROM events");
        let found = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[]).await)?;
        Ok(found.first().and_then(|r| r.get::<i64, _>(0)))
    }
}

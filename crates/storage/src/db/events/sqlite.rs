//! The events area in SQLite.

use cuttle_core::{EventRecord, UnixMs};
use rusqlite::params;

use super::super::sqlite::{db_err, Sqlite};
use crate::Result;

impl Sqlite {
    pub(in crate::db) async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                     FROM events ORDER BY seq DESC LIMIT ?1",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([limit], |r| {
                    let details: String = r.get(6)?;
                    Ok(EventRecord {
                        id: format!("Events-{}", r.get::<_, i64>(0)?),
                        occurred_at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        client_address: r.get(5)?,
                        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn events_between(
        &self,
        from_ms: UnixMs,
        to_ms: UnixMs,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, EventRecord)>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, occurred_at_ms, actor, action, target, client_address, details
                     FROM events WHERE occurred_at_ms >= ?1 AND occurred_at_ms < ?2 AND seq > ?3
                     ORDER BY seq LIMIT ?4",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![from_ms, to_ms, after, limit], |r| {
                    let details: String = r.get(6)?;
                    let seq: i64 = r.get(0)?;
                    Ok((
                        seq,
                        details,
                        EventRecord {
                            id: format!("Events-{seq}"),
                            occurred_at: r.get(1)?,
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            client_address: r.get(5)?,
                            details: serde_json::Value::Null,
                        },
                    ))
                })
                .map_err(db_err)?;
            rows.map(|r| {
                let (seq, details, mut e) = r.map_err(db_err)?;
                e.details = super::parse_details(seq, &details)?;
                Ok((seq, e))
            })
            .collect()
        })
        .await
    }

    pub(in crate::db) async fn delete_events_between(
        &self,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<u64> {
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM events WHERE occurred_at_ms >= ?1 AND occurred_at_ms < ?2",
                params![from_ms, to_ms],
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn oldest_event_at(&self) -> Result<Option<UnixMs>> {
        self.with(move |c| {
            c.query_row("SELECT MIN(occurred_at_ms) FROM events", [], |r| r.get(0))
                .map_err(db_err)
        })
        .await
    }
}

//! The events area in SQLite.

use cuttle_core::EventRecord;

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
}

//! The events area in SQL Server.

use cuttle_core::EventRecord;

use super::super::mssql::{int64, ms, rows, run, text, Mssql, Retry};
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
}

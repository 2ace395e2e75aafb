//! The audit events area of the [`Store`]: reading them (each change writes its own event in its
//! transaction, through the dialect's `insert_event`); one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{EventRecord, UnixMs};

use super::{dispatch, Store};
use crate::{Error, Result};

impl Store {
    /// The newest audit events first.
    pub async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        dispatch!(self, b => b.list_events(limit).await)
    }

    /// Events that occurred in `[from_ms, to_ms)` after sequence number `after`, oldest first,
    /// at most `limit`: a page of an export (pass the last one's sequence number for the next).
    pub async fn events_between(
        &self,
        from_ms: UnixMs,
        to_ms: UnixMs,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, EventRecord)>> {
        dispatch!(self, b => b.events_between(from_ms, to_ms, after, limit).await)
    }

    /// Deletes the events that occurred in `[from_ms, to_ms)` (once archived); how many.
    pub async fn delete_events_between(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<u64> {
        dispatch!(self, b => b.delete_events_between(from_ms, to_ms).await)
    }

    /// When the oldest event in the database occurred.
    pub async fn oldest_event_at(&self) -> Result<Option<UnixMs>> {
        dispatch!(self, b => b.oldest_event_at().await)
    }
}

/// An event's details, refusing text that is not JSON rather than showing it as empty.
pub(crate) fn parse_details(seq: i64, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::Database(format!("events row {seq}: details are not JSON: {e}")))
}

//! The audit events area of the [`Store`]: reading them (each change writes its own event in its
//! transaction, through the dialect's `insert_event`); one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::EventRecord;

use super::{dispatch, Store};
use crate::Result;

impl Store {
    /// The newest audit events first.
    pub async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        dispatch!(self, b => b.list_events(limit).await)
    }
}

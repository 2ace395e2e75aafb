//! The settings area of the [`Store`]: cluster-wide key/value settings (the shared-store path,
//! the master-key check value, sealed secrets); one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use super::{dispatch, Store};
use crate::Result;

impl Store {
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        dispatch!(self, b => b.get_setting(key).await)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        dispatch!(self, b => b.set_setting(key, value).await)
    }

    /// Stores `value` unless the key already has one; returns whichever value is stored.
    /// Two nodes racing get the same answer.
    pub async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        dispatch!(self, b => b.init_setting(key, value).await)
    }

    /// Replaces several settings at once, each only if it still holds the value the caller
    /// read (`(key, old, new)`): all of them change in one transaction, or none does (false).
    pub async fn replace_settings(&self, changes: &[(String, String, String)]) -> Result<bool> {
        if changes.is_empty() {
            return Ok(true);
        }
        dispatch!(self, b => b.replace_settings(changes).await)
    }

    /// Claims period `n` of a periodic job named `key`: true for exactly one caller per period
    /// however many ask at once, false for every other and for any earlier period.
    pub async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        self.init_setting(key, "0").await?;
        dispatch!(self, b => b.claim_period(key, n).await)
    }
}

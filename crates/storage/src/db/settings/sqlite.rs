//! Settings in SQLite.

use rusqlite::{params, OptionalExtension};

use super::super::sqlite::{db_err, Sqlite};
use crate::{Error, Result};

impl Sqlite {
    pub(in crate::db) async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.with(move |c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )
            .map_err(db_err)?;
            tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn replace_settings(
        &self,
        changes: &[(String, String, String)],
    ) -> Result<bool> {
        let changes = changes.to_vec();
        let done = self
            .write(move |tx| {
                for (key, old, new) in &changes {
                    let n = tx
                        .execute(
                            "UPDATE settings SET value = ?3 WHERE key = ?1 AND value = ?2",
                            params![key, old, new],
                        )
                        .map_err(db_err)?;
                    if n == 0 {
                        // Dropping the transaction undoes the changes made so far.
                        return Err(Error::Conflict(format!("setting {key} changed")));
                    }
                }
                Ok(())
            })
            .await;
        match done {
            Ok(()) => Ok(true),
            Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(in crate::db) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |tx| {
            let claimed = tx
                .execute(
                    "UPDATE settings SET value = CAST(?2 AS TEXT)
                     WHERE key = ?1 AND CAST(value AS INTEGER) < ?2",
                    params![key, n],
                )
                .map_err(db_err)?;
            Ok(claimed == 1)
        })
        .await
    }
}

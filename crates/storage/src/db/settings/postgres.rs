//! Settings in PostgreSQL.

use super::super::postgres::{checked_write, Postgres, TxEnd};
use crate::Result;

impl Postgres {
    pub(in crate::db) async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let c = self.conn().await?;
        let row = c
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(in crate::db) async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        let row = c
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.get(0))
    }

    pub(in crate::db) async fn replace_settings(
        &self,
        changes: &[(String, String, String)],
    ) -> Result<bool> {
        let done = checked_write!(self, |tx| {
            for (key, old, new) in changes {
                let n = tx
                    .execute(
                        "UPDATE settings SET value = $3 WHERE key = $1 AND value = $2",
                        &[key, old, new],
                    )
                    .await?;
                if n == 0 {
                    return Ok(TxEnd::Rollback(false));
                }
            }
            Ok(TxEnd::Commit(true))
        });
        Ok(done)
    }

    pub(in crate::db) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        let c = self.conn().await?;
        // The row lock makes a racing caller wait, then re-check the condition and miss.
        let claimed = c
            .execute(
                "UPDATE settings SET value = $2::BIGINT::TEXT
                 WHERE key = $1 AND value::BIGINT < $2::BIGINT",
                &[&key, &n],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(claimed == 1)
    }
}

//! Settings in SQL Server.

use super::super::mssql::{execute, rows, run, run_racing, text, Mssql, Retry};
use crate::{Error, Result};

impl Mssql {
    pub(in crate::db) async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, "SELECT value FROM settings WHERE [key] = @P1", &[&key]).await
        })?;
        Ok(rows.first().map(|r| text(r, 0)))
    }

    pub(in crate::db) async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        run_racing!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE settings SET value = @P2 WHERE [key] = @P1;
                 IF @@ROWCOUNT = 0 INSERT INTO settings ([key], value) VALUES (@P1, @P2);",
                &[&key, &value],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let rows = run_racing!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "IF NOT EXISTS (SELECT 1 FROM settings WHERE [key] = @P1)
                         INSERT INTO settings ([key], value) VALUES (@P1, @P2);
                     SELECT value FROM settings WHERE [key] = @P1;",
                &[&key, &value],
            )
            .await
        })?;
        self.committed();
        rows.first()
            .map(|r| text(r, 0))
            .ok_or_else(|| Error::Database(format!("setting {key} vanished")))
    }

    pub(in crate::db) async fn replace_settings(
        &self,
        changes: &[(String, String, String)],
    ) -> Result<bool> {
        // One batch: every update counted, and all undone unless each matched its old value.
        let mut sql = String::from("SET XACT_ABORT ON; BEGIN TRANSACTION; DECLARE @n INT = 0;\n");
        let mut params: Vec<&dyn tiberius::ToSql> = Vec::new();
        for (i, (key, old, new)) in changes.iter().enumerate() {
            let p = 3 * i;
            sql.push_str(&format!(
                "UPDATE settings SET value = @P{} WHERE [key] = @P{} AND value = @P{};
                 SET @n = @n + @@ROWCOUNT;\n",
                p + 3,
                p + 1,
                p + 2
            ));
            params.extend([key as &dyn tiberius::ToSql, old, new]);
        }
        sql.push_str(&format!(
            "IF @n = {} BEGIN COMMIT TRANSACTION; SELECT 1; END
             ELSE BEGIN ROLLBACK TRANSACTION; SELECT 0; END",
            changes.len()
        ));
        let found = run!(self, Retry::RolledBackOnly, |c| {
            rows(c, &sql, &params).await
        })?;
        let done = found.first().and_then(|r| r.get::<i32, _>(0)) == Some(1);
        if done {
            self.committed();
        }
        Ok(done)
    }

    pub(in crate::db) async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        // The row lock makes a racing caller wait, then re-check the condition and miss. Not
        // retried after a lost connection: a committed first attempt would read as a miss.
        let claimed = run!(self, Retry::RolledBackOnly, |c| {
            // The CASE keeps the cast to this key's row: SQL Server does not promise to test
            // `[key]` first, and other settings hold text.
            execute(
                c,
                "UPDATE settings SET value = CAST(@P2 AS NVARCHAR(20))
                 WHERE [key] = @P1
                   AND CASE WHEN [key] = @P1 THEN CAST(value AS BIGINT) END < @P2",
                &[&key, &n],
            )
            .await
        })?;
        self.committed();
        Ok(claimed == 1)
    }
}

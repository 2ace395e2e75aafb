//! API keys in SQL Server.

use tiberius::Row;

use super::super::mssql::{
    execute, insert_event, int64, ms, opt_text, rows, run, run_in_transaction, text, Mssql,
    OptText, Retry,
};
use super::{decide_revoke, grant_text, key_row, ApiKeyRow, FoundApiKey, NewApiKey, Revoke};
use crate::db::Audit;
use crate::{Error, Result};

/// The key columns in the order of [`super::KEY_COLUMNS`], times in milliseconds.
macro_rules! key_columns {
    () => {
        concat!(
            "id, name, scope, prefix, ",
            ms!("created_at"),
            ", ",
            ms!("expires_at"),
            ", target_name, algorithm, target_grant"
        )
    };
}

fn to_row(r: &Row) -> Result<ApiKeyRow> {
    key_row(
        int64(r, 0),
        text(r, 1),
        &text(r, 2),
        text(r, 3),
        int64(r, 4),
        r.get::<i64, _>(5),
        opt_text(r, 6),
        &text(r, 7),
        opt_text(r, 8),
    )
}

impl Mssql {
    pub(in crate::db) async fn api_key_count(&self) -> Result<u64> {
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, "SELECT COUNT_BIG(*) FROM api_keys", &[]).await
        })?;
        Ok(rows.first().map(|r| int64(r, 0)).unwrap_or(0) as u64)
    }

    pub(in crate::db) async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit: Option<Audit<i64>>,
    ) -> Result<Option<i64>> {
        // DATEADD takes an INT: ten years of seconds fit.
        let expires = key.expires_in_secs.map(|s| s.min(i32::MAX as u32) as i32);
        let target = OptText(key.target_name.as_deref());
        let grant_json = grant_text(key.grant.as_ref());
        let grant = OptText(grant_json.as_deref());
        let scope = key.scope.as_str();
        let inserted = run_in_transaction!(self, |c| {
            let found = rows(
                c,
                "IF NOT EXISTS (SELECT 1 FROM api_keys WITH (UPDLOCK, HOLDLOCK) WHERE key_hash = @P2)
                     INSERT INTO api_keys (name, key_hash, created_at, scope, prefix, algorithm,
                         expires_at, target_name, target_grant)
                     OUTPUT inserted.id
                     VALUES (@P1, @P2, SYSUTCDATETIME(), @P3, @P4, @P5,
                         DATEADD(SECOND, @P6, SYSUTCDATETIME()), CAST(@P7 AS NVARCHAR(MAX)),
                         CAST(@P8 AS NVARCHAR(MAX)));",
                &[
                    &key.name.as_str(),
                    &key.hash.as_str(),
                    &scope,
                    &key.prefix.as_str(),
                    &key.algorithm.as_str(),
                    &expires,
                    &target,
                    &grant,
                ],
            )
            .await?;
            let id = found.first().map(|r| int64(r, 0));
            insert_event(c, audit.as_ref(), id.as_ref()).await?;
            id
        });
        let id = match inserted {
            Ok(id) => id,
            // A racing insert of the same hash won on the unique key: it is stored.
            Err(Error::Conflict(_)) => None,
            Err(e) => return Err(e),
        };
        self.committed();
        Ok(id)
    }

    pub(in crate::db) async fn find_api_key(
        &self,
        [a, b, c]: [&str; 3],
    ) -> Result<Option<FoundApiKey>> {
        const SQL: &str = concat!(
            "SELECT TOP (1) ",
            key_columns!(),
            ", CASE WHEN expires_at <= SYSUTCDATETIME() THEN 1 ELSE 0 END, key_hash
             FROM api_keys WHERE key_hash IN (@P1, @P2, @P3)
             ORDER BY CASE WHEN algorithm = N'sha256' THEN 1 ELSE 0 END"
        );
        let found = run!(self, Retry::Idempotent, |conn| {
            rows(conn, SQL, &[&a, &b, &c]).await
        })?;
        found
            .first()
            .map(|r| {
                Ok(FoundApiKey {
                    key: to_row(r)?,
                    expired: r.get::<i32, _>(9).unwrap_or(0) == 1,
                    stored_hash: text(r, 10),
                })
            })
            .transpose()
    }

    pub(in crate::db) async fn upgrade_api_key_hash(
        &self,
        id: i64,
        from: &str,
        to: &str,
        algorithm: &str,
    ) -> Result<bool> {
        let n = run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE api_keys SET key_hash = @P1, algorithm = @P2
                 WHERE id = @P3 AND key_hash = @P4",
                &[&to, &algorithm, &id, &from],
            )
            .await
        })?;
        self.committed();
        Ok(n == 1)
    }

    pub(in crate::db) async fn name_unnamed_key_hashes(&self, algorithm: &str) -> Result<u64> {
        let n = run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE api_keys SET algorithm = @P1 WHERE algorithm = N'hmac-sha256'",
                &[&algorithm],
            )
            .await
        })?;
        self.committed();
        Ok(n)
    }

    pub(in crate::db) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        const SQL: &str = concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY id");
        let rows = run!(self, Retry::Idempotent, |c| rows(c, SQL, &[]).await)?;
        rows.iter().map(to_row).collect()
    }

    pub(in crate::db) async fn revoke_api_key(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<Revoke> {
        // An application lock taken in the transaction holds every revoke until this one ends
        // (correctness never rests on table hints, which Babelfish ignores).
        let decided = run_in_transaction!(self, |c| {
            execute(
                c,
                "DECLARE @locked INT;
                 EXEC @locked = sp_getapplock @Resource = N'cuttle-api-keys',
                     @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 30000;",
                &[],
            )
            .await?;
            let found = rows(
                c,
                "SELECT scope,
                     CASE WHEN expires_at IS NULL OR expires_at > SYSUTCDATETIME() THEN 1 ELSE 0 END,
                     (SELECT COUNT_BIG(*) FROM api_keys o
                      WHERE o.scope = N'admin' AND o.id <> @P1
                        AND (o.expires_at IS NULL OR o.expires_at > SYSUTCDATETIME()))
                 FROM api_keys WHERE id = @P1",
                &[&id],
            )
            .await?;
            let (key, others) = match found.first() {
                Some(r) => (
                    Some((text(r, 0), r.get::<i32, _>(1).unwrap_or(0) == 1)),
                    int64(r, 2),
                ),
                None => (None, 0),
            };
            let decided = decide_revoke(key, others);
            if decided == Revoke::Revoked {
                execute(c, "DELETE FROM api_keys WHERE id = @P1", &[&id]).await?;
                insert_event(c, audit.as_ref(), Some(&())).await?;
            }
            decided
        })?;
        if decided == Revoke::Revoked {
            self.committed();
        }
        Ok(decided)
    }
}

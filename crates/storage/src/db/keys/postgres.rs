//! API keys in PostgreSQL.

use tokio_postgres::Row;

use super::super::postgres::{in_transaction, insert_event, Postgres, NOW};
use super::{
    decide_revoke, grant_text, key_row, ApiKeyRow, FoundApiKey, NewApiKey, Revoke, KEY_COLUMNS,
};
use crate::db::Audit;
use crate::Result;

/// An [`ApiKeyRow`] from [`KEY_COLUMNS`] at column 0 on.
fn to_row(r: &Row) -> Result<ApiKeyRow> {
    key_row(
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
    )
}

impl Postgres {
    pub(in crate::db) async fn api_key_count(&self) -> Result<u64> {
        let c = self.conn().await?;
        let row = c
            .query_one("SELECT COUNT(*) FROM api_keys", &[])
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub(in crate::db) async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit: Option<Audit<i64>>,
    ) -> Result<Option<i64>> {
        let sql = format!(
            "INSERT INTO api_keys (name, key_hash, created_at_ms, scope, prefix, algorithm,
                 expires_at_ms, target_name, target_grant)
             VALUES ($1, $2, {NOW}, $3, $4, $5, {NOW} + $6::bigint * 1000, $7, $8)
             ON CONFLICT (key_hash) DO NOTHING
             RETURNING id"
        );
        let expires = key.expires_in_secs.map(i64::from);
        let grant = grant_text(key.grant.as_ref());
        let id = in_transaction!(self, |tx| {
            let row = tx
                .query_opt(
                    &sql,
                    &[
                        &key.name,
                        &key.hash,
                        &key.scope.as_str(),
                        &key.prefix,
                        &key.algorithm,
                        &expires,
                        &key.target_name,
                        &grant,
                    ],
                )
                .await?;
            let id: Option<i64> = row.map(|r| r.get(0));
            insert_event(&tx, audit.as_ref(), id.as_ref()).await?;
            id
        })
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(id)
    }

    pub(in crate::db) async fn find_api_key(
        &self,
        [a, b, c]: [&str; 3],
    ) -> Result<Option<FoundApiKey>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {KEY_COLUMNS},
                         COALESCE(expires_at_ms <= {NOW}, FALSE), key_hash
                     FROM api_keys WHERE key_hash IN ($1, $2, $3)
                     ORDER BY algorithm = 'sha256' LIMIT 1"
                ),
                &[&a, &b, &c],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        row.map(|r| {
            Ok(FoundApiKey {
                key: to_row(&r)?,
                expired: r.get(9),
                stored_hash: r.get(10),
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
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE api_keys SET key_hash = $1, algorithm = $2 WHERE id = $3 AND key_hash = $4",
                &[&to, &algorithm, &id, &from],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(n == 1)
    }

    pub(in crate::db) async fn name_unnamed_key_hashes(&self, algorithm: &str) -> Result<u64> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE api_keys SET algorithm = $1 WHERE algorithm = 'hmac-sha256'",
                &[&algorithm],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(n)
    }

    pub(in crate::db) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"),
                &[],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        rows.iter().map(to_row).collect()
    }

    pub(in crate::db) async fn revoke_api_key(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<Revoke> {
        let working = format!("(expires_at_ms IS NULL OR expires_at_ms > {NOW})");
        let lock =
            "SELECT id FROM api_keys WHERE scope = 'admin' OR id = $1 ORDER BY id FOR UPDATE";
        let read = format!("SELECT scope, {working} FROM api_keys WHERE id = $1");
        let count = format!(
            "SELECT COUNT(*) FROM api_keys WHERE scope = 'admin' AND id <> $1 AND {working}"
        );
        let decided = in_transaction!(self, |tx| {
            // Every admin key held until the end: a revoke racing this one waits, then sees
            // what this one did.
            tx.query(lock, &[&id]).await?;
            let key = tx
                .query_opt(&read, &[&id])
                .await?
                .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)));
            let others: i64 = tx.query_one(&count, &[&id]).await?.get(0);
            let decided = decide_revoke(key, others);
            if decided == Revoke::Revoked {
                tx.execute("DELETE FROM api_keys WHERE id = $1", &[&id])
                    .await?;
                insert_event(&tx, audit.as_ref(), Some(&())).await?;
            }
            decided
        })
        .map_err(|e| self.map_err(e))?;
        if decided == Revoke::Revoked {
            self.committed();
        }
        Ok(decided)
    }
}

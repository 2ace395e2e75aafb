//! API keys in SQLite.

use rusqlite::{params, OptionalExtension, Row};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{
    decide_revoke, grant_text, key_row, ApiKeyRow, FoundApiKey, NewApiKey, Revoke, KEY_COLUMNS,
};
use crate::db::Audit;
use crate::Result;

/// [`KEY_COLUMNS`] as read, before their text is checked.
type Raw = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
);

/// Reads [`KEY_COLUMNS`] from column 0 on.
fn read(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn to_row(
    (id, name, scope, prefix, created, expires, target, algorithm, grant): Raw,
) -> Result<ApiKeyRow> {
    key_row(
        id, name, &scope, prefix, created, expires, target, &algorithm, grant,
    )
}

impl Sqlite {
    pub(in crate::db) async fn api_key_count(&self) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))
                .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit: Option<Audit<i64>>,
    ) -> Result<Option<i64>> {
        let k = key.clone();
        self.write(move |tx| {
            let id: Option<i64> = tx
                .query_row(
                    &format!(
                        "INSERT INTO api_keys (name, key_hash, created_at_ms, scope, prefix,
                             algorithm, expires_at_ms, target_name, target_grant)
                         VALUES (?1, ?2, {NOW}, ?3, ?4, ?5, {NOW} + ?6 * 1000, ?7, ?8)
                         ON CONFLICT (key_hash) DO NOTHING
                         RETURNING id"
                    ),
                    params![
                        k.name,
                        k.hash,
                        k.scope.as_str(),
                        k.prefix,
                        k.algorithm,
                        k.expires_in_secs,
                        k.target_name,
                        grant_text(k.grant.as_ref())
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), id.as_ref())?;
            Ok(id)
        })
        .await
    }

    pub(in crate::db) async fn find_api_key(
        &self,
        hashes: [&str; 3],
    ) -> Result<Option<FoundApiKey>> {
        let hashes = hashes.map(str::to_owned);
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {KEY_COLUMNS}, expires_at_ms IS NOT NULL AND expires_at_ms <= {NOW},
                             key_hash
                         FROM api_keys WHERE key_hash IN (?1, ?2, ?3)
                         ORDER BY algorithm = 'sha256' LIMIT 1"
                    ),
                    hashes,
                    |r| Ok((read(r)?, r.get::<_, bool>(9)?, r.get::<_, String>(10)?)),
                )
                .optional()
                .map_err(db_err)?;
            found
                .map(|(row, expired, stored_hash)| {
                    Ok(FoundApiKey {
                        key: to_row(row)?,
                        expired,
                        stored_hash,
                    })
                })
                .transpose()
        })
        .await
    }

    pub(in crate::db) async fn upgrade_api_key_hash(
        &self,
        id: i64,
        from: &str,
        to: &str,
        algorithm: &str,
    ) -> Result<bool> {
        let (from, to, algorithm) = (from.to_owned(), to.to_owned(), algorithm.to_owned());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET key_hash = ?1, algorithm = ?2
                     WHERE id = ?3 AND key_hash = ?4",
                    params![to, algorithm, id, from],
                )
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    pub(in crate::db) async fn name_unnamed_key_hashes(&self, algorithm: &str) -> Result<u64> {
        let algorithm = algorithm.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET algorithm = ?1 WHERE algorithm = 'hmac-sha256'",
                    params![algorithm],
                )
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    pub(in crate::db) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
                .map_err(db_err)?;
            let rows = st
                .query_map([], read)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            rows.into_iter().map(to_row).collect()
        })
        .await
    }

    pub(in crate::db) async fn revoke_api_key(
        &self,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<Revoke> {
        // The write transaction (BEGIN IMMEDIATE) holds the database: nothing changes between
        // the count and the delete.
        self.write(move |tx| {
            let working = format!("(expires_at_ms IS NULL OR expires_at_ms > {NOW})");
            let key: Option<(String, bool)> = tx
                .query_row(
                    &format!("SELECT scope, {working} FROM api_keys WHERE id = ?1"),
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            let others: i64 = tx
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM api_keys WHERE scope = 'admin' AND id <> ?1 AND {working}"
                    ),
                    [id],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let decided = decide_revoke(key, others);
            if decided == Revoke::Revoked {
                tx.execute("DELETE FROM api_keys WHERE id = ?1", [id])
                    .map_err(db_err)?;
                insert_event(tx, audit.as_ref(), Some(&()))?;
            }
            Ok(decided)
        })
        .await
    }
}

//! Web UI sessions in PostgreSQL.

use super::super::postgres::{in_transaction, insert_event, Postgres, NOW};
use super::{columns, session_row, NewSession, SessionRow};
use crate::db::Audit;
use crate::Result;

impl Postgres {
    pub(in crate::db) async fn create_session(
        &self,
        s: &NewSession,
        audit: Option<Audit<()>>,
    ) -> Result<()> {
        let purge = format!("DELETE FROM ui_sessions WHERE expires_at_ms <= {NOW}");
        let insert = format!(
            "WITH t AS (SELECT {NOW} AS now)
             INSERT INTO ui_sessions (id_hash, key_hash, user_id, user_version, created_at_ms,
                 expires_at_ms)
             VALUES ($1, $2, $3, $4, (SELECT now FROM t), (SELECT now FROM t) + $5::bigint * 1000)"
        );
        let (key, user, version) = columns(&s.of);
        let lifetime = i64::from(s.lifetime_secs);
        in_transaction!(self, |tx| {
            tx.execute(&purge, &[]).await?;
            tx.execute(&insert, &[&s.id_hash, &key, &user, &version, &lifetime])
                .await?;
            insert_event(&tx, audit.as_ref(), Some(&())).await?;
        })
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT key_hash, user_id, user_version, created_at_ms, expires_at_ms
                     FROM ui_sessions WHERE id_hash = $1 AND expires_at_ms > {NOW}"
                ),
                &[&id_hash],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        row.map(|r| session_row(r.get(0), (r.get(1), r.get(2)), r.get(3), r.get(4)))
            .transpose()
    }

    pub(in crate::db) async fn end_session(
        &self,
        id_hash: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event(
            "DELETE FROM ui_sessions WHERE id_hash = $1",
            &id_hash,
            audit,
        )
        .await
    }
}

//! Web UI sessions in SQLite.

use rusqlite::{params, OptionalExtension};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{columns, session_row, NewSession, SessionRow};
use crate::db::Audit;
use crate::Result;

impl Sqlite {
    pub(in crate::db) async fn create_session(
        &self,
        s: &NewSession,
        audit: Option<Audit<()>>,
    ) -> Result<()> {
        let s = s.clone();
        self.write(move |tx| {
            tx.execute(
                &format!("DELETE FROM ui_sessions WHERE expires_at_ms <= {NOW}"),
                [],
            )
            .map_err(db_err)?;
            let (key, user, version) = columns(&s.of);
            tx.execute(
                &format!(
                    "INSERT INTO ui_sessions (id_hash, key_hash, user_id, user_version,
                         created_at_ms, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW} + ?5 * 1000)"
                ),
                params![s.id_hash, key, user, version, s.lifetime_secs],
            )
            .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), Some(&()))?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        let id_hash = id_hash.to_owned();
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT key_hash, user_id, user_version, created_at_ms, expires_at_ms
                         FROM ui_sessions WHERE id_hash = ?1 AND expires_at_ms > {NOW}"
                    ),
                    [id_hash],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            (r.get::<_, Option<i64>>(1)?, r.get::<_, Option<i64>>(2)?),
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(db_err)?;
            found
                .map(|(k, u, c, e)| session_row(k, u, c, e))
                .transpose()
        })
        .await
    }

    pub(in crate::db) async fn end_session(
        &self,
        id_hash: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let id_hash = id_hash.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute("DELETE FROM ui_sessions WHERE id_hash = ?1", [id_hash])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }
}

//! Web UI sessions in SQL Server.

use super::super::mssql::{
    execute, insert_event, int64, ms, opt_text, rows, run, run_in_transaction, Mssql, OptText,
    Retry,
};
use super::{columns, session_row, NewSession, SessionRow};
use crate::db::Audit;
use crate::Result;

impl Mssql {
    pub(in crate::db) async fn create_session(
        &self,
        s: &NewSession,
        audit: Option<Audit<()>>,
    ) -> Result<()> {
        let (key, user, version) = columns(&s.of);
        let key = OptText(key);
        // DATEADD takes an INT: twelve hours of seconds fit.
        let lifetime = s.lifetime_secs as i32;
        run_in_transaction!(self, |c| {
            execute(
                c,
                "DELETE FROM ui_sessions WHERE expires_at <= SYSUTCDATETIME()",
                &[],
            )
            .await?;
            execute(
                c,
                "DECLARE @now DATETIME2(3) = SYSUTCDATETIME();
                 INSERT INTO ui_sessions (id_hash, key_hash, user_id, user_version, created_at,
                     expires_at)
                 VALUES (@P1, CAST(@P2 AS NVARCHAR(128)), @P3, @P4, @now,
                     DATEADD(SECOND, @P5, @now))",
                &[&s.id_hash.as_str(), &key, &user, &version, &lifetime],
            )
            .await?;
            insert_event(c, audit.as_ref(), Some(&())).await?;
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        const SQL: &str = concat!(
            "SELECT key_hash, user_id, user_version, ",
            ms!("created_at"),
            ", ",
            ms!("expires_at"),
            " FROM ui_sessions WHERE id_hash = @P1 AND expires_at > SYSUTCDATETIME()"
        );
        let found = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&id_hash]).await
        })?;
        found
            .first()
            .map(|r| {
                session_row(
                    opt_text(r, 0),
                    (r.get::<i64, _>(1), r.get::<i64, _>(2)),
                    int64(r, 3),
                    int64(r, 4),
                )
            })
            .transpose()
    }

    pub(in crate::db) async fn end_session(
        &self,
        id_hash: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event(
            "DELETE FROM ui_sessions WHERE id_hash = @P1",
            &id_hash,
            audit,
        )
        .await
    }
}

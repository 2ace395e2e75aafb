//! Targets in SQL Server.

use std::sync::LazyLock;

use cuttle_core::{NewTarget, TargetId, UnixMs};
use tiberius::ToSql;

use super::super::mssql::{
    age_ms, execute, insert_event, int64, ms, opt_text, query, rows, run, run_in_transaction,
    run_racing, text, Mssql, OptText, Retry,
};
use super::{target_conflict, TargetRow};
use crate::db::Audit;
use crate::{Error, Result};

impl Mssql {
    pub(in crate::db) async fn write_target(
        &self,
        id: Option<TargetId>,
        t: &NewTarget,
        audit: Option<Audit<TargetId>>,
    ) -> Result<Option<TargetId>> {
        let envs = serde_json::to_string(&t.environments).unwrap_or_default();
        let roles = serde_json::to_string(&t.roles).unwrap_or_default();
        let comms = t.comms.as_str();
        let endpoint = OptText(t.endpoint.as_deref());
        let sql = match id {
            None => {
                "INSERT INTO targets (name, environments, roles, comms, endpoint, thumbprint,
                     created_at)
                 OUTPUT inserted.seq
                 VALUES (@P1, @P2, @P3, @P4, CAST(@P5 AS NVARCHAR(MAX)), @P6, SYSUTCDATETIME())"
            }
            Some(_) => {
                "UPDATE targets SET name = @P1, environments = @P2, roles = @P3, comms = @P4,
                     endpoint = CAST(@P5 AS NVARCHAR(MAX)), thumbprint = @P6
                 OUTPUT inserted.seq
                 WHERE seq = @P7"
            }
        };
        let seq = id.map(|id| id.0);
        let mut params: Vec<&dyn ToSql> =
            vec![&t.name, &envs, &roles, &comms, &endpoint, &t.thumbprint];
        if let Some(seq) = &seq {
            params.push(seq);
        }
        let written = run_in_transaction!(self, |c| {
            let written = rows(c, sql, &params)
                .await?
                .first()
                .map(|r| TargetId(int64(r, 0)));
            insert_event(c, audit.as_ref(), written.as_ref()).await?;
            written
        });
        match written {
            Ok(written) => {
                self.committed();
                Ok(written)
            }
            Err(Error::Conflict(_)) => Err(target_conflict(t)),
            Err(e) => Err(e),
        }
    }

    pub(in crate::db) async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event("DELETE FROM targets WHERE seq = @P1", &id.0, audit)
            .await
    }

    pub(in crate::db) async fn list_targets(
        &self,
        id: Option<TargetId>,
        offline_after_ms: UnixMs,
    ) -> Result<(Vec<TargetRow>, Vec<(i64, String)>)> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT seq, name, environments, roles, comms, endpoint, thumbprint, health,
                     health_reason, {}, cluster_trust
                 FROM targets WHERE (@P1 IS NULL OR seq = @P1) ORDER BY seq;
                 SELECT s.target_seq, s.node FROM target_sessions s
                 JOIN nodes n ON n.name = s.node
                 WHERE {} < @P2 AND (@P1 IS NULL OR s.target_seq = @P1)
                 ORDER BY s.node;",
                ms!("last_health_check"),
                age_ms!("n.last_seen"),
            )
        });
        let id = id.map(|i| i.0);
        let mut sets = run!(self, Retry::Idempotent, |c| {
            query(c, &SQL, &[&id, &offline_after_ms]).await
        })?
        .into_iter();
        let targets = sets
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| TargetRow {
                id: int64(r, 0),
                name: text(r, 1),
                environments: text(r, 2),
                roles: text(r, 3),
                comms: text(r, 4),
                endpoint: opt_text(r, 5),
                thumbprint: text(r, 6),
                health: text(r, 7),
                health_reason: opt_text(r, 8),
                last_health_check_ms: r.get::<i64, _>(9),
                cluster_trust: text(r, 10),
            })
            .collect();
        let sessions = sets
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| (int64(r, 0), text(r, 1)))
            .collect();
        Ok((targets, sessions))
    }

    pub(in crate::db) async fn open_session(&self, id: TargetId, node: &str) -> Result<()> {
        run_racing!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE target_sessions SET connected_at = SYSUTCDATETIME()
                 WHERE target_seq = @P1 AND node = @P2;
                 IF @@ROWCOUNT = 0
                     INSERT INTO target_sessions (target_seq, node, connected_at)
                     VALUES (@P1, @P2, SYSUTCDATETIME());",
                &[&id.0, &node],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn close_sessions(
        &self,
        id: Option<TargetId>,
        node: &str,
    ) -> Result<()> {
        let id = id.map(|i| i.0);
        run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "DELETE FROM target_sessions WHERE node = @P1 AND (@P2 IS NULL OR target_seq = @P2)",
                &[&node, &id],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn set_target_health(
        &self,
        id: TargetId,
        health: &str,
        reason: &str,
    ) -> Result<()> {
        run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE targets SET health = @P2, health_reason = @P3,
                     last_health_check = SYSUTCDATETIME()
                 WHERE seq = @P1",
                &[&id.0, &health, &reason],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn record_cluster_trust(&self, id: TargetId, json: &str) -> Result<()> {
        run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE targets SET cluster_trust = @P2 WHERE seq = @P1",
                &[&id.0, &json],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }
}

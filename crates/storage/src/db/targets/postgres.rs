//! Targets in PostgreSQL.

use std::sync::LazyLock;

use cuttle_core::{NewTarget, TargetId, UnixMs};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::super::postgres::{in_transaction, insert_event, Postgres, NOW};
use super::{target_conflict, TargetRow, TARGET_COLUMNS};
use crate::db::Audit;
use crate::Result;

impl Postgres {
    pub(in crate::db) async fn write_target(
        &self,
        id: Option<TargetId>,
        t: &NewTarget,
        audit: Option<Audit<TargetId>>,
    ) -> Result<Option<TargetId>> {
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO targets (name, environments, roles, comms, endpoint, thumbprint,
                     created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, {NOW}) RETURNING seq"
            )
        });
        const UPDATE: &str = "UPDATE targets SET name = $1, environments = $2, roles = $3,
                 comms = $4, endpoint = $5, thumbprint = $6
             WHERE seq = $7 RETURNING seq";
        let envs = serde_json::to_string(&t.environments).unwrap_or_default();
        let roles = serde_json::to_string(&t.roles).unwrap_or_default();
        let comms = t.comms.as_str();
        let seq = id.map(|id| id.0);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&t.name, &envs, &roles, &comms, &t.endpoint, &t.thumbprint];
        if let Some(seq) = &seq {
            params.push(seq);
        }
        let sql = if id.is_some() { UPDATE } else { &INSERT };
        let written = in_transaction!(self, |tx| {
            let written = tx
                .query_opt(sql, &params)
                .await?
                .map(|r| TargetId(r.get(0)));
            insert_event(&tx, audit.as_ref(), written.as_ref()).await?;
            written
        });
        match written {
            Ok(written) => {
                self.committed();
                Ok(written)
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(target_conflict(t)),
            Err(e) => Err(self.map_err(e)),
        }
    }

    pub(in crate::db) async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event("DELETE FROM targets WHERE seq = $1", &id.0, audit)
            .await
    }

    pub(in crate::db) async fn list_targets(
        &self,
        id: Option<TargetId>,
        offline_after_ms: UnixMs,
    ) -> Result<(Vec<TargetRow>, Vec<(i64, String)>)> {
        let c = self.conn().await?;
        let id = id.map(|i| i.0);
        let rows = c
            .query(
                &format!(
                    "SELECT {TARGET_COLUMNS} FROM targets
                     WHERE ($1::BIGINT IS NULL OR seq = $1) ORDER BY seq"
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.map_err(e))?
            .iter()
            .map(|r| TargetRow {
                id: r.get(0),
                name: r.get(1),
                environments: r.get(2),
                roles: r.get(3),
                comms: r.get(4),
                endpoint: r.get(5),
                thumbprint: r.get(6),
                health: r.get(7),
                health_reason: r.get(8),
                last_health_check_ms: r.get(9),
                cluster_trust: r.get(10),
            })
            .collect();
        let sessions = c
            .query(
                &format!(
                    "SELECT s.target_seq, s.node FROM target_sessions s
                     JOIN nodes n ON n.name = s.node
                     WHERE n.last_seen_ms > {NOW} - $1
                         AND ($2::BIGINT IS NULL OR s.target_seq = $2)
                     ORDER BY s.node"
                ),
                &[&offline_after_ms, &id],
            )
            .await
            .map_err(|e| self.map_err(e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok((rows, sessions))
    }

    pub(in crate::db) async fn open_session(&self, id: TargetId, node: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            &format!(
                "INSERT INTO target_sessions (target_seq, node, connected_at_ms)
                 VALUES ($1, $2, {NOW})
                 ON CONFLICT (target_seq, node) DO UPDATE
                     SET connected_at_ms = excluded.connected_at_ms"
            ),
            &[&id.0, &node],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn close_sessions(
        &self,
        id: Option<TargetId>,
        node: &str,
    ) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "DELETE FROM target_sessions
             WHERE node = $1 AND ($2::BIGINT IS NULL OR target_seq = $2)",
            &[&node, &id.map(|i| i.0)],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn set_target_health(
        &self,
        id: TargetId,
        health: &str,
        reason: &str,
    ) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            &format!(
                "UPDATE targets SET health = $2, health_reason = $3, last_health_check_ms = {NOW}
                 WHERE seq = $1"
            ),
            &[&id.0, &health, &reason],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn record_cluster_trust(&self, id: TargetId, json: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE targets SET cluster_trust = $2 WHERE seq = $1",
            &[&id.0, &json],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }
}

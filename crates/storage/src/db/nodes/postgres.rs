//! The nodes area in PostgreSQL.

use std::sync::LazyLock;

use cuttle_core::{NodePatch, NodeRecord, UnixMs};

use super::super::postgres::{in_transaction, insert_event, Postgres, NOW};
use crate::db::{Audit, Beat, NodeHolder, NodeRegistration, NodeState};
use crate::Result;
use tokio_postgres::types::Type;

impl Postgres {
    pub(in crate::db) async fn register_node(
        &self,
        reg: &NodeRegistration,
    ) -> Result<Option<NodeState>> {
        let c = self.conn().await?;
        let cap = reg.initial_task_cap as i32;
        let rows = c
            .query(
                &format!(
                    "INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at_ms, last_seen_ms,
                         instance)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, {NOW}, {NOW}, $8)
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                         version = excluded.version, http_address = excluded.http_address,
                         grpc_address = excluded.grpc_address,
                         gateway_address = excluded.gateway_address,
                         started_at_ms = excluded.started_at_ms,
                         last_seen_ms = excluded.last_seen_ms, lost_at_ms = NULL,
                         storage_ok = TRUE, instance = excluded.instance
                     WHERE nodes.instance IS NULL OR nodes.instance = '' OR nodes.instance = $8
                         OR nodes.instance = $9
                     RETURNING task_cap, draining"
                ),
                &[
                    &reg.name,
                    &reg.roles,
                    &reg.version,
                    &reg.http_address,
                    &reg.grpc_address,
                    &reg.gateway_address,
                    &cap,
                    &reg.instance,
                    &reg.replaces,
                ],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(rows.first().map(|row| NodeState {
            task_cap: row.get::<_, i32>(0) as u32,
            draining: row.get(1),
        }))
    }

    pub(in crate::db) async fn heartbeat(
        &self,
        name: &str,
        instance: &str,
        storage_ok: bool,
    ) -> Result<Beat> {
        // One statement: the write when this process holds the name, else whether the row
        // exists at all (a missing row is registered again; a row held by another is not).
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH b AS (UPDATE nodes SET last_seen_ms = {NOW}, lost_at_ms = NULL,
                         storage_ok = $2, instance = $3
                     WHERE name = $1 AND (instance IS NULL OR instance = '' OR instance = $3)
                     RETURNING task_cap, draining)
                 SELECT task_cap, draining, TRUE FROM b
                 UNION ALL
                 SELECT 0, FALSE, FALSE FROM nodes
                 WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM b)"
            )
        });
        let mut c = self.conn().await?;
        let st = c
            .prepared(&SQL, &[Type::TEXT, Type::BOOL, Type::TEXT])
            .await
            .map_err(|e| self.map_err(e))?;
        let rows = c
            .query(&st, &[&name, &storage_ok, &instance])
            .await
            .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(match rows.first() {
            None => Beat::Missing,
            Some(r) if r.get::<_, bool>(2) => Beat::Written(NodeState {
                task_cap: r.get::<_, i32>(0) as u32,
                draining: r.get(1),
            }),
            Some(_) => Beat::Taken,
        })
    }

    pub(in crate::db) async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT instance, last_seen_ms, {NOW}, http_address FROM nodes
                     WHERE name = $1"
                ),
                &[&name],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.first().map(|r| NodeHolder {
            instance: r.get(0),
            last_seen_ms: r.get(1),
            now_ms: r.get(2),
            http_address: r.get(3),
        }))
    }

    pub(in crate::db) async fn release_node_name(&self, name: &str, instance: &str) -> Result<()> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE nodes SET instance = '' WHERE name = $1 AND instance = $2",
            &[&name, &instance],
        )
        .await
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                         n.last_seen_ms > {NOW} - $1, n.last_seen_ms, n.started_at_ms,
                         (SELECT COUNT(*) FROM tasks t WHERE t.node = n.name
                            AND t.state IN ('Executing', 'Cancelling')),
                         n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                     FROM nodes n WHERE ($2::text IS NULL OR n.name = $2) ORDER BY n.name"
                ),
                &[&offline_after_ms, &name],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                name: r.get(0),
                roles: r
                    .get::<_, String>(1)
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                version: r.get(2),
                task_cap: r.get::<_, i32>(3) as u32,
                draining: r.get(4),
                online: r.get(5),
                last_seen: r.get(6),
                started_at: r.get(7),
                running_tasks: r.get::<_, i64>(8) as u32,
                http_address: r.get(9),
                grpc_address: r.get(10),
                gateway_address: r.get(11),
                storage_ok: r.get(12),
            })
            .collect())
    }

    pub(in crate::db) async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let cap = patch.task_cap.map(|c| c as i32);
        let found = in_transaction!(self, |tx| {
            let n = tx
                .execute(
                    "UPDATE nodes SET task_cap = COALESCE($2, task_cap),
                         draining = COALESCE($3, draining) WHERE name = $1",
                    &[&name, &cap, &patch.draining],
                )
                .await?;
            insert_event(&tx, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })
        .map_err(|e| self.map_err(e))?;
        self.committed();
        Ok(found)
    }

    pub(in crate::db) async fn delete_node(
        &self,
        name: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event("DELETE FROM nodes WHERE name = $1", &name, audit)
            .await
    }
}

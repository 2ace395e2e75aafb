//! The nodes area in SQLite.

use cuttle_core::{NodePatch, NodeRecord, UnixMs};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use crate::db::{Audit, Beat, NodeHolder, NodeRegistration, NodeState};
use crate::Result;
use rusqlite::{params, OptionalExtension};

impl Sqlite {
    pub(in crate::db) async fn register_node(
        &self,
        reg: &NodeRegistration,
    ) -> Result<Option<NodeState>> {
        let reg = reg.clone();
        self.write(move |tx| {
            tx.query_row(
                &format!(
                    "INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at_ms, last_seen_ms,
                         instance)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, {NOW}, {NOW}, ?8)
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles,
                         version = excluded.version, http_address = excluded.http_address,
                         grpc_address = excluded.grpc_address,
                         gateway_address = excluded.gateway_address,
                         started_at_ms = excluded.started_at_ms,
                         last_seen_ms = excluded.last_seen_ms, lost_at_ms = NULL,
                         storage_ok = 1, instance = excluded.instance
                     WHERE nodes.instance IS NULL OR nodes.instance = '' OR nodes.instance = ?8
                         OR nodes.instance = ?9
                     RETURNING task_cap, draining"
                ),
                params![
                    reg.name,
                    reg.roles,
                    reg.version,
                    reg.http_address,
                    reg.grpc_address,
                    reg.gateway_address,
                    reg.initial_task_cap,
                    reg.instance,
                    reg.replaces
                ],
                |r| {
                    Ok(NodeState {
                        task_cap: r.get(0)?,
                        draining: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn heartbeat(
        &self,
        name: &str,
        instance: &str,
        storage_ok: bool,
    ) -> Result<Beat> {
        let (name, instance) = (name.to_owned(), instance.to_owned());
        self.write(move |tx| {
            let written = tx
                .query_row(
                    &format!(
                        "UPDATE nodes SET last_seen_ms = {NOW}, lost_at_ms = NULL,
                             storage_ok = ?2, instance = ?3
                         WHERE name = ?1 AND (instance IS NULL OR instance = '' OR instance = ?3)
                         RETURNING task_cap, draining"
                    ),
                    params![name, storage_ok, instance],
                    |r| {
                        Ok(NodeState {
                            task_cap: r.get(0)?,
                            draining: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(db_err)?;
            if let Some(state) = written {
                return Ok(Beat::Written(state));
            }
            let exists = tx
                .query_row("SELECT 1 FROM nodes WHERE name = ?1", [&name], |_| Ok(()))
                .optional()
                .map_err(db_err)?;
            Ok(if exists.is_some() {
                Beat::Taken
            } else {
                Beat::Missing
            })
        })
        .await
    }

    pub(in crate::db) async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>> {
        let name = name.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT instance, last_seen_ms, {NOW}, http_address FROM nodes
                     WHERE name = ?1"
                ),
                [&name],
                |r| {
                    Ok(NodeHolder {
                        instance: r.get(0)?,
                        last_seen_ms: r.get(1)?,
                        now_ms: r.get(2)?,
                        http_address: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn release_node_name(&self, name: &str, instance: &str) -> Result<()> {
        let (name, instance) = (name.to_owned(), instance.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE nodes SET instance = '' WHERE name = ?1 AND instance = ?2",
                params![name, instance],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        let name = name.map(str::to_owned);
        self.with(move |c| {
            let sql = format!(
                "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                     n.last_seen_ms > {NOW} - ?1, n.last_seen_ms, n.started_at_ms,
                     (SELECT COUNT(*) FROM tasks t WHERE t.node = n.name
                        AND t.state IN ('Executing', 'Cancelling')),
                     n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                 FROM nodes n WHERE (?2 IS NULL OR n.name = ?2) ORDER BY n.name"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params![offline_after_ms, name], |r| {
                    let roles: String = r.get(1)?;
                    Ok(NodeRecord {
                        name: r.get(0)?,
                        roles: roles.split(',').map(str::to_owned).collect(),
                        version: r.get(2)?,
                        task_cap: r.get(3)?,
                        draining: r.get(4)?,
                        online: r.get(5)?,
                        last_seen: r.get(6)?,
                        started_at: r.get(7)?,
                        running_tasks: r.get(8)?,
                        http_address: r.get(9)?,
                        grpc_address: r.get(10)?,
                        gateway_address: r.get(11)?,
                        storage_ok: r.get(12)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let (name, patch) = (name.to_owned(), patch.clone());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE nodes SET task_cap = COALESCE(?2, task_cap),
                         draining = COALESCE(?3, draining) WHERE name = ?1",
                    params![name, patch.task_cap, patch.draining],
                )
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }

    pub(in crate::db) async fn delete_node(
        &self,
        name: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute("DELETE FROM nodes WHERE name = ?1", [name])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }
}

//! The nodes area in SQL Server.

use std::sync::LazyLock;

use cuttle_core::{NodePatch, NodeRecord, UnixMs};

use super::super::mssql::flag;
use super::super::mssql::{
    age_ms, execute, insert_event, int64, ms, opt_text, rows, run, run_in_transaction, run_racing,
    text, Mssql, OptText, Retry,
};
use crate::db::{Audit, Beat, NodeHolder, NodeRegistration, NodeState};
use crate::Result;
use tiberius::Row;

fn node_state(r: &Row) -> NodeState {
    NodeState {
        task_cap: r.get::<i32, _>(0).unwrap_or(0) as u32,
        draining: flag(r, 1),
    }
}

impl Mssql {
    pub(in crate::db) async fn register_node(
        &self,
        reg: &NodeRegistration,
    ) -> Result<Option<NodeState>> {
        let cap = reg.initial_task_cap as i32;
        let gateway = OptText(reg.gateway_address.as_deref());
        let replaces = OptText(reg.replaces.as_deref());
        let rows = run_racing!(self, Retry::Idempotent, |c| {
            rows(
                c,
                // `@@ROWCOUNT` of an UPDATE with an OUTPUT clause is 0 on Babelfish: the row
                // is read back by a SELECT instead, in the same transaction. A row held by
                // another live process is neither updated nor inserted: no row comes back.
                "BEGIN TRANSACTION;
                 UPDATE nodes SET roles = @P2, version = @P3, http_address = @P4,
                     grpc_address = @P5, gateway_address = CAST(@P6 AS NVARCHAR(MAX)),
                     started_at = SYSUTCDATETIME(), last_seen = SYSUTCDATETIME(),
                     lost_at = NULL, storage_ok = 1, instance = @P8
                 WHERE name = @P1 AND (instance IS NULL OR instance = N'' OR instance = @P8
                     OR instance = CAST(@P9 AS NVARCHAR(64)));
                 IF @@ROWCOUNT = 0 AND NOT EXISTS (SELECT 1 FROM nodes WHERE name = @P1)
                     INSERT INTO nodes (name, roles, version, http_address, grpc_address,
                         gateway_address, task_cap, draining, started_at, last_seen, instance)
                     VALUES (@P1, @P2, @P3, @P4, @P5, CAST(@P6 AS NVARCHAR(MAX)), @P7, 0,
                         SYSUTCDATETIME(), SYSUTCDATETIME(), @P8);
                 SELECT task_cap, draining FROM nodes WHERE name = @P1 AND instance = @P8;
                 COMMIT TRANSACTION;",
                &[
                    &reg.name.as_str(),
                    &reg.roles.as_str(),
                    &reg.version.as_str(),
                    &reg.http_address.as_str(),
                    &reg.grpc_address.as_str(),
                    &gateway,
                    &cap,
                    &reg.instance.as_str(),
                    &replaces,
                ],
            )
            .await
        })?;
        self.committed();
        Ok(rows.first().map(node_state))
    }

    pub(in crate::db) async fn heartbeat(
        &self,
        name: &str,
        instance: &str,
        storage_ok: bool,
    ) -> Result<Beat> {
        let written = run!(self, Retry::Idempotent, |c| {
            rows(
                c,
                "UPDATE nodes SET last_seen = SYSUTCDATETIME(), lost_at = NULL,
                         storage_ok = @P2, instance = @P3
                     OUTPUT inserted.task_cap, inserted.draining
                     WHERE name = @P1 AND (instance IS NULL OR instance = N'' OR instance = @P3)",
                &[&name, &storage_ok, &instance],
            )
            .await
        })?;
        self.committed();
        if let Some(r) = written.first() {
            return Ok(Beat::Written(node_state(r)));
        }
        let exists = run!(self, Retry::Idempotent, |c| {
            rows(c, "SELECT 1 FROM nodes WHERE name = @P1", &[&name]).await
        })?;
        Ok(if exists.is_empty() {
            Beat::Missing
        } else {
            Beat::Taken
        })
    }

    pub(in crate::db) async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT instance, {}, {}, http_address FROM nodes WHERE name = @P1",
                ms!("last_seen"),
                ms!("SYSUTCDATETIME()"),
            )
        });
        let found = run!(self, Retry::Idempotent, |c| rows(c, &SQL, &[&name]).await)?;
        Ok(found.first().map(|r| NodeHolder {
            instance: opt_text(r, 0),
            last_seen_ms: int64(r, 1),
            now_ms: int64(r, 2),
            http_address: text(r, 3),
        }))
    }

    pub(in crate::db) async fn release_node_name(&self, name: &str, instance: &str) -> Result<()> {
        run!(self, Retry::Idempotent, |c| {
            execute(
                c,
                "UPDATE nodes SET instance = '' WHERE name = @P1 AND instance = @P2",
                &[&name, &instance],
            )
            .await
        })?;
        self.committed();
        Ok(())
    }

    pub(in crate::db) async fn list_nodes(
        &self,
        name: Option<&str>,
        offline_after_ms: UnixMs,
    ) -> Result<Vec<NodeRecord>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT n.name, n.roles, n.version, n.task_cap, n.draining,
                     CAST(CASE WHEN {} < @P1 THEN 1 ELSE 0 END AS BIT), {}, {},
                     (SELECT COUNT_BIG(*) FROM tasks t WHERE t.node = n.name
                        AND t.state IN (N'Executing', N'Cancelling')),
                     n.http_address, n.grpc_address, n.gateway_address, n.storage_ok
                 FROM nodes n
                 WHERE (@P2 IS NULL OR n.name = CAST(@P2 AS NVARCHAR(4000))) ORDER BY n.name",
                age_ms!("n.last_seen"),
                ms!("n.last_seen"),
                ms!("n.started_at"),
            )
        });
        let rows = run!(self, Retry::Idempotent, |c| {
            rows(c, &SQL, &[&offline_after_ms, &OptText(name)]).await
        })?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                name: text(r, 0),
                roles: text(r, 1).split(',').map(str::to_owned).collect(),
                version: text(r, 2),
                task_cap: r.get::<i32, _>(3).unwrap_or(0) as u32,
                draining: flag(r, 4),
                online: flag(r, 5),
                last_seen: int64(r, 6),
                started_at: int64(r, 7),
                running_tasks: int64(r, 8) as u32,
                http_address: text(r, 9),
                grpc_address: text(r, 10),
                gateway_address: opt_text(r, 11),
                storage_ok: flag(r, 12),
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
        let found = run_in_transaction!(self, |c| {
            let n = execute(
                c,
                "UPDATE nodes SET task_cap = COALESCE(@P2, task_cap),
                         draining = COALESCE(@P3, draining) WHERE name = @P1",
                &[&name, &cap, &patch.draining],
            )
            .await?;
            insert_event(c, audit.as_ref(), (n > 0).then_some(&())).await?;
            n > 0
        })?;
        self.committed();
        Ok(found)
    }

    pub(in crate::db) async fn delete_node(
        &self,
        name: &str,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.delete_with_event("DELETE FROM nodes WHERE name = @P1", &name, audit)
            .await
    }
}

//! Targets in SQLite.

use cuttle_core::{NewTarget, TargetId, UnixMs};
use rusqlite::{params, OptionalExtension};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{target_conflict, TargetRow, TARGET_COLUMNS};
use crate::db::Audit;
use crate::Result;

impl Sqlite {
    pub(in crate::db) async fn write_target(
        &self,
        id: Option<TargetId>,
        t: &NewTarget,
        audit: Option<Audit<TargetId>>,
    ) -> Result<Option<TargetId>> {
        let t = t.clone();
        self.write(move |tx| {
            let envs = serde_json::to_string(&t.environments).unwrap_or_default();
            let roles = serde_json::to_string(&t.roles).unwrap_or_default();
            let values = params![
                t.name,
                envs,
                roles,
                t.comms.as_str(),
                t.endpoint,
                t.thumbprint
            ];
            let row = match id {
                None => tx
                    .query_row(
                        &format!(
                            "INSERT INTO targets (name, environments, roles, comms, endpoint,
                                 thumbprint, created_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}) RETURNING seq"
                        ),
                        values,
                        |r| r.get(0),
                    )
                    .optional(),
                Some(id) => tx
                    .query_row(
                        "UPDATE targets SET name = ?1, environments = ?2, roles = ?3, comms = ?4,
                             endpoint = ?5, thumbprint = ?6
                         WHERE seq = ?7 RETURNING seq",
                        params![
                            t.name,
                            envs,
                            roles,
                            t.comms.as_str(),
                            t.endpoint,
                            t.thumbprint,
                            id.0
                        ],
                        |r| r.get(0),
                    )
                    .optional(),
            };
            match row {
                Ok(seq) => {
                    let written = seq.map(TargetId);
                    insert_event(tx, audit.as_ref(), written.as_ref())?;
                    Ok(written)
                }
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    Err(target_conflict(&t))
                }
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    pub(in crate::db) async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        self.write(move |tx| {
            tx.execute("DELETE FROM target_sessions WHERE target_seq = ?1", [id.0])
                .map_err(db_err)?;
            let n = tx
                .execute("DELETE FROM targets WHERE seq = ?1", [id.0])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), (n > 0).then_some(&()))?;
            Ok(n > 0)
        })
        .await
    }

    pub(in crate::db) async fn list_targets(
        &self,
        id: Option<TargetId>,
        offline_after_ms: UnixMs,
    ) -> Result<(Vec<TargetRow>, Vec<(i64, String)>)> {
        let id = id.map(|i| i.0);
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {TARGET_COLUMNS} FROM targets WHERE (?1 IS NULL OR seq = ?1)
                     ORDER BY seq"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(TargetRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        environments: r.get(2)?,
                        roles: r.get(3)?,
                        comms: r.get(4)?,
                        endpoint: r.get(5)?,
                        thumbprint: r.get(6)?,
                        health: r.get(7)?,
                        health_reason: r.get(8)?,
                        last_health_check_ms: r.get(9)?,
                        cluster_trust: r.get(10)?,
                    })
                })
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT s.target_seq, s.node FROM target_sessions s
                     JOIN nodes n ON n.name = s.node
                     WHERE n.last_seen_ms > {NOW} - ?1 AND (?2 IS NULL OR s.target_seq = ?2)
                     ORDER BY s.node"
                ))
                .map_err(db_err)?;
            let sessions = stmt
                .query_map(params![offline_after_ms, id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok((rows, sessions))
        })
        .await
    }

    pub(in crate::db) async fn open_session(&self, id: TargetId, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO target_sessions (target_seq, node, connected_at_ms)
                     SELECT seq, ?2, {NOW} FROM targets WHERE seq = ?1
                     ON CONFLICT (target_seq, node) DO UPDATE
                         SET connected_at_ms = excluded.connected_at_ms"
                ),
                params![id.0, node],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn close_sessions(
        &self,
        id: Option<TargetId>,
        node: &str,
    ) -> Result<()> {
        let node = node.to_owned();
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM target_sessions WHERE node = ?1 AND (?2 IS NULL OR target_seq = ?2)",
                params![node, id.map(|i| i.0)],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn set_target_health(
        &self,
        id: TargetId,
        health: &str,
        reason: &str,
    ) -> Result<()> {
        let (health, reason) = (health.to_owned(), reason.to_owned());
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "UPDATE targets SET health = ?2, health_reason = ?3,
                         last_health_check_ms = {NOW}
                     WHERE seq = ?1"
                ),
                params![id.0, health, reason],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(in crate::db) async fn record_cluster_trust(&self, id: TargetId, json: &str) -> Result<()> {
        let json = json.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE targets SET cluster_trust = ?2 WHERE seq = ?1",
                params![id.0, json],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}

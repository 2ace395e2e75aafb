//! The targets area of the [`Store`]: deployment targets, the gateways holding sessions with
//! them, their health and which cluster certificates they trust; one file per dialect beside
//! this one.

mod mssql;
mod postgres;
mod sqlite;

use std::time::Duration;

use cuttle_core::{NewTarget, TargetHealth, TargetId, TargetRecord, UnixMs};

use super::{dispatch, ms, Audit, Store};
use crate::{Error, Result};

/// A `targets` row as stored; lists are JSON text.
pub(crate) struct TargetRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) environments: String,
    pub(crate) roles: String,
    pub(crate) comms: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) thumbprint: String,
    pub(crate) health: String,
    pub(crate) health_reason: Option<String>,
    pub(crate) last_health_check_ms: Option<UnixMs>,
    pub(crate) cluster_trust: String,
}

pub(crate) const TARGET_COLUMNS: &str = "seq, name, environments, roles, comms, endpoint, \
     thumbprint, health, health_reason, last_health_check_ms, cluster_trust";

/// Builds the records, refusing a row this binary cannot read rather than guessing.
fn assemble_targets(
    rows: Vec<TargetRow>,
    sessions: Vec<(i64, String)>,
) -> Result<Vec<TargetRecord>> {
    rows.into_iter()
        .map(|r| {
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                Error::Database(format!("targets row {}: {what}: {e}", r.id))
            };
            let list = |what: &str, json: &str| {
                serde_json::from_str::<Vec<String>>(json).map_err(|e| bad(what, &e))
            };
            Ok(TargetRecord {
                id: TargetId(r.id),
                environments: list("environments", &r.environments)?,
                roles: list("roles", &r.roles)?,
                cluster_trust: list("cluster_trust", &r.cluster_trust)?,
                comms: r.comms.parse().map_err(|e| bad("comms", &e))?,
                health: r.health.parse().map_err(|e| bad("health", &e))?,
                connected_nodes: sessions
                    .iter()
                    .filter(|(id, _)| *id == r.id)
                    .map(|(_, node)| node.clone())
                    .collect(),
                name: r.name,
                endpoint: r.endpoint,
                thumbprint: r.thumbprint,
                health_reason: r.health_reason,
                last_health_check: r.last_health_check_ms,
            })
        })
        .collect()
}

/// The message for a unique-constraint violation on `targets`.
pub(crate) fn target_conflict(t: &NewTarget) -> Error {
    Error::Conflict(format!(
        "a target named {:?} or with thumbprint {} is already registered",
        t.name, t.thumbprint
    ))
}

impl Store {
    /// Registers a target; a name or thumbprint already in use is a [`Error::Conflict`].
    pub async fn create_target(
        &self,
        t: &NewTarget,
        audit: Option<Audit<TargetId>>,
    ) -> Result<TargetId> {
        dispatch!(self, b => b.write_target(None, t, audit).await)?
            .ok_or_else(|| Error::Database("insert returned no row".into()))
    }

    /// Replaces a target's registration; false when no such target (and then no event is
    /// written).
    pub async fn update_target(
        &self,
        id: TargetId,
        t: &NewTarget,
        audit: Option<Audit<TargetId>>,
    ) -> Result<bool> {
        Ok(dispatch!(self, b => b.write_target(Some(id), t, audit).await)?.is_some())
    }

    /// Deletes a target and its sessions; false when no such target (and then no event is
    /// written).
    pub async fn delete_target(&self, id: TargetId, audit: Option<Audit<()>>) -> Result<bool> {
        dispatch!(self, b => b.delete_target(id, audit).await)
    }

    /// Every target (or one), with the online nodes holding a session with it.
    pub async fn list_targets(
        &self,
        id: Option<TargetId>,
        offline_after: Duration,
    ) -> Result<Vec<TargetRecord>> {
        let (rows, sessions) = dispatch!(self, b => b.list_targets(id, ms(offline_after)).await)?;
        assemble_targets(rows, sessions)
    }

    pub async fn get_target(
        &self,
        id: TargetId,
        offline_after: Duration,
    ) -> Result<Option<TargetRecord>> {
        Ok(self.list_targets(Some(id), offline_after).await?.pop())
    }

    /// Records that `node`'s gateway holds a live session with the target.
    pub async fn open_session(&self, id: TargetId, node: &str) -> Result<()> {
        dispatch!(self, b => b.open_session(id, node).await)
    }

    /// Removes one session, or with `id` None every session of `node` (at its start-up).
    pub async fn close_sessions(&self, id: Option<TargetId>, node: &str) -> Result<()> {
        dispatch!(self, b => b.close_sessions(id, node).await)
    }

    /// Records the outcome of a health check, timed by the database clock.
    pub async fn set_target_health(
        &self,
        id: TargetId,
        health: TargetHealth,
        reason: &str,
    ) -> Result<()> {
        dispatch!(self, b => b.set_target_health(id, health.as_str(), reason).await)
    }

    /// Records which cluster certificates a target's tentacle trusts (what it answered at a
    /// health check).
    pub async fn record_cluster_trust(&self, id: TargetId, thumbprints: &[String]) -> Result<()> {
        let json = serde_json::to_string(thumbprints)
            .map_err(|e| Error::Database(format!("encode thumbprints: {e}")))?;
        dispatch!(self, b => b.record_cluster_trust(id, &json).await)
    }
}

//! The nodes area of the [`Store`]: each node's row (roles, addresses, task cap, draining, last
//! seen, shared-store health), written at registration and every heartbeat; one file per
//! dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use std::time::Duration;

use cuttle_core::{NodePatch, NodeRecord};

use super::{dispatch, ms, Audit, Beat, NodeHolder, NodeRegistration, NodeState, Store};
use crate::{Error, Result};

impl Store {
    /// Creates or refreshes this node's row (addresses, roles, version, started, last seen)
    /// and marks it held by `reg.instance`. An existing row keeps its task cap and draining
    /// flag: those belong to the operator. Refused ([`Error::NodeNameHeld`]) while another
    /// process holds the name — unless it is `reg.replaces`, found gone by the caller.
    pub async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        dispatch!(self, b => b.register_node(reg).await)?.ok_or_else(|| {
            Error::NodeNameHeld(format!(
                "another cuttle-server process registered as node {:?} just now",
                reg.name
            ))
        })
    }

    /// Refreshes *last seen* and the node's shared-store health, and clears a lost mark;
    /// re-registers the node if its row was deleted. Returns the operator-controlled state;
    /// [`Error::NodeNameHeld`] when another process has taken the name over (this one was
    /// found gone: it must stop).
    pub async fn heartbeat(&self, reg: &NodeRegistration, storage_ok: bool) -> Result<NodeState> {
        match dispatch!(self, b => b.heartbeat(&reg.name, &reg.instance, storage_ok).await)? {
            Beat::Written(state) => Ok(state),
            Beat::Missing => {
                tracing::info!(node = %reg.name, "node row missing; registering again");
                self.register_node(reg).await
            }
            Beat::Taken => Err(Error::NodeNameHeld(format!(
                "another cuttle-server process has taken over node name {:?}",
                reg.name
            ))),
        }
    }

    /// Who holds a node's name now, with the database clock; `None` when there is no row.
    pub async fn node_holder(&self, name: &str) -> Result<Option<NodeHolder>> {
        dispatch!(self, b => b.node_holder(name).await)
    }

    /// A node stopping cleanly lets go of its name, so its next start takes it at once.
    pub async fn release_node_name(&self, name: &str, instance: &str) -> Result<()> {
        dispatch!(self, b => b.release_node_name(name, instance).await)
    }

    pub async fn list_nodes(&self, offline_after: Duration) -> Result<Vec<NodeRecord>> {
        dispatch!(self, b => b.list_nodes(None, ms(offline_after)).await)
    }

    pub async fn get_node(
        &self,
        name: &str,
        offline_after: Duration,
    ) -> Result<Option<NodeRecord>> {
        let mut nodes = dispatch!(self, b => b.list_nodes(Some(name), ms(offline_after)).await)?;
        Ok(nodes.pop())
    }

    /// Applies an operator change; false when no such node (and then no event is written).
    pub async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        dispatch!(self, b => b.patch_node(name, patch, audit).await)
    }

    /// Deletes a node's row; false when no such node (and then no event is written).
    pub async fn delete_node(&self, name: &str, audit: Option<Audit<()>>) -> Result<bool> {
        dispatch!(self, b => b.delete_node(name, audit).await)
    }
}

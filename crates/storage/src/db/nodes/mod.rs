//! The nodes area of the [`Store`]: each node's row (roles, addresses, task cap, draining, last
//! seen, shared-store health), written at registration and every heartbeat; one file per
//! dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use std::time::Duration;

use cuttle_core::{NodePatch, NodeRecord};

use super::{dispatch, ms, Audit, NodeRegistration, NodeState, Store};
use crate::Result;

impl Store {
    /// Creates or refreshes this node's row (addresses, roles, version, started, last seen).
    /// An existing row keeps its task cap and draining flag: those belong to the operator.
    pub async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        dispatch!(self, b => b.register_node(reg).await)
    }

    /// Refreshes *last seen* and the node's shared-store health, and clears a lost mark;
    /// re-registers the node if its row was deleted. Returns the operator-controlled state.
    pub async fn heartbeat(&self, reg: &NodeRegistration, storage_ok: bool) -> Result<NodeState> {
        match dispatch!(self, b => b.heartbeat(&reg.name, storage_ok).await)? {
            Some(state) => Ok(state),
            None => {
                tracing::info!(node = %reg.name, "node row missing; registering again");
                self.register_node(reg).await
            }
        }
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

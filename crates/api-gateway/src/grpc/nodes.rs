//! `cuttle.v1.Nodes`: the cluster's nodes, through the operations REST's `/api/nodes` uses;
//! `Drain` follows a node until it runs no task, as `cuttle node drain --wait` does.

use std::pin::Pin;
use std::time::Duration;

use cuttle_core::{NodePatch, NodeRecord};
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::nodes_server::{Nodes as Service, NodesServer};
use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, timestamp};
use crate::error::ApiError;
use crate::resources::nodes::{change_node, remove_node};
use crate::scoped::{Need, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Nodes";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Update", OPERATOR),
    ("Drain", OPERATOR),
    ("Delete", OPERATOR),
];

/// How often `Drain` reads the node.
const DRAIN_POLL: Duration = Duration::from_millis(500);

pub(super) fn server(s: AppState) -> NodesServer<NodesApi> {
    NodesServer::new(NodesApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct NodesApi {
    s: AppState,
}

fn node(n: &NodeRecord) -> pb::Node {
    pb::Node {
        name: n.name.clone(),
        roles: n.roles.clone(),
        version: n.version.clone(),
        task_cap: n.task_cap,
        draining: n.draining,
        online: n.online,
        last_seen: Some(timestamp(n.last_seen)),
        started_at: Some(timestamp(n.started_at)),
        running_tasks: n.running_tasks,
        http_address: n.http_address.clone(),
        grpc_address: n.grpc_address.clone(),
        gateway_address: n.gateway_address.clone(),
        storage_ok: n.storage_ok,
    }
}

async fn read(s: &AppState, name: &str) -> Result<NodeRecord, ApiError> {
    s.store
        .get_node(name, s.config.offline_after)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no node named {name:?}")))
}

type NodeStream = Pin<Box<dyn Stream<Item = Result<pb::Node, Status>> + Send>>;

#[tonic::async_trait]
impl Service for NodesApi {
    async fn list(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesReply>, Status> {
        let all = self
            .s
            .store
            .list_nodes(self.s.config.offline_after)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListNodesReply {
            items: all.iter().map(node).collect(),
        }))
    }

    async fn get(&self, req: Request<pb::GetNodeRequest>) -> Result<Response<pb::Node>, Status> {
        let name = required("name", &req.get_ref().name)?;
        let n = read(&self.s, name).await.map_err(status)?;
        Ok(Response::new(node(&n)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNodeRequest>,
    ) -> Result<Response<pb::DeleteNodeReply>, Status> {
        let caller = caller(&req)?;
        let name = required("name", &req.get_ref().name)?;
        remove_node(&self.s, &caller, name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteNodeReply {}))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let name = required("name", &r.name)?;
        let patch = NodePatch {
            task_cap: r.task_cap,
            draining: r.draining,
        };
        let n = change_node(&self.s, &caller, name, &patch)
            .await
            .map_err(status)?;
        Ok(Response::new(node(&n)))
    }

    type DrainStream = NodeStream;

    async fn drain(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<NodeStream>, Status> {
        let caller = caller(&req)?;
        let name = required("name", &req.get_ref().name)?.to_owned();
        let patch = NodePatch {
            task_cap: None,
            draining: Some(true),
        };
        let first = change_node(&self.s, &caller, &name, &patch)
            .await
            .map_err(status)?;
        let s = self.s.clone();
        // The node as it is now; then whenever its running tasks change, until none runs.
        let updates = futures_util::stream::unfold(
            (Some(first), None::<u32>, false),
            move |(next, sent, done)| {
                let (s, name) = (s.clone(), name.clone());
                async move {
                    if done {
                        return None;
                    }
                    let mut current = next;
                    loop {
                        let n = match current.take() {
                            Some(n) => n,
                            None => {
                                tokio::time::sleep(DRAIN_POLL).await;
                                match read(&s, &name).await {
                                    Ok(n) => n,
                                    Err(e) => return Some((Err(status(e)), (None, sent, true))),
                                }
                            }
                        };
                        if sent == Some(n.running_tasks) {
                            continue;
                        }
                        let idle = n.running_tasks == 0;
                        return Some((Ok(node(&n)), (None, Some(n.running_tasks), idle)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(updates)))
    }
}

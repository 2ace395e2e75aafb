//! `cuttle.v1.Targets`: reading, placing and removing deployment targets, through the
//! operations REST's `/api/targets` uses (registering one stays REST's, with its
//! register-target keys).

use cuttle_core::TargetRecord;
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::targets_server::{Targets as Service, TargetsServer};
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::{caller, status, timestamp_opt};
use crate::resources::targets::{delete_target, fetch, patch_target, target_id};
use crate::scoped::{Need, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Targets";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Update", OPERATOR),
    ("Delete", OPERATOR),
];

pub(super) fn server(s: AppState) -> TargetsServer<TargetsApi> {
    TargetsServer::new(TargetsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct TargetsApi {
    s: AppState,
}

fn target(t: &TargetRecord) -> pb::Target {
    pb::Target {
        id: t.id.to_string(),
        name: t.name.clone(),
        environments: t.environments.clone(),
        roles: t.roles.clone(),
        comms: t.comms.as_str().to_owned(),
        endpoint: t.endpoint.clone(),
        thumbprint: t.thumbprint.clone(),
        health: t.health.as_str().to_owned(),
        health_reason: t.health_reason.clone(),
        last_health_check: timestamp_opt(t.last_health_check),
        connected_nodes: t.connected_nodes.clone(),
    }
}

#[tonic::async_trait]
impl Service for TargetsApi {
    async fn list(
        &self,
        _: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsReply>, Status> {
        let all = self
            .s
            .store
            .list_targets(None, self.s.config.offline_after)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListTargetsReply {
            items: all.iter().map(target).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let id = target_id(&req.get_ref().id).map_err(status)?;
        let t = fetch(&self.s, id).await.map_err(status)?;
        Ok(Response::new(target(&t)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        // REST's PATCH body: only what is set.
        let mut body = json!({});
        if let Some(name) = r.name {
            body["name"] = json!(name);
        }
        if let Some(envs) = r.environments {
            body["environments"] = json!(envs.values);
        }
        if let Some(roles) = r.roles {
            body["roles"] = json!(roles.values);
        }
        let t = patch_target(&self.s, &caller, &r.id, body)
            .await
            .map_err(status)?;
        Ok(Response::new(target(&t)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteTargetRequest>,
    ) -> Result<Response<pb::DeleteTargetReply>, Status> {
        let caller = caller(&req)?;
        delete_target(&self.s, &caller, &req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTargetReply {}))
    }
}

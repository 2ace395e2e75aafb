//! `cuttle.v1.Environments`, through the document operations REST's environments use.

use cuttle_proto::v1::environments_server::{Environments as Service, EnvironmentsServer};
use cuttle_proto::v1::{
    CreateEnvironmentRequest, DeleteEnvironmentReply, DeleteEnvironmentRequest, Environment,
    GetEnvironmentRequest, ListEnvironmentsReply, ListEnvironmentsRequest,
    ReorderEnvironmentsRequest, UpdateEnvironmentRequest,
};
use cuttle_storage::Document;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, text, timestamp};
use super::documents as docs;
use crate::resources::documents::{ops, DocumentResource};
use crate::resources::environments::Environments;
use crate::scoped::{Need, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Environments";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Create", OPERATOR),
    ("Update", OPERATOR),
    ("Delete", OPERATOR),
    ("Reorder", OPERATOR),
];

pub(super) fn server(s: AppState) -> EnvironmentsServer<EnvironmentsApi> {
    EnvironmentsServer::new(EnvironmentsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct EnvironmentsApi {
    s: AppState,
}

fn environment(d: &Document) -> Environment {
    Environment {
        id: format!("{}{}", Environments::ID_PREFIX, d.id),
        space_id: d.space.clone(),
        name: d.name.clone(),
        description: text(&d.body, "description"),
        version: d.version,
        created_at: Some(timestamp(d.created_at)),
        modified_at: Some(timestamp(d.modified_at)),
    }
}

fn listed(docs: &[Document]) -> ListEnvironmentsReply {
    ListEnvironmentsReply {
        items: docs.iter().map(environment).collect(),
    }
}

#[tonic::async_trait]
impl Service for EnvironmentsApi {
    async fn list(
        &self,
        req: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsReply>, Status> {
        let all = docs::list::<Environments>(&self.s, &req.get_ref().space).await?;
        Ok(Response::new(listed(&all)))
    }

    async fn get(
        &self,
        req: Request<GetEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let r = req.get_ref();
        let d = docs::get::<Environments>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(environment(&d)))
    }

    async fn create(
        &self,
        req: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = json!({"name": r.name, "description": r.description});
        let d = docs::create::<Environments>(&self.s, &caller, &r.space, body).await?;
        Ok(Response::new(environment(&d)))
    }

    async fn update(
        &self,
        req: Request<UpdateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = json!({"name": r.name, "description": r.description});
        let at = (&*r.space, &*r.id);
        let d = docs::update::<Environments>(&self.s, &caller, at, (body, r.version)).await?;
        Ok(Response::new(environment(&d)))
    }

    async fn delete(
        &self,
        req: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteEnvironmentReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        docs::delete::<Environments>(&self.s, &caller, (&r.space, &r.id), r.version).await?;
        Ok(Response::new(DeleteEnvironmentReply {}))
    }

    async fn reorder(
        &self,
        req: Request<ReorderEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let ordered = ops::reorder::<Environments>(&self.s, &caller, space, &r.ids)
            .await
            .map_err(status)?;
        Ok(Response::new(listed(&ordered)))
    }
}

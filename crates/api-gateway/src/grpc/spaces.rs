//! `cuttle.v1.Spaces`: reading spaces, and making one (an admin's), through REST's operations.

use cuttle_proto::v1::spaces_server::{Spaces, SpacesServer};
use cuttle_proto::v1::{
    CreateSpaceRequest, GetSpaceRequest, ListSpacesReply, ListSpacesRequest, Space,
};
use cuttle_storage::Document;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, text, timestamp};
use crate::resources::documents::{resolve_space, SPACE, SPACE_PREFIX};
use crate::resources::spaces::create_space;
use crate::scoped::{Need, ADMIN, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Spaces";

pub(super) const NEEDS: &[(&str, Need)] = &[("List", READER), ("Get", READER), ("Create", ADMIN)];

pub(super) fn server(s: AppState) -> SpacesServer<SpacesApi> {
    SpacesServer::new(SpacesApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct SpacesApi {
    s: AppState,
}

fn space(d: &Document) -> Space {
    Space {
        id: format!("{SPACE_PREFIX}{}", d.id),
        name: d.name.clone(),
        description: text(&d.body, "description"),
        version: d.version,
        created_at: Some(timestamp(d.created_at)),
        modified_at: Some(timestamp(d.modified_at)),
    }
}

#[tonic::async_trait]
impl Spaces for SpacesApi {
    async fn list(
        &self,
        _: Request<ListSpacesRequest>,
    ) -> Result<Response<ListSpacesReply>, Status> {
        let all = self
            .s
            .store
            .list_documents("", SPACE)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(ListSpacesReply {
            items: all.iter().map(space).collect(),
        }))
    }

    async fn get(&self, req: Request<GetSpaceRequest>) -> Result<Response<Space>, Status> {
        let raw = required("space", &req.get_ref().space)?;
        let d = resolve_space(&self.s, raw).await.map_err(status)?;
        Ok(Response::new(space(&d)))
    }

    async fn create(&self, req: Request<CreateSpaceRequest>) -> Result<Response<Space>, Status> {
        let caller = caller(&req)?;
        let r = req.get_ref();
        let d = create_space(&self.s, &caller, &r.name, &r.description)
            .await
            .map_err(status)?;
        Ok(Response::new(space(&d)))
    }
}

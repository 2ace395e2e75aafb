//! `cuttle.v1.Lifecycles`, through the document operations REST's lifecycles use.

use cuttle_proto::v1 as pb;
use cuttle_proto::v1::lifecycles_server::{Lifecycles as Service, LifecyclesServer};
use cuttle_storage::Document;
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, text, timestamp};
use crate::resources::documents::{ops, DocumentResource};
use crate::resources::lifecycles::Lifecycles;
use crate::scoped::{Need, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Lifecycles";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Create", OPERATOR),
    ("Update", OPERATOR),
    ("Delete", OPERATOR),
];

pub(super) fn server(s: AppState) -> LifecyclesServer<LifecyclesApi> {
    LifecyclesServer::new(LifecyclesApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct LifecyclesApi {
    s: AppState,
}

/// A stored lifecycle; one whose phases cannot be read is an error, never shown without them.
fn lifecycle(d: &Document) -> Result<pb::Lifecycle, Status> {
    let phases = Lifecycles::phases_of(d).map_err(status)?;
    Ok(pb::Lifecycle {
        id: format!("{}{}", Lifecycles::ID_PREFIX, d.id),
        space_id: d.space.clone(),
        name: d.name.clone(),
        description: text(&d.body, "description"),
        phases: phases
            .into_iter()
            .map(|p| pb::Phase {
                name: p.name,
                environments: p.environments,
                minimum_environments_before_promotion: p.minimum_environments_before_promotion,
                optional: p.optional,
            })
            .collect(),
        version: d.version,
        created_at: Some(timestamp(d.created_at)),
        modified_at: Some(timestamp(d.modified_at)),
    })
}

/// A lifecycle as REST's write takes it.
fn write(name: String, description: String, phases: Vec<pb::Phase>) -> Value {
    let phases: Vec<Value> = phases
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "environments": p.environments,
                "minimum_environments_before_promotion": p.minimum_environments_before_promotion,
                "optional": p.optional,
            })
        })
        .collect();
    json!({"name": name, "description": description, "phases": phases})
}

#[tonic::async_trait]
impl Service for LifecyclesApi {
    async fn list(
        &self,
        req: Request<pb::ListLifecyclesRequest>,
    ) -> Result<Response<pb::ListLifecyclesReply>, Status> {
        let space = required("space", &req.get_ref().space)?;
        let docs = ops::list::<Lifecycles>(&self.s, space)
            .await
            .map_err(status)?;
        let items = docs.iter().map(lifecycle).collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListLifecyclesReply { items }))
    }

    async fn get(
        &self,
        req: Request<pb::GetLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let d = ops::get::<Lifecycles>(&self.s, space, &r.id)
            .await
            .map_err(status)?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn create(
        &self,
        req: Request<pb::CreateLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let body = write(r.name, r.description, r.phases);
        let d = ops::create::<Lifecycles>(&self.s, &caller, space, body)
            .await
            .map_err(status)?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let body = write(r.name, r.description, r.phases);
        let d = ops::replace::<Lifecycles>(&self.s, &caller, (space, &r.id), body, Some(r.version))
            .await
            .map_err(status)?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteLifecycleRequest>,
    ) -> Result<Response<pb::DeleteLifecycleReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        ops::delete::<Lifecycles>(&self.s, &caller, (space, &r.id), r.version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteLifecycleReply {}))
    }
}

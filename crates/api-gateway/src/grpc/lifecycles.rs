//! `cuttle.v1.Lifecycles`, through the document operations REST's lifecycles use.

use cuttle_proto::v1 as pb;
use cuttle_proto::v1::lifecycles_server::{Lifecycles as Service, LifecyclesServer};
use cuttle_storage::Document;
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::convert::{caller, status, text, timestamp};
use super::documents as docs;
use crate::resources::documents::DocumentResource;
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
        let all = docs::list::<Lifecycles>(&self.s, &req.get_ref().space).await?;
        let items = all.iter().map(lifecycle).collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListLifecyclesReply { items }))
    }

    async fn get(
        &self,
        req: Request<pb::GetLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let r = req.get_ref();
        let d = docs::get::<Lifecycles>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn create(
        &self,
        req: Request<pb::CreateLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = write(r.name, r.description, r.phases);
        let d = docs::create::<Lifecycles>(&self.s, &caller, &r.space, body).await?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateLifecycleRequest>,
    ) -> Result<Response<pb::Lifecycle>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = write(r.name, r.description, r.phases);
        let at = (&*r.space, &*r.id);
        let d = docs::update::<Lifecycles>(&self.s, &caller, at, (body, r.version)).await?;
        Ok(Response::new(lifecycle(&d)?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteLifecycleRequest>,
    ) -> Result<Response<pb::DeleteLifecycleReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        docs::delete::<Lifecycles>(&self.s, &caller, (&r.space, &r.id), r.version).await?;
        Ok(Response::new(pb::DeleteLifecycleReply {}))
    }
}

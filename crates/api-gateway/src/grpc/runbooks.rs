//! `cuttle.v1.Runbooks`: settings through the document operations, the process, publishing and
//! runs through the operations REST's runbook routes use.

use cuttle_core::plan::Process;
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::runbooks_server::{Runbooks as Service, RunbooksServer};
use cuttle_storage::Document;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, text, timestamp};
use super::documents as docs;
use super::projects::step;
use super::tasks::task;
use crate::resources::documents::DocumentResource;
use crate::resources::runbooks::{publish_runbook, run_runbook, RunWrite, Runbooks};
use crate::scoped::{Need, DEPLOYER, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Runbooks";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Create", OPERATOR),
    ("Update", OPERATOR),
    ("Delete", OPERATOR),
    ("GetProcess", READER),
    ("UpdateProcess", OPERATOR),
    ("Publish", OPERATOR),
    ("Run", DEPLOYER),
];

pub(super) fn server(s: AppState) -> RunbooksServer<RunbooksApi> {
    RunbooksServer::new(RunbooksApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct RunbooksApi {
    s: AppState,
}

fn runbook(d: &Document) -> pb::Runbook {
    let published = d.body.get("published").filter(|p| !p.is_null());
    pb::Runbook {
        id: format!("{}{}", Runbooks::ID_PREFIX, d.id),
        space_id: d.space.clone(),
        name: d.name.clone(),
        project_id: text(&d.body, "project_id"),
        description: text(&d.body, "description"),
        version: d.version,
        created_at: Some(timestamp(d.created_at)),
        modified_at: Some(timestamp(d.modified_at)),
        published_at: published
            .and_then(|p| p["published_at"].as_str())
            .and_then(|t| cuttle_core::parse_time(t).ok())
            .map(timestamp),
        published_by: published
            .map(|p| text(p, "published_by"))
            .unwrap_or_default(),
    }
}

fn process(doc: &Document, p: &Process) -> pb::RunbookProcess {
    pb::RunbookProcess {
        runbook_id: format!("{}{}", Runbooks::ID_PREFIX, doc.id),
        version: doc.version,
        steps: p.steps.iter().map(step).collect(),
    }
}

#[tonic::async_trait]
impl Service for RunbooksApi {
    async fn list(
        &self,
        req: Request<pb::ListRunbooksRequest>,
    ) -> Result<Response<pb::ListRunbooksReply>, Status> {
        let all = docs::list::<Runbooks>(&self.s, &req.get_ref().space).await?;
        Ok(Response::new(pb::ListRunbooksReply {
            items: all.iter().map(runbook).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetRunbookRequest>,
    ) -> Result<Response<pb::Runbook>, Status> {
        let r = req.get_ref();
        let d = docs::get::<Runbooks>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(runbook(&d)))
    }

    async fn create(
        &self,
        req: Request<pb::CreateRunbookRequest>,
    ) -> Result<Response<pb::Runbook>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body =
            json!({"name": r.name, "project_id": r.project_id, "description": r.description});
        let d = docs::create::<Runbooks>(&self.s, &caller, &r.space, body).await?;
        Ok(Response::new(runbook(&d)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRunbookRequest>,
    ) -> Result<Response<pb::Runbook>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body =
            json!({"name": r.name, "project_id": r.project_id, "description": r.description});
        let at = (&*r.space, &*r.id);
        let d = docs::update::<Runbooks>(&self.s, &caller, at, (body, r.version)).await?;
        Ok(Response::new(runbook(&d)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRunbookRequest>,
    ) -> Result<Response<pb::DeleteRunbookReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        docs::delete::<Runbooks>(&self.s, &caller, (&r.space, &r.id), r.version).await?;
        Ok(Response::new(pb::DeleteRunbookReply {}))
    }

    async fn get_process(
        &self,
        req: Request<pb::GetRunbookProcessRequest>,
    ) -> Result<Response<pb::RunbookProcess>, Status> {
        let r = req.get_ref();
        let (doc, p) = docs::process::<Runbooks>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(process(&doc, &p)))
    }

    async fn update_process(
        &self,
        req: Request<pb::UpdateRunbookProcessRequest>,
    ) -> Result<Response<pb::RunbookProcess>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let at = (&*r.space, &*r.id);
        let action = "runbook.process.update";
        let (doc, p) =
            docs::update_process::<Runbooks>(&self.s, &caller, at, (r.steps, r.version), action)
                .await?;
        Ok(Response::new(process(&doc, &p)))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRunbookRequest>,
    ) -> Result<Response<pb::Runbook>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let d = publish_runbook(&self.s, &caller, (space, &r.id))
            .await
            .map_err(status)?;
        Ok(Response::new(runbook(&d)))
    }

    async fn run(&self, req: Request<pb::RunRunbookRequest>) -> Result<Response<pb::Task>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let w = RunWrite {
            environment_id: r.environment_id,
            targets: r.targets,
        };
        let t = run_runbook(&self.s, &caller, (space, &r.id), w)
            .await
            .map_err(status)?;
        Ok(Response::new(task(&t)))
    }
}

//! `cuttle.v1.Deployments`, through the operations REST's deployments use; `Watch` follows the
//! deployment's task and log as the web UI's live log does.

use std::collections::VecDeque;
use std::pin::Pin;

use cuttle_core::TaskState;
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::deployments_server::{Deployments as Service, DeploymentsServer};
use cuttle_storage::DeploymentRecord;
use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, stream_slot, timestamp, timestamp_opt};
use super::tasks::pb_state;
use crate::extract::limit_or_default;
use crate::log_follow::{LogFollow, Step};
use crate::resources::deployments::{
    create_deployment, get_deployment, list_deployments, DeploymentWrite, PREFIX,
};
use crate::resources::documents::DocumentResource;
use crate::resources::projects::{Projects, RELEASE_PREFIX};
use crate::scoped::{Need, DEPLOYER, READER};
use crate::ui::log_sections::step_line;
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Deployments";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("Create", DEPLOYER),
    ("Get", READER),
    ("List", READER),
    ("Watch", READER),
];

pub(super) fn server(s: AppState) -> DeploymentsServer<DeploymentsApi> {
    DeploymentsServer::new(DeploymentsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct DeploymentsApi {
    s: AppState,
}

fn deployment(d: &DeploymentRecord) -> pb::Deployment {
    pb::Deployment {
        id: format!("{PREFIX}{}", d.id),
        space_id: d.space.clone(),
        project_id: format!("{}{}", Projects::ID_PREFIX, d.project),
        release_id: format!("{RELEASE_PREFIX}{}", d.release),
        environment_id: d.environment.clone(),
        task_id: d.task.to_string(),
        state: pb_state(d.state) as i32,
        created_by: d.created_by.clone(),
        created_at: Some(timestamp(d.created_at)),
        completed_at: timestamp_opt(d.completed_at),
    }
}

fn event(e: pb::deployment_event::Event) -> pb::DeploymentEvent {
    pb::DeploymentEvent { event: Some(e) }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::DeploymentEvent, Status>> + Send>>;

/// Where one `Watch` is.
struct Watching {
    log: LogFollow,
    d: DeploymentRecord,
    /// The state last sent.
    sent: TaskState,
    at: u64,
    pending: VecDeque<pb::DeploymentEvent>,
    done: bool,
}

impl Watching {
    /// Queues the deployment when its task's state moved since it was last sent.
    fn note_state(&mut self) {
        if let Some(t) = self.log.task() {
            if t.state != self.sent {
                self.sent = t.state;
                self.d.state = t.state;
                self.d.completed_at = t.completed_at;
                let e = pb::deployment_event::Event::Deployment(deployment(&self.d));
                self.pending.push_back(event(e));
            }
        }
    }
}

#[tonic::async_trait]
impl Service for DeploymentsApi {
    async fn create(
        &self,
        req: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let w = DeploymentWrite {
            release_id: r.release_id,
            environment_id: r.environment_id,
            skip_steps: r.skip_steps,
            targets: r.targets,
        };
        let d = create_deployment(&self.s, &caller, space, &w)
            .await
            .map_err(status)?;
        Ok(Response::new(deployment(&d)))
    }

    async fn get(
        &self,
        req: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let d = get_deployment(&self.s, space, &r.id)
            .await
            .map_err(status)?;
        Ok(Response::new(deployment(&d)))
    }

    async fn list(
        &self,
        req: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsReply>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let limit = limit_or_default(r.limit).map_err(status)?;
        let some = |v: &str| Some(v.to_owned()).filter(|v| !v.trim().is_empty());
        let (found, next) = list_deployments(
            &self.s,
            space,
            some(&r.project_id).as_deref(),
            some(&r.before).as_deref(),
            limit,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(pb::ListDeploymentsReply {
            items: found.iter().map(deployment).collect(),
            next: next.unwrap_or_default(),
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchDeploymentRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        // 404 before any stream starts.
        let d = get_deployment(&self.s, space, &r.id)
            .await
            .map_err(status)?;
        let slot = stream_slot(&self.s, &caller.actor())?;
        let first = event(pb::deployment_event::Event::Deployment(deployment(&d)));
        let w = Watching {
            log: LogFollow::start(&self.s, d.task, r.log_offset, slot),
            sent: d.state,
            d,
            at: r.log_offset,
            pending: VecDeque::from([first]),
            done: false,
        };
        let s = self.s.clone();
        let events = futures_util::stream::unfold(w, move |mut w| {
            let s = s.clone();
            async move {
                loop {
                    if let Some(e) = w.pending.pop_front() {
                        return Some((Ok(e), w));
                    }
                    if w.done {
                        return None;
                    }
                    w.note_state();
                    if !w.pending.is_empty() {
                        continue;
                    }
                    match w.log.next(&s).await {
                        Step::Text { text, end_at } => {
                            for line in text.lines() {
                                if let Some((number, name, status)) = step_line(line) {
                                    let p = pb::StepProgress {
                                        number,
                                        name,
                                        status: status.to_owned(),
                                    };
                                    w.pending
                                        .push_back(event(pb::deployment_event::Event::Step(p)));
                                }
                            }
                            let chunk = pb::LogChunk {
                                text,
                                offset: w.at,
                                end_offset: end_at,
                            };
                            w.at = end_at;
                            w.pending
                                .push_back(event(pb::deployment_event::Event::Log(chunk)));
                        }
                        Step::Quiet => {}
                        Step::Ended => {
                            // How it ended, if that was not sent yet.
                            w.note_state();
                            w.done = true;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(events)))
    }
}

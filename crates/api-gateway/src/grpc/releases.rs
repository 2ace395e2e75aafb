//! `cuttle.v1.Releases`, through the operations REST's releases use.

use cuttle_core::plan::{Process, StoredVariable};
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::releases_server::{Releases as Service, ReleasesServer};
use cuttle_storage::Release;
use tonic::{Request, Response, Status};

use super::convert::{caller, required, status, timestamp};
use super::projects::{step, variable};
use crate::error::ApiError;
use crate::resources::documents::DocumentResource;
use crate::resources::projects::{
    create_release, get_release, list_releases, Projects, ReleaseWrite, RELEASE_PREFIX,
};
use crate::scoped::{Need, DEPLOYER, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Releases";

pub(super) const NEEDS: &[(&str, Need)] =
    &[("Create", DEPLOYER), ("List", READER), ("Get", READER)];

pub(super) fn server(s: AppState) -> ReleasesServer<ReleasesApi> {
    ReleasesServer::new(ReleasesApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct ReleasesApi {
    s: AppState,
}

/// A release; with its process and variables (as they were) when `whole`. A snapshot that
/// cannot be read is an error, never shown as empty.
fn release(r: &Release, whole: bool) -> Result<pb::Release, Status> {
    let unreadable = |e: serde_json::Error| {
        tracing::error!(release = r.id, error = %e, "release snapshot unreadable");
        status(ApiError::new(
            cuttle_core::ErrorCode::Internal,
            format!("release {RELEASE_PREFIX}{} cannot be read: {e}", r.id),
        ))
    };
    let (steps, variables) = if whole {
        let process: Process = match r.snapshot.get("process") {
            Some(p) => serde_json::from_value(p.clone()).map_err(unreadable)?,
            None => Process::default(),
        };
        let vars: Vec<StoredVariable> = match r.snapshot.get("variables") {
            Some(v) => serde_json::from_value(v.clone()).map_err(unreadable)?,
            None => Vec::new(),
        };
        (
            process.steps.iter().map(step).collect(),
            vars.iter().map(variable).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut packages = std::collections::HashMap::new();
    if let Some(map) = r.snapshot.get("packages").and_then(|p| p.as_object()) {
        for (step_name, p) in map {
            let field = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            packages.insert(
                step_name.clone(),
                pb::ReleasePackage {
                    package_id: field("package_id"),
                    version: field("version"),
                    sha256: field("sha256"),
                },
            );
        }
    }
    Ok(pb::Release {
        id: format!("{RELEASE_PREFIX}{}", r.id),
        project_id: format!("{}{}", Projects::ID_PREFIX, r.project),
        space_id: r.space.clone(),
        version: r.version.clone(),
        notes: r.notes.clone(),
        created_by: r.created_by.clone(),
        created_at: Some(timestamp(r.created_at)),
        steps,
        packages,
        variables,
    })
}

#[tonic::async_trait]
impl Service for ReleasesApi {
    async fn create(
        &self,
        req: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let w = ReleaseWrite {
            version: r.version,
            notes: r.notes,
            packages: r.packages.into_iter().collect(),
        };
        let made = create_release(&self.s, &caller, space, &r.project_id, &w)
            .await
            .map_err(status)?;
        Ok(Response::new(release(&made, true)?))
    }

    async fn list(
        &self,
        req: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesReply>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let all = list_releases(&self.s, (space, &r.project_id))
            .await
            .map_err(status)?;
        let items = all
            .iter()
            .map(|r| release(r, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListReleasesReply { items }))
    }

    async fn get(
        &self,
        req: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let found = get_release(&self.s, (space, &r.id)).await.map_err(status)?;
        Ok(Response::new(release(&found, true)?))
    }
}

//! `/api/spaces/{space}/deployments`: a release going to an environment. Creating one checks
//! the project's lifecycle (409 naming the phase that must succeed first) and queues a `Deploy`
//! task with the concurrency tag `{project}/{environment}`, so two deployments of one project to
//! one environment never overlap, on any node. A deployment's state is its task's. The
//! dashboard gives each project's latest deployment to each environment.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::plan::{check_promotion, effective_phases, PhaseSpec, PromotionError};
use cuttle_core::{format_rfc3339_ms, DeployArgs, ErrorCode, NewTask, TaskKind, TaskState};
use cuttle_storage::{Audit, DeploymentFilter, DeploymentRecord, Document, NewDeployment};
use serde::Deserialize;
use serde_json::{json, Value};

use super::documents::{doc_number, resolve_space, space_id, DocumentResource};
use super::environments::{Environments, ENVIRONMENT};
use super::lifecycles::{Lifecycles, LIFECYCLE};
use super::projects::{Projects, PROJECT};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{parse_limit, ApiResult, JsonBody, Page, PathParams, QueryMap};
use crate::openapi::{schemas, Op};
use crate::scoped::{Api, DEPLOYER, READER};
use crate::AppState;

pub(crate) const PREFIX: &str = "Deployments-";
const RELEASE_PREFIX: &str = "Releases-";

pub(crate) fn routes() -> Api {
    Api::new()
        .post(
            "/api/spaces/{space}/deployments",
            DEPLOYER,
            create,
            Op::new("createDeployment", "Deploys a release to an environment")
                .body(|g| g.request::<DeploymentWrite>())
                .created("the deployment, its `Deploy` task queued", schemas::deployment)
                .refuses(409, "the lifecycle does not allow this environment yet (the message names the phase)")
                .link("get", "getDeployment", &[("space", "$request.path.space"), ("id", "$response.body#/id")])
                .link("task", "getTask", &[("id", "$response.body#/task_id")]),
        )
        .get(
            "/api/spaces/{space}/deployments",
            READER,
            list,
            Op::new("listDeployments", "A space's deployments, newest first")
                .query("project_id", serde_json::json!({"type": "string"}), "only this project's")
                .query("limit", schemas::limit(), "at most this many (default 100)")
                .query("before", serde_json::json!({"type": "string"}), "the `next` of the previous page")
                .ok("a page of deployments", schemas::deployments),
        )
        .get(
            "/api/spaces/{space}/deployments/{id}",
            READER,
            get_one,
            Op::new("getDeployment", "One deployment").ok("the deployment", schemas::deployment),
        )
        .get(
            "/api/spaces/{space}/dashboard",
            READER,
            dashboard,
            Op::new("getDashboard", "Per project and environment, the latest deployment")
                .ok("the space's dashboard", schemas::dashboard),
        )
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeploymentWrite {
    pub(crate) release_id: String,
    pub(crate) environment_id: String,
    #[serde(default)]
    pub(crate) skip_steps: Vec<String>,
    #[serde(default)]
    pub(crate) targets: Vec<String>,
}

fn shown(d: &DeploymentRecord) -> Value {
    json!({
        "id": format!("{PREFIX}{}", d.id),
        "space_id": d.space,
        "project_id": format!("{}{}", Projects::ID_PREFIX, d.project),
        "release_id": format!("{RELEASE_PREFIX}{}", d.release),
        "environment_id": d.environment,
        "task_id": d.task.to_string(),
        "state": d.state.as_str(),
        "created_by": d.created_by,
        "created_at": format_rfc3339_ms(d.created_at),
        "completed_at": d.completed_at.map(format_rfc3339_ms),
    })
}

/// The phases a project's releases go through: its lifecycle's, or one per environment.
pub(crate) async fn phases(
    s: &AppState,
    space: &Document,
    project: &Document,
) -> Result<Vec<PhaseSpec>, ApiError> {
    let sid = space_id(space);
    let environments: Vec<(String, String)> = s
        .store
        .list_documents(&sid, ENVIRONMENT)
        .await?
        .into_iter()
        .map(|d| (format!("{}{}", Environments::ID_PREFIX, d.id), d.name))
        .collect();
    let own = match project.body.get("lifecycle_id").and_then(Value::as_str) {
        None => Vec::new(),
        Some(id) => {
            let n = doc_number::<Lifecycles>(id)?;
            let lifecycle = s
                .store
                .get_document(&sid, LIFECYCLE, n)
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        format!("the project's lifecycle {id} no longer exists"),
                    )
                })?;
            Lifecycles::phases_of(&lifecycle)?
                .into_iter()
                .map(|p| PhaseSpec {
                    name: p.name,
                    environments: p.environments,
                    minimum: p.minimum_environments_before_promotion,
                    optional: p.optional,
                })
                .collect()
        }
    };
    Ok(effective_phases(&own, &environments))
}

async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(space): PathParams<String>,
    JsonBody(w): JsonBody<DeploymentWrite>,
) -> ApiResult {
    let deployment = create_deployment(&s, &caller, &space, &w).await?;
    Ok((StatusCode::CREATED, Json(shown(&deployment))).into_response())
}

/// Queues a deployment of a release to an environment once the project's lifecycle allows it
/// (409 naming the phase that must succeed first otherwise), with its audit event. The API's
/// and the web UI's one way to deploy.
pub(crate) async fn create_deployment(
    s: &AppState,
    caller: &Caller,
    space: &str,
    w: &DeploymentWrite,
) -> Result<DeploymentRecord, ApiError> {
    let space = resolve_space(s, space).await?;
    let sid = space_id(&space);
    let release_n = w
        .release_id
        .strip_prefix(RELEASE_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "release_id: {:?} is not a release id",
                w.release_id
            ))
        })?;
    let release = s.store.get_release(&sid, release_n).await?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "release_id: no release {} in this space",
            w.release_id
        ))
    })?;
    let env_n = doc_number::<Environments>(&w.environment_id).map_err(|_| {
        ApiError::bad_request(format!(
            "environment_id: {:?} is not an environment id",
            w.environment_id
        ))
    })?;
    let environment = s
        .store
        .get_document(&sid, ENVIRONMENT, env_n)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "environment_id: no environment {} in this space",
                w.environment_id
            ))
        })?;
    let project = s
        .store
        .get_document(&sid, PROJECT, release.project)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                "the release's project no longer exists",
            )
        })?;
    // The release's own steps: skipping one it does not have is a mistake worth saying.
    let steps: Vec<String> = release.snapshot["process"]["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(unknown) = w
        .skip_steps
        .iter()
        .find(|n| !steps.iter().any(|s| s.eq_ignore_ascii_case(n)))
    {
        return Err(ApiError::bad_request(format!(
            "skip_steps: the release has no step {unknown:?}"
        )));
    }
    if !w.targets.is_empty() {
        let known: HashSet<String> = s
            .store
            .list_targets(None, s.config.offline_after)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        if let Some(unknown) = w.targets.iter().find(|t| !known.contains(*t)) {
            return Err(ApiError::bad_request(format!(
                "targets: no target named {unknown:?}"
            )));
        }
    }
    // The lifecycle: every required phase before this environment's has succeeded.
    let succeeded: HashSet<String> = s
        .store
        .list_deployments(DeploymentFilter::Release(release.id))
        .await?
        .into_iter()
        .filter(|d| d.state == TaskState::Success)
        .map(|d| d.environment)
        .collect();
    let phases = phases(s, &space, &project).await?;
    if let Err(e) = check_promotion(&phases, &w.environment_id, &succeeded) {
        let why = match e {
            PromotionError::NotInLifecycle => format!(
                "environment {:?} is not in the lifecycle of project {:?}",
                environment.name, project.name
            ),
            other => format!(
                "release {} cannot go to {:?} yet: {other}",
                release.version, environment.name
            ),
        };
        return Err(ApiError::new(ErrorCode::Conflict, why));
    }
    let project_id = format!("{}{}", Projects::ID_PREFIX, project.id);
    let task = NewTask {
        kind: TaskKind::Deploy(DeployArgs {
            space: sid.clone(),
            release: release.id,
            environment: w.environment_id.clone(),
            skip_steps: w.skip_steps.clone(),
            targets: w.targets.clone(),
        }),
        description: format!(
            "Deploy {} release {} to {}",
            project.name, release.version, environment.name
        ),
        // Two deployments of one project to one environment never overlap, on any node.
        concurrency_tag: Some(format!("{project_id}/{}", w.environment_id)),
    };
    let by = caller.clone();
    let details = json!({
        "project": project_id, "release": w.release_id, "environment": w.environment_id,
    });
    let audit: Audit<cuttle_core::TaskRecord> =
        Box::new(move |t| by.event("deployment.create", t.id, details.clone()));
    let actor = caller.actor();
    let (_, id) = s
        .store
        .enqueue_deployment(
            &task,
            &NewDeployment {
                space: &sid,
                project: project.id,
                release: release.id,
                environment: &w.environment_id,
                created_by: &actor,
            },
            Some(audit),
        )
        .await?;
    s.waker.enqueued();
    let deployment = s
        .store
        .get_deployment(&sid, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no deployment {PREFIX}{id}")))?;
    tracing::info!(deployment = %format!("{PREFIX}{id}"), task = %deployment.task, by = %caller.name, "deployment queued");
    Ok(deployment)
}

async fn list(
    State(s): State<AppState>,
    PathParams(space): PathParams<String>,
    q: QueryMap,
) -> ApiResult {
    let q = q.only(&["project_id", "limit", "before"])?;
    let limit = parse_limit(q.get("limit"))?;
    let (found, next) = list_deployments(
        &s,
        &space,
        q.get("project_id").map(String::as_str),
        q.get("before").map(String::as_str),
        limit,
    )
    .await?;
    let items: Vec<Value> = found.iter().map(shown).collect();
    Ok(Json(Page { items, next }).into_response())
}

/// A page of a space's deployments (of one project, when named), newest first, and where the
/// following page starts when this one is full.
pub(crate) async fn list_deployments(
    s: &AppState,
    space: &str,
    project_id: Option<&str>,
    before: Option<&str>,
    limit: u32,
) -> Result<(Vec<DeploymentRecord>, Option<String>), ApiError> {
    let space = resolve_space(s, space).await?;
    let project = project_id
        .map(|p| {
            doc_number::<Projects>(p).map_err(|_| {
                ApiError::bad_request(format!("project_id: {p:?} is not a project id"))
            })
        })
        .transpose()?;
    let before = before
        .map(|b| {
            b.strip_prefix(PREFIX)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("before: {b:?} is not a deployment id"))
                })
        })
        .transpose()?;
    let found = s
        .store
        .list_deployments(DeploymentFilter::Space {
            space: &space_id(&space),
            project,
            before,
            limit,
        })
        .await?;
    // A full page may have more behind it: `next` is where the following page starts.
    let next = (found.len() == limit as usize)
        .then(|| found.last().map(|d| format!("{PREFIX}{}", d.id)))
        .flatten();
    Ok((found, next))
}

async fn get_one(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    Ok(Json(shown(&get_deployment(&s, &space, &raw).await?)).into_response())
}

/// One deployment, by the space and id as the client named them.
pub(crate) async fn get_deployment(
    s: &AppState,
    space: &str,
    raw: &str,
) -> Result<DeploymentRecord, ApiError> {
    let space = resolve_space(s, space).await?;
    let missing = || ApiError::not_found(format!("no deployment {raw}"));
    let id = raw
        .strip_prefix(PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(missing)?;
    s.store
        .get_deployment(&space_id(&space), id)
        .await?
        .ok_or_else(missing)
}

/// Deployments the dashboard looks at: the newest this many of the space.
const DASHBOARD_DEPTH: u32 = 1000;

/// Per project and environment, the latest deployment and its state.
/// What a space's dashboard shows: its projects and environments in order, and for each pair
/// the latest deployment with its release's version. The API's and the web UI's one source.
pub(crate) struct Dashboard {
    pub(crate) projects: Vec<cuttle_storage::Document>,
    pub(crate) environments: Vec<cuttle_storage::Document>,
    /// (project number, environment id) → the latest deployment and its release's version.
    pub(crate) latest: BTreeMap<(i64, String), (DeploymentRecord, Option<String>)>,
}

pub(crate) async fn dashboard_of(s: &AppState, sid: &str) -> Result<Dashboard, ApiError> {
    let projects = s.store.list_documents(sid, PROJECT).await?;
    let environments = s.store.list_documents(sid, ENVIRONMENT).await?;
    let deployments = s
        .store
        .list_deployments(DeploymentFilter::Space {
            space: sid,
            project: None,
            before: None,
            limit: DASHBOARD_DEPTH,
        })
        .await?;
    let mut latest: BTreeMap<(i64, String), (DeploymentRecord, Option<String>)> = BTreeMap::new();
    let mut versions: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for d in deployments {
        let key = (d.project, d.environment.clone());
        if latest.contains_key(&key) {
            continue;
        }
        let version = match versions.get(&d.release) {
            Some(v) => v.clone(),
            None => {
                let v = s
                    .store
                    .get_release(sid, d.release)
                    .await?
                    .map(|r| r.version);
                versions.insert(d.release, v.clone());
                v
            }
        };
        latest.insert(key, (d, version));
    }
    Ok(Dashboard {
        projects,
        environments,
        latest,
    })
}

async fn dashboard(State(s): State<AppState>, PathParams(space): PathParams<String>) -> ApiResult {
    let space = resolve_space(&s, &space).await?;
    let sid = space_id(&space);
    let Dashboard {
        projects,
        environments,
        latest,
    } = dashboard_of(&s, &sid).await?;
    let cells: Vec<Value> = latest
        .values()
        .map(|(d, version)| {
            let mut v = shown(d);
            v["release_version"] = json!(version);
            v
        })
        .collect();
    Ok(Json(json!({
        "projects": projects.iter().map(|p| json!({"id": format!("{}{}", Projects::ID_PREFIX, p.id), "name": p.name})).collect::<Vec<_>>(),
        "environments": environments.iter().map(|e| json!({"id": format!("{}{}", Environments::ID_PREFIX, e.id), "name": e.name})).collect::<Vec<_>>(),
        "items": cells,
    }))
    .into_response())
}

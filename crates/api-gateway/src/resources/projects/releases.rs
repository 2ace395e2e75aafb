//! Releases: `POST/GET /api/spaces/{space}/projects/{id}/releases`, `GET
//! /api/spaces/{space}/releases/{id}`. A release is a SemVer version of a project with its
//! process and variables as they were when it was made: editing the project afterwards never
//! changes what the release deploys. Sensitive values stay encrypted in the snapshot and are
//! never shown.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{format_rfc3339_ms, SemVer};
use cuttle_storage::{Audit, NewRelease, Release};
use serde::Deserialize;
use serde_json::{json, Value};

use super::variables::{shown_variables, variables_of};
use super::{project, Projects};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};
use crate::openapi::{schemas, Op};
use crate::resources::documents::{resolve_space, space_id, DocumentResource};
use crate::resources::process_part::process_of;
use crate::scoped::{Api, DEPLOYER, READER};
use crate::AppState;

pub(crate) const RELEASE_PREFIX: &str = "Releases-";
const MAX_NOTES: usize = 10_000;

pub(crate) fn routes() -> Api {
    Api::new()
        .post(
            "/api/spaces/{space}/projects/{id}/releases",
            DEPLOYER,
            create,
            Op::new(
                "createRelease",
                "Makes a release of a project: its process and variables as they are",
            )
            .body(|g| g.request::<ReleaseWrite>())
            .created("the release", schemas::release)
            .refuses(409, "the project has this version")
            .link(
                "get",
                "getRelease",
                &[
                    ("space", "$request.path.space"),
                    ("id", "$response.body#/id"),
                ],
            ),
        )
        .get(
            "/api/spaces/{space}/projects/{id}/releases",
            READER,
            list,
            Op::new("listReleases", "A project's releases, newest version first").ok(
                "its releases, without their process and variables",
                schemas::releases,
            ),
        )
        .get(
            "/api/spaces/{space}/releases/{id}",
            READER,
            get_one,
            Op::new("getRelease", "One release").ok("the release", schemas::release),
        )
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseWrite {
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) notes: String,
    /// Package versions by step name, for package steps that should not take the version the
    /// step names (or the newest).
    #[serde(default)]
    pub(crate) packages: std::collections::BTreeMap<String, String>,
}

/// The package version each package step of `process` deploys: the one asked for, else the one
/// the step names, else the newest in the repository. 400 naming the step when there is none.
async fn choose_packages(
    s: &AppState,
    space: &str,
    process: &cuttle_core::plan::Process,
    asked: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    use cuttle_core::plan::Action;
    let mut chosen = serde_json::Map::new();
    for step in asked.keys() {
        let is_package_step = process
            .steps
            .iter()
            .any(|st| st.name == *step && matches!(st.action, Action::DeployPackage { .. }));
        if !is_package_step {
            return Err(ApiError::bad_request(format!(
                "packages: the process has no package step named {step:?}"
            )));
        }
    }
    for step in &process.steps {
        let Action::DeployPackage {
            package_id,
            version,
            ..
        } = &step.action
        else {
            continue;
        };
        let wanted = asked.get(&step.name).or(version.as_ref());
        let found = match wanted {
            Some(v) => {
                let parsed = cuttle_core::parse_package_version(v).map_err(|e| {
                    ApiError::bad_request(format!("packages.{}: {}", step.name, e.0))
                })?;
                s.store
                    .get_package(
                        space,
                        package_id,
                        &cuttle_core::package_version_key(&parsed),
                    )
                    .await?
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "step {:?}: package {package_id} version {v} is not in the repository",
                            step.name
                        ))
                    })?
            }
            None => cuttle_storage::newest_package(
                s.store.list_packages(Some(space), Some(package_id)).await?,
            )
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "step {:?}: the repository has no package {package_id}; upload one first",
                    step.name
                ))
            })?,
        };
        chosen.insert(
            step.name.clone(),
            json!({"package_id": found.package_id, "version": found.version, "sha256": found.sha256}),
        );
    }
    Ok(chosen)
}

/// A release as shown: its snapshot's process, and its variables without sensitive values. A
/// snapshot that cannot be read is an error, never shown as empty.
pub(crate) fn shown(r: &Release) -> Result<Value, ApiError> {
    let stored: Vec<cuttle_core::plan::StoredVariable> = serde_json::from_value(
        r.snapshot.get("variables").cloned().unwrap_or(json!([])),
    )
    .map_err(|e| {
        tracing::error!(release = r.id, error = %e, "release snapshot unreadable");
        ApiError::new(
            cuttle_core::ErrorCode::Internal,
            format!("release {RELEASE_PREFIX}{} cannot be read: {e}", r.id),
        )
    })?;
    let variables = shown_variables(&stored);
    Ok(json!({
        "id": format!("{RELEASE_PREFIX}{}", r.id),
        "project_id": format!("{}{}", Projects::ID_PREFIX, r.project),
        "space_id": r.space,
        "version": r.version,
        "notes": r.notes,
        "created_by": r.created_by,
        "created_at": format_rfc3339_ms(r.created_at),
        "process": r.snapshot.get("process").cloned().unwrap_or(json!({"steps": []})),
        "packages": r.snapshot.get("packages").cloned().unwrap_or(json!({})),
        "variables": variables,
    }))
}

/// In a list: the release without its snapshot.
fn summary(r: &Release) -> Result<Value, ApiError> {
    let mut v = shown(r)?;
    if let Value::Object(m) = &mut v {
        m.remove("process");
        m.remove("variables");
    }
    Ok(v)
}

async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    JsonBody(w): JsonBody<ReleaseWrite>,
) -> ApiResult {
    let release = create_release(&s, &caller, &space, &raw, &w).await?;
    Ok((StatusCode::CREATED, Json(shown(&release)?)).into_response())
}

/// Makes a release of a project: its process and variables frozen, each package step's version
/// chosen, with its audit event; then the project's release retention. The API's and the web
/// UI's one way to make a release.
pub(crate) async fn create_release(
    s: &AppState,
    caller: &Caller,
    space: &str,
    raw: &str,
    w: &ReleaseWrite,
) -> Result<Release, ApiError> {
    let space = resolve_space(s, space).await?;
    let version: SemVer = w
        .version
        .parse()
        .map_err(|e: cuttle_core::ValidationError| {
            ApiError::bad_request(format!("version: {}", e.0))
        })?;
    if w.notes.chars().count() > MAX_NOTES {
        return Err(ApiError::bad_request(format!(
            "notes: at most {MAX_NOTES} characters"
        )));
    }
    let doc = project(s, &space, raw).await?;
    // Read (and so checked) before it is frozen: a release never holds what cannot be read.
    let process = process_of(&doc)?;
    let variables = variables_of(&doc)?;
    let packages = choose_packages(s, &space_id(&space), &process, &w.packages).await?;
    let snapshot = json!({
        "packages": packages,
        "project_name": doc.name,
        "project_version": doc.version,
        "lifecycle_id": doc.body.get("lifecycle_id").cloned().unwrap_or(Value::Null),
        "process": process,
        "variables": variables,
    });
    let version = version.to_string();
    let by = caller.clone();
    let audit: Audit<Release> = Box::new(move |r| {
        by.event(
            "release.create",
            format!("{RELEASE_PREFIX}{}", r.id),
            json!({"project": format!("{}{}", Projects::ID_PREFIX, r.project), "version": r.version}),
        )
    });
    let created_by = caller.actor();
    let release = s
        .store
        .create_release(
            &NewRelease {
                space: &space_id(&space),
                project: doc.id,
                version: &version,
                notes: &w.notes,
                snapshot: &snapshot,
                created_by: &created_by,
            },
            Some(audit),
        )
        .await?;
    // Retention runs after the release is made: a failure to prune is logged, not the caller's.
    if let Err(e) = retain(s, caller, &space_id(&space), &doc).await {
        tracing::warn!(project = %doc.name, error = ?e, "apply release retention");
    }
    Ok(release)
}

/// Keeps the project's newest `retention.releases_to_keep` releases (0: all), and any older one
/// a deployment still needs: one queued or running, and each environment's latest and latest
/// successful deployment (what is there now, and what a redeploy would restore).
async fn retain(
    s: &AppState,
    caller: &Caller,
    space: &str,
    project: &cuttle_storage::Document,
) -> Result<(), ApiError> {
    let keep = project.body["retention"]["releases_to_keep"]
        .as_u64()
        .unwrap_or(0) as usize;
    if keep == 0 {
        return Ok(());
    }
    let releases = s.store.list_releases(project.id).await?;
    if releases.len() <= keep {
        return Ok(());
    }
    // Every deployment, not the newest page: one still running of an old release keeps it.
    let deployments = s.store.all_deployments_of(space, project.id).await?;
    let facts: Vec<_> = deployments
        .iter()
        .map(cuttle_storage::DeploymentRecord::facts)
        .collect();
    let in_use = cuttle_core::retention::releases_in_use(&facts);
    let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
    let gone = cuttle_core::retention::releases_to_remove(&ids, keep, &in_use);
    for r in releases.iter().filter(|r| gone.contains(&r.id)) {
        let audit = cuttle_storage::audit_as(caller.event(
            "release.delete",
            format!("{RELEASE_PREFIX}{}", r.id),
            json!({"version": r.version, "reason": format!("retention: keep {keep}")}),
        ));
        if s.store.delete_release(space, r.id, Some(audit)).await? {
            tracing::info!(release = %r.version, project = %project.name, "release removed by retention");
        }
    }
    Ok(())
}

async fn list(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let releases = list_releases(&s, (&space, &raw)).await?;
    let items = releases
        .iter()
        .map(summary)
        .collect::<Result<Vec<Value>, _>>()?;
    Ok(Json(Page::all(items)).into_response())
}

/// A project's releases, newest version first (SemVer precedence).
pub(crate) async fn list_releases(
    s: &AppState,
    (space, raw): (&str, &str),
) -> Result<Vec<Release>, ApiError> {
    let space = resolve_space(s, space).await?;
    let doc = project(s, &space, raw).await?;
    let mut releases = s.store.list_releases(doc.id).await?;
    // Newest version first, by SemVer precedence (a stored version always parses).
    releases.sort_by(
        |a, b| match (a.version.parse::<SemVer>(), b.version.parse::<SemVer>()) {
            (Ok(x), Ok(y)) => y.precedence(&x).then(b.id.cmp(&a.id)),
            _ => b.id.cmp(&a.id),
        },
    );
    Ok(releases)
}

async fn get_one(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let release = get_release(&s, (&space, &raw)).await?;
    Ok(Json(shown(&release)?).into_response())
}

/// One release, by the space and id as the client named them.
pub(crate) async fn get_release(
    s: &AppState,
    (space, raw): (&str, &str),
) -> Result<Release, ApiError> {
    let space = resolve_space(s, space).await?;
    let missing = || ApiError::not_found(format!("no release {raw}"));
    let id = raw
        .strip_prefix(RELEASE_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(missing)?;
    s.store
        .get_release(&space_id(&space), id)
        .await?
        .ok_or_else(missing)
}

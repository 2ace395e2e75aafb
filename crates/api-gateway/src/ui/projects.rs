//! Projects: the list, and a project's page (its process steps, its variables with sensitive
//! values masked, its releases with where each has gone), with the forms that make a release
//! and deploy one. Both forms go through the API's own operations (`create_release`,
//! `create_deployment`), so the lifecycle is honoured the same way: a refusal comes back to the
//! page as a message.

use std::collections::{BTreeMap, HashSet};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use cuttle_core::plan::{check_promotion, Action, PromotionError};
use cuttle_core::{format_rfc3339_ms, SemVer, TaskState};
use cuttle_storage::{DeploymentFilter, Document};
use serde::Deserialize;

use super::{encode, html, SignedForm, Who};
use crate::error::ApiError;
use crate::resources::deployments::{create_deployment, phases, DeploymentWrite};
use crate::resources::documents::{resolve_space, space_id, DocumentResource};
use crate::resources::environments::Environments;
use crate::resources::lifecycles::Lifecycles;
use crate::resources::process_part::process_of;
use crate::resources::projects::{
    create_release, project, variables_of, Projects, ReleaseWrite, PROJECT, RELEASE_PREFIX,
};
use crate::AppState;

/// The space the pages show (its id is Spaces-1 in every cluster).
pub(super) const SPACE: &str = "Spaces-1";
/// Releases a project page lists (the newest).
const RELEASES_SHOWN: usize = 20;

struct ProjectRow {
    id: String,
    name: String,
    lifecycle: String,
    releases: usize,
}

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    who: Option<Who>,
    projects: Vec<ProjectRow>,
}

/// The id (`Environments-3`) of a document of resource `R`.
pub(super) fn id_of<R: DocumentResource>(d: &Document) -> String {
    format!("{}{}", R::ID_PREFIX, d.id)
}

/// Names of a space's documents of resource `R`, by id.
pub(super) async fn names<R: DocumentResource>(
    s: &AppState,
    sid: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    Ok(s.store
        .list_documents(sid, R::KIND)
        .await?
        .into_iter()
        .map(|d| (id_of::<R>(&d), d.name))
        .collect())
}

/// The name a list of `(id, name)` gives an id, or the id itself.
pub(super) fn name_of(names: &[(String, String)], id: &str) -> String {
    names
        .iter()
        .find(|(i, _)| i == id)
        .map_or_else(|| id.to_owned(), |(_, n)| n.clone())
}

fn lifecycle_name(doc: &Document, lifecycles: &[(String, String)]) -> String {
    doc.body
        .get("lifecycle_id")
        .and_then(|v| v.as_str())
        .map_or_else(
            || "Default (one phase per environment)".to_owned(),
            |id| name_of(lifecycles, id),
        )
}

pub(super) async fn list(State(s): State<AppState>, who: Who) -> Response {
    let found = async {
        let lifecycles = names::<Lifecycles>(&s, SPACE).await?;
        let mut rows = Vec::new();
        for p in s.store.list_documents(SPACE, PROJECT).await? {
            rows.push(ProjectRow {
                id: id_of::<Projects>(&p),
                lifecycle: lifecycle_name(&p, &lifecycles),
                releases: s.store.list_releases(p.id).await?.len(),
                name: p.name,
            });
        }
        Ok::<_, ApiError>(rows)
    };
    match found.await {
        Ok(projects) => html(
            StatusCode::OK,
            &ProjectsPage {
                who: Some(who),
                projects,
            },
        ),
        Err(e) => e.into_response(),
    }
}

struct StepRow {
    number: usize,
    name: String,
    action: String,
    runs_on: String,
    environments: String,
    enabled: bool,
}

struct VariableRow {
    name: String,
    /// `None`: sensitive, never shown.
    value: Option<String>,
    scope: String,
}

/// An environment a release may be sent to, and why not yet if it may not.
struct Destination {
    id: String,
    name: String,
    refusal: Option<String>,
    /// The one offered first: the earliest environment open to the release and not yet
    /// deployed to successfully (the next promotion).
    suggested: bool,
}

/// Marks the next promotion among a release's destinations.
fn suggest(mut destinations: Vec<Destination>, succeeded: &HashSet<String>) -> Vec<Destination> {
    if let Some(d) = destinations
        .iter_mut()
        .find(|d| d.refusal.is_none() && !succeeded.contains(&d.id))
    {
        d.suggested = true;
    }
    destinations
}

struct ReleaseRow {
    id: String,
    version: String,
    notes: String,
    created_by: String,
    created_at: String,
    /// Per environment of the lifecycle, in order: the latest deployment's state and task.
    deployments: Vec<(String, Option<(String, String)>)>,
    destinations: Vec<Destination>,
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    who: Option<Who>,
    id: String,
    name: String,
    description: String,
    lifecycle: String,
    steps: Vec<StepRow>,
    variables: Vec<VariableRow>,
    releases: Vec<ReleaseRow>,
    more_releases: usize,
    next_version: String,
    message: Option<String>,
    may_deploy: bool,
    csrf: String,
}

#[derive(Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    seal: Option<String>,
}

fn join_or(items: Vec<String>, none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

/// The version a new release would most likely take: the newest one's next patch.
fn next_version(versions: &[String]) -> String {
    versions
        .iter()
        .filter_map(|v| v.parse::<SemVer>().ok())
        .max_by(|a, b| a.precedence(b))
        .map_or_else(
            || "1.0.0".to_owned(),
            // A pre-release's next is its own release; a release's, the next patch.
            |v| {
                let patch = if v.pre.is_empty() {
                    v.patch + 1
                } else {
                    v.patch
                };
                format!("{}.{}.{patch}", v.major, v.minor)
            },
        )
}

async fn project_page(s: &AppState, who: Who, raw: &str, message: Option<String>) -> Response {
    match build_page(s, &who, raw).await {
        Ok(mut page) => {
            page.message = message;
            page.who = Some(who);
            html(StatusCode::OK, &page)
        }
        Err(e) => e.into_response(),
    }
}

async fn build_page(s: &AppState, who: &Who, raw: &str) -> Result<ProjectPage, ApiError> {
    let space = resolve_space(s, SPACE).await?;
    let sid = space_id(&space);
    let doc = project(s, &space, raw).await?;
    let environments = names::<Environments>(s, &sid).await?;
    let lifecycles = names::<Lifecycles>(s, &sid).await?;
    let process = process_of(&doc)?;
    let steps = process
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| StepRow {
            number: i + 1,
            name: st.name.clone(),
            action: match &st.action {
                Action::Script { shell, .. } => format!("Run a script ({shell})"),
                Action::DeployPackage {
                    package_id,
                    version,
                    ..
                } => format!(
                    "Deploy package {package_id}{}",
                    version
                        .as_ref()
                        .map_or_else(String::new, |v| format!(" {v}"))
                ),
            },
            runs_on: if st.target_roles.is_empty() {
                "the node running the deployment".to_owned()
            } else {
                format!("targets with role {}", st.target_roles.join(" or "))
            },
            environments: join_or(
                st.environments
                    .iter()
                    .map(|e| name_of(&environments, e))
                    .collect(),
                "all",
            ),
            enabled: st.enabled,
        })
        .collect();
    let variables = variables_of(&doc)?
        .into_iter()
        .map(|v| {
            let mut scope: Vec<String> = v
                .scope
                .environments
                .iter()
                .map(|e| name_of(&environments, e))
                .collect();
            scope.extend(v.scope.roles.iter().map(|r| format!("role {r}")));
            scope.extend(v.scope.targets.iter().map(|t| format!("target {t}")));
            VariableRow {
                name: v.name,
                value: if v.sensitive { None } else { v.value },
                scope: join_or(scope, "everywhere"),
            }
        })
        .collect();
    let phases = phases(s, &space, &doc).await?;
    let lifecycle_envs: Vec<String> = phases
        .iter()
        .flat_map(|p| p.environments.iter().cloned())
        .collect();
    let mut releases = s.store.list_releases(doc.id).await?;
    releases.sort_by(
        |a, b| match (a.version.parse::<SemVer>(), b.version.parse::<SemVer>()) {
            (Ok(x), Ok(y)) => y.precedence(&x).then(b.id.cmp(&a.id)),
            _ => b.id.cmp(&a.id),
        },
    );
    let next = next_version(
        &releases
            .iter()
            .map(|r| r.version.clone())
            .collect::<Vec<_>>(),
    );
    let deployments = s
        .store
        .list_deployments(DeploymentFilter::Space {
            space: &sid,
            project: Some(doc.id),
            before: None,
            limit: 1000,
        })
        .await?;
    // Newest first: the first seen per (release, environment) is the latest.
    let mut latest: BTreeMap<(i64, String), (String, String)> = BTreeMap::new();
    let mut succeeded: BTreeMap<i64, HashSet<String>> = BTreeMap::new();
    for d in &deployments {
        latest
            .entry((d.release, d.environment.clone()))
            .or_insert_with(|| (d.state.as_str().to_owned(), d.task.to_string()));
        if d.state == TaskState::Success {
            succeeded
                .entry(d.release)
                .or_default()
                .insert(d.environment.clone());
        }
    }
    let none = HashSet::new();
    let more_releases = releases.len().saturating_sub(RELEASES_SHOWN);
    let releases = releases
        .iter()
        .take(RELEASES_SHOWN)
        .map(|r| {
            let done = succeeded.get(&r.id).unwrap_or(&none);
            ReleaseRow {
                id: format!("{RELEASE_PREFIX}{}", r.id),
                version: r.version.clone(),
                notes: r.notes.clone(),
                created_by: r.created_by.clone(),
                created_at: format_rfc3339_ms(r.created_at),
                deployments: lifecycle_envs
                    .iter()
                    .map(|e| {
                        (
                            name_of(&environments, e),
                            latest.get(&(r.id, e.clone())).cloned(),
                        )
                    })
                    .collect(),
                destinations: suggest(
                    lifecycle_envs
                        .iter()
                        .map(|e| Destination {
                            id: e.clone(),
                            name: name_of(&environments, e),
                            refusal: match check_promotion(&phases, e, done) {
                                Ok(()) => None,
                                Err(PromotionError::NotInLifecycle) => {
                                    Some("not in the lifecycle".to_owned())
                                }
                                Err(other) => Some(other.to_string()),
                            },
                            suggested: false,
                        })
                        .collect(),
                    done,
                ),
            }
        })
        .collect();
    Ok(ProjectPage {
        who: None,
        id: id_of::<Projects>(&doc),
        description: doc.body["description"].as_str().unwrap_or("").to_owned(),
        lifecycle: lifecycle_name(&doc, &lifecycles),
        name: doc.name,
        steps,
        variables,
        releases,
        more_releases,
        next_version: next,
        message: None,
        may_deploy: who.may_deploy,
        csrf: who.csrf.clone(),
    })
}

pub(super) async fn page(
    State(s): State<AppState>,
    who: Who,
    Path(id): Path<String>,
    Query(q): Query<Message>,
) -> Response {
    let message = super::sealed_message(&s, q.message, q.seal);
    project_page(&s, who, &id, message).await
}

/// Back to the project's page, saying what happened.
fn back(s: &AppState, id: &str, message: &str) -> Response {
    Redirect::to(&format!(
        "/ui/projects/{}?{}",
        encode(id),
        super::message_query(s, message)
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct ReleaseForm {
    version: String,
    #[serde(default)]
    notes: String,
}

/// `POST /ui/projects/{id}/releases`: makes a release.
pub(super) async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    SignedForm(who, f): SignedForm<ReleaseForm>,
) -> Response {
    if !who.may_deploy {
        return back(&s, &id, &who.may_not("make releases"));
    }
    let w = ReleaseWrite {
        version: f.version.trim().to_owned(),
        notes: f.notes,
        packages: BTreeMap::new(),
    };
    match create_release(&s, &who.caller, SPACE, &id, &w).await {
        Ok(r) => back(&s, &id, &format!("Release {} was made.", r.version)),
        Err(e) => back(&s, &id, &format!("No release was made: {}", e.message())),
    }
}

#[derive(Deserialize)]
pub(super) struct DeployForm {
    release_id: String,
    environment_id: String,
}

/// `POST /ui/projects/{id}/deploy`: deploys a release; the browser then watches its task.
pub(super) async fn deploy(
    State(s): State<AppState>,
    Path(id): Path<String>,
    SignedForm(who, f): SignedForm<DeployForm>,
) -> Response {
    if !who.may_deploy {
        return back(&s, &id, &who.may_not("deploy"));
    }
    let w = DeploymentWrite {
        release_id: f.release_id,
        environment_id: f.environment_id,
        skip_steps: Vec::new(),
        targets: Vec::new(),
    };
    match create_deployment(&s, &who.caller, SPACE, &w).await {
        Ok(d) => Redirect::to(&format!("/ui/tasks/{}", d.task)).into_response(),
        Err(e) => back(&s, &id, &format!("Not deployed: {}", e.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::next_version;

    #[test]
    fn the_next_promotion_is_offered_first() {
        let d = |id: &str, refused: bool| super::Destination {
            id: id.to_owned(),
            name: id.to_owned(),
            refusal: refused.then(|| "phase first".to_owned()),
            suggested: false,
        };
        let done: std::collections::HashSet<String> = ["Dev".to_owned()].into();
        let picked = |ds: Vec<super::Destination>| -> Vec<String> {
            super::suggest(ds, &done)
                .into_iter()
                .filter(|d| d.suggested)
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(
            picked(vec![d("Dev", false), d("Test", false), d("Prod", true)]),
            ["Test"]
        );
        assert!(picked(vec![d("Dev", false), d("Prod", true)]).is_empty());
    }

    #[test]
    fn a_new_release_is_offered_the_newest_versions_next_patch() {
        assert_eq!(next_version(&[]), "1.0.0");
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(next_version(&v(&["1.2.3", "1.10.0", "1.9.9"])), "1.10.1");
        assert_eq!(next_version(&v(&["2.0.0-beta.1", "1.0.0"])), "2.0.0");
    }
}

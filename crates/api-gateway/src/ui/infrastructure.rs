//! Infrastructure pages: environments (in their order, with the targets in each), lifecycles
//! (their phases, and which projects follow them) and deployment targets (health, how they
//! talk, and which nodes hold a polling target's session right now).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cuttle_core::{format_rfc3339_ms, Comms, TargetRecord};

use super::projects::{id_of, name_of, names, SPACE};
use super::{html, Who};
use crate::error::ApiError;
use crate::resources::environments::{Environments, ENVIRONMENT};
use crate::resources::lifecycles::{Lifecycles, LIFECYCLE};
use crate::resources::projects::PROJECT;
use crate::AppState;

struct EnvironmentRow {
    name: String,
    description: String,
    targets: Vec<String>,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    who: Option<Who>,
    environments: Vec<EnvironmentRow>,
}

pub(super) async fn environments(State(s): State<AppState>, who: Who) -> Response {
    let found = async {
        let targets = s.store.list_targets(None, s.config.offline_after).await?;
        let rows = s
            .store
            .list_documents(SPACE, ENVIRONMENT)
            .await?
            .into_iter()
            .map(|e| {
                // Targets name their environments (as deployments match them), by name.
                EnvironmentRow {
                    description: e.body["description"].as_str().unwrap_or("").to_owned(),
                    targets: targets
                        .iter()
                        .filter(|t| {
                            t.environments
                                .iter()
                                .any(|n| n.eq_ignore_ascii_case(&e.name))
                        })
                        .map(|t| t.name.clone())
                        .collect(),
                    name: e.name,
                }
            })
            .collect();
        Ok::<_, ApiError>(rows)
    };
    match found.await {
        Ok(environments) => html(
            StatusCode::OK,
            &EnvironmentsPage {
                who: Some(who),
                environments,
            },
        ),
        Err(e) => e.into_response(),
    }
}

struct PhaseRow {
    name: String,
    environments: String,
    rule: String,
}

struct LifecycleRow {
    name: String,
    description: String,
    phases: Vec<PhaseRow>,
    projects: Vec<String>,
}

#[derive(Template)]
#[template(path = "lifecycles.html")]
struct LifecyclesPage {
    who: Option<Who>,
    lifecycles: Vec<LifecycleRow>,
    default_projects: Vec<String>,
    environments: Vec<String>,
}

pub(super) async fn lifecycles(State(s): State<AppState>, who: Who) -> Response {
    let found = async {
        let environments = names::<Environments>(&s, SPACE).await?;
        let projects = s.store.list_documents(SPACE, PROJECT).await?;
        let following = |id: Option<&str>| -> Vec<String> {
            projects
                .iter()
                .filter(|p| p.body.get("lifecycle_id").and_then(|v| v.as_str()) == id)
                .map(|p| p.name.clone())
                .collect()
        };
        let mut rows = Vec::new();
        for l in s.store.list_documents(SPACE, LIFECYCLE).await? {
            let phases = Lifecycles::phases_of(&l)?
                .into_iter()
                .map(|p| PhaseRow {
                    environments: p
                        .environments
                        .iter()
                        .map(|e| name_of(&environments, e))
                        .collect::<Vec<_>>()
                        .join(", "),
                    rule: match (p.optional, p.minimum_environments_before_promotion) {
                        (true, _) => "optional: never holds the next phase back".to_owned(),
                        (false, 0) => "all must succeed before the next phase".to_owned(),
                        (false, n) => format!("{n} must succeed before the next phase"),
                    },
                    name: p.name,
                })
                .collect();
            rows.push(LifecycleRow {
                description: l.body["description"].as_str().unwrap_or("").to_owned(),
                phases,
                projects: following(Some(&id_of::<Lifecycles>(&l))),
                name: l.name,
            });
        }
        Ok::<_, ApiError>(LifecyclesPage {
            who: None,
            lifecycles: rows,
            default_projects: following(None),
            environments: environments.into_iter().map(|(_, n)| n).collect(),
        })
    };
    match found.await {
        Ok(mut page) => {
            page.who = Some(who);
            html(StatusCode::OK, &page)
        }
        Err(e) => e.into_response(),
    }
}

struct TargetRow {
    name: String,
    environments: String,
    roles: String,
    comms: String,
    health: String,
    reason: String,
    checked: String,
    sessions: String,
}

fn target_row(t: &TargetRecord, environments: &[(String, String)]) -> TargetRow {
    TargetRow {
        name: t.name.clone(),
        environments: t
            .environments
            .iter()
            .map(|e| name_of(environments, e))
            .collect::<Vec<_>>()
            .join(", "),
        roles: t.roles.join(", "),
        comms: match (&t.comms, &t.endpoint) {
            (Comms::Listening, Some(at)) => format!("listening at {at}"),
            (Comms::Listening, None) => "listening".to_owned(),
            (Comms::Polling, _) => "polling".to_owned(),
        },
        health: t.health.as_str().to_owned(),
        reason: t.health_reason.clone().unwrap_or_default(),
        checked: t
            .last_health_check
            .map(format_rfc3339_ms)
            .unwrap_or_default(),
        sessions: match (&t.comms, t.connected_nodes.is_empty()) {
            (Comms::Polling, true) => "none: not connected".to_owned(),
            (Comms::Polling, false) => t.connected_nodes.join(", "),
            // Listening tentacles are called by whichever node needs them.
            (_, _) => "any node (it listens)".to_owned(),
        },
    }
}

#[derive(Template)]
#[template(path = "targets.html")]
struct TargetsPage {
    who: Option<Who>,
    targets: Vec<TargetRow>,
}

pub(super) async fn targets(State(s): State<AppState>, who: Who) -> Response {
    let found = async {
        let environments = names::<Environments>(&s, SPACE).await?;
        let targets = s.store.list_targets(None, s.config.offline_after).await?;
        Ok::<_, ApiError>(
            targets
                .iter()
                .map(|t| target_row(t, &environments))
                .collect(),
        )
    };
    match found.await {
        Ok(targets) => html(
            StatusCode::OK,
            &TargetsPage {
                who: Some(who),
                targets,
            },
        ),
        Err(e) => e.into_response(),
    }
}

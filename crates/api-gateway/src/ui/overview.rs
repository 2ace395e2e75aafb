//! The deployment dashboard (projects × environments, each cell the latest deployment's
//! release and state, updated in place every few seconds by the page's script, or reloaded
//! without it) and the audit events page
//! (who did what, when, from where; filterable).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cuttle_core::format_rfc3339_ms;
use serde::Deserialize;

use super::projects::id_of;
use super::{html, Who};
use crate::resources::deployments::{dashboard_of, Dashboard};
use crate::resources::environments::Environments;
use crate::resources::projects::Projects;
use crate::AppState;

/// One cell of the dashboard.
struct Cell {
    version: String,
    state: String,
    task: String,
    at: String,
}

struct ProjectRow {
    id: String,
    name: String,
    cells: Vec<Option<Cell>>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    who: Option<Who>,
    environments: Vec<String>,
    projects: Vec<ProjectRow>,
}

pub(super) async fn dashboard(State(s): State<AppState>, who: Who) -> Response {
    // The default space (its id is Spaces-1 in every cluster).
    let Dashboard {
        projects,
        environments,
        latest,
    } = match dashboard_of(&s, "Spaces-1").await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let env_ids: Vec<String> = environments.iter().map(id_of::<Environments>).collect();
    let rows = projects
        .iter()
        .map(|p| ProjectRow {
            id: id_of::<Projects>(p),
            name: p.name.clone(),
            cells: env_ids
                .iter()
                .map(|env| {
                    latest.get(&(p.id, env.clone())).map(|(d, version)| Cell {
                        version: version.clone().unwrap_or_else(|| "(removed)".to_owned()),
                        state: d.state.as_str().to_owned(),
                        task: d.task.to_string(),
                        at: format_rfc3339_ms(d.completed_at.unwrap_or(d.created_at)),
                    })
                })
                .collect(),
        })
        .collect();
    let page = DashboardPage {
        who: Some(who),
        environments: environments.iter().map(|e| e.name.clone()).collect(),
        projects: rows,
    };
    html(StatusCode::OK, &page)
}

struct EventRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    client: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    who: Option<Who>,
    events: Vec<EventRow>,
    action: String,
    actor: String,
}

#[derive(Deserialize)]
pub(super) struct EventFilter {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
}

pub(super) async fn events(
    State(s): State<AppState>,
    who: Who,
    Query(f): Query<EventFilter>,
) -> Response {
    let found = match s.store.list_events(1000).await {
        Ok(e) => e,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let (action, actor) = (
        f.action.trim().to_lowercase(),
        f.actor.trim().to_lowercase(),
    );
    let events = found
        .into_iter()
        .filter(|e| action.is_empty() || e.action.to_lowercase().starts_with(&action))
        .filter(|e| actor.is_empty() || e.actor.to_lowercase().contains(&actor))
        .take(200)
        .map(|e| EventRow {
            at: format_rfc3339_ms(e.occurred_at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            client: e.client_address,
        })
        .collect();
    let page = EventsPage {
        who: Some(who),
        events,
        action: f.action,
        actor: f.actor,
    };
    html(StatusCode::OK, &page)
}

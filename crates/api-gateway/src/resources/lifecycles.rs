//! `/api/spaces/{space}/lifecycles`: the order a release goes through environments, in phases.
//!
//! A phase is a set of environments and how many of them must have a successful deployment
//! before the next phase opens (0: all of them); an optional phase does not hold the next one
//! back. A lifecycle without phases has one phase per environment of the space, in their order
//! (the default lifecycle).

use std::collections::HashSet;

use cuttle_storage::Document;
use serde::{Deserialize, Serialize};

use super::documents::{self as docs, DocumentResource};
use super::environments::check_environments;
use crate::error::ApiError;
use crate::scoped::Api;
use crate::AppState;

pub(crate) const LIFECYCLE: &str = "Lifecycle";
const MAX_PHASES: usize = 50;

pub(crate) struct Lifecycles;

/// One phase as written.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Phase {
    #[schemars(length(min = 1, max = 200))]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) environments: Vec<String>,
    /// Successful environments needed before the next phase opens; 0: every one.
    #[serde(default)]
    pub(crate) minimum_environments_before_promotion: u32,
    /// An optional phase never holds the next one back.
    #[serde(default)]
    pub(crate) optional: bool,
}

/// What a client writes.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LifecycleWrite {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    phases: Vec<Phase>,
}

impl Lifecycles {
    /// The phases of a stored lifecycle; one that cannot be read is an error, never empty.
    pub(crate) fn phases_of(doc: &Document) -> Result<Vec<Phase>, ApiError> {
        let phases = doc.body.get("phases").cloned().unwrap_or_default();
        if phases.is_null() {
            return Ok(Vec::new());
        }
        serde_json::from_value(phases).map_err(|e| {
            tracing::error!(lifecycle = doc.id, error = %e, "stored lifecycle unreadable");
            ApiError::new(
                cuttle_core::ErrorCode::Internal,
                format!("lifecycle {:?} cannot be read: {e}", doc.name),
            )
        })
    }

    /// The environments a stored lifecycle names (in any phase).
    pub(crate) fn environments_of(doc: &Document) -> Result<Vec<String>, ApiError> {
        Ok(Self::phases_of(doc)?
            .into_iter()
            .flat_map(|p| p.environments)
            .collect())
    }
}

impl DocumentResource for Lifecycles {
    const KIND: &'static str = LIFECYCLE;
    const ID_PREFIX: &'static str = "Lifecycles-";
    const EVENT: &'static str = "lifecycle";
    type Write = LifecycleWrite;

    fn name(w: &LifecycleWrite) -> &str {
        &w.name
    }

    async fn check(
        s: &AppState,
        space: &Document,
        w: &LifecycleWrite,
        _: Option<i64>,
    ) -> Result<(), ApiError> {
        if w.phases.len() > MAX_PHASES {
            return Err(ApiError::bad_request(format!(
                "phases: at most {MAX_PHASES}"
            )));
        }
        let mut names = HashSet::new();
        let mut placed = HashSet::new();
        for (i, p) in w.phases.iter().enumerate() {
            let at = format!("phases[{i}]");
            let name = p.name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(ApiError::bad_request(format!(
                    "{at}.name: 1 to 200 characters"
                )));
            }
            if !names.insert(name.to_lowercase()) {
                return Err(ApiError::bad_request(format!(
                    "{at}.name: another phase is named {name:?}"
                )));
            }
            for e in &p.environments {
                if !placed.insert(e.clone()) {
                    return Err(ApiError::bad_request(format!(
                        "{at}.environments: {e} is already in an earlier phase"
                    )));
                }
            }
            if p.minimum_environments_before_promotion as usize > p.environments.len() {
                return Err(ApiError::bad_request(format!(
                    "{at}.minimum_environments_before_promotion: at most the phase's {} \
                     environment(s)",
                    p.environments.len()
                )));
            }
        }
        check_environments(
            s,
            space,
            "phases[].environments",
            w.phases.iter().flat_map(|p| &p.environments),
        )
        .await
    }

    /// A lifecycle a project goes through stays until no project does (its deployments could
    /// not be checked without it).
    async fn check_delete(s: &AppState, space: &Document, doc: &Document) -> Result<(), ApiError> {
        let id = format!("{}{}", Self::ID_PREFIX, doc.id);
        let users: Vec<String> = s
            .store
            .list_documents(&docs::space_id(space), docs::PROJECT)
            .await?
            .into_iter()
            .filter(|p| p.body.get("lifecycle_id").and_then(|v| v.as_str()) == Some(id.as_str()))
            .map(|p| format!("{:?}", p.name))
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            cuttle_core::ErrorCode::Conflict,
            format!(
                "lifecycle {:?} is used by project(s) {}: give them another lifecycle first",
                doc.name,
                users.join(", ")
            ),
        ))
    }
}

pub(crate) fn routes() -> Api {
    docs::routes::<Lifecycles>(
        "/api/spaces/{space}/lifecycles",
        "/api/spaces/{space}/lifecycles/{id}",
    )
}

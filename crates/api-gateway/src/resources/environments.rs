//! `/api/spaces/{space}/environments`: where deployments go (Development, Test, Production), in
//! an order operators set with one call.

use std::collections::HashSet;

use cuttle_core::ErrorCode;
use cuttle_storage::Document;
use serde::{Deserialize, Serialize};

use super::documents::{self as docs, space_id, DocumentResource};
use super::lifecycles::{Lifecycles, LIFECYCLE};
use crate::error::ApiError;
use crate::openapi::Op;
use crate::scoped::{Api, OPERATOR};
use crate::AppState;

pub(crate) const ENVIRONMENT: &str = "Environment";

pub(crate) struct Environments;

/// What a client writes.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentWrite {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    #[schemars(length(max = 2000))]
    description: String,
}

impl DocumentResource for Environments {
    const KIND: &'static str = ENVIRONMENT;
    const ID_PREFIX: &'static str = "Environments-";
    const EVENT: &'static str = "environment";
    type Write = EnvironmentWrite;

    fn name(w: &EnvironmentWrite) -> &str {
        &w.name
    }

    async fn check(
        _: &AppState,
        _: &Document,
        w: &EnvironmentWrite,
        _: Option<i64>,
    ) -> Result<(), ApiError> {
        if w.description.chars().count() > 2000 {
            return Err(ApiError::bad_request(
                "description: at most 2,000 characters",
            ));
        }
        Ok(())
    }

    /// An environment a lifecycle names stays until the lifecycle no longer does.
    async fn check_delete(s: &AppState, space: &Document, doc: &Document) -> Result<(), ApiError> {
        let id = format!("{}{}", Self::ID_PREFIX, doc.id);
        let mut users = Vec::new();
        for l in s.store.list_documents(&space_id(space), LIFECYCLE).await? {
            if Lifecycles::environments_of(&l)?.contains(&id) {
                users.push(l.name);
            }
        }
        if users.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "environment {:?} is in lifecycle(s) {}: take it out of them first",
                doc.name,
                users.join(", ")
            ),
        ))
    }
}

/// The ids of the environments of a space, in their order.
pub(crate) async fn environment_ids(
    s: &AppState,
    space: &Document,
) -> Result<Vec<String>, ApiError> {
    Ok(s.store
        .list_documents(&space_id(space), ENVIRONMENT)
        .await?
        .iter()
        .map(|d| format!("{}{}", Environments::ID_PREFIX, d.id))
        .collect())
}

/// Checks that every id names an environment of the space; returns them as a set.
pub(crate) async fn check_environments<'a>(
    s: &AppState,
    space: &Document,
    field: &str,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<(), ApiError> {
    let known: HashSet<String> = environment_ids(s, space).await?.into_iter().collect();
    for id in ids {
        if !known.contains(id) {
            return Err(ApiError::bad_request(format!(
                "{field}: {id:?} is not an environment of this space"
            )));
        }
    }
    Ok(())
}

pub(crate) fn routes() -> Api {
    docs::routes::<Environments>(
        "/api/spaces/{space}/environments",
        "/api/spaces/{space}/environments/{id}",
    )
    .post(
        "/api/spaces/{space}/environments/reorder",
        OPERATOR,
        docs::reorder::<Environments>,
        Op::new(
            "reorderEnvironments",
            "Puts a space's environments in a new order",
        )
        .body(|g| g.request::<docs::Reorder>())
        .ok("every environment, in the new order", |g| {
            crate::openapi::schemas::page(docs::shown_schema::<Environments>(g))
        }),
    )
}

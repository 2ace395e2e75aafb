//! `/api/spaces/{space}/projects`: what gets deployed. A project has a lifecycle (none: the
//! space's default lifecycle, one phase per environment), retention settings, a deployment
//! process (`process.rs`) and variables (`variables.rs`), all kept in one document: the
//! project's version covers every part, so a change to any part names the version it read.

mod process;
mod releases;
mod variables;

pub(crate) use releases::{create_release, ReleaseWrite, RELEASE_PREFIX};
pub(crate) use releases::{get_release, list_releases};
pub(crate) use variables::{read_variables, replace_variables, variables_of};

use cuttle_storage::Document;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::documents::{self as docs, space_id, stored_body, DocumentResource};
use super::lifecycles::{Lifecycles, LIFECYCLE};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::scoped::Api;
use crate::AppState;

pub(crate) use super::documents::PROJECT;

pub(crate) struct Projects;

/// What a project keeps (0: all of it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retention {
    /// The newest releases kept (older ones no deployment needs are removed).
    #[serde(default)]
    releases_to_keep: u32,
    /// In each environment, the deployments of the newest N releases deployed there keep their
    /// logs and artifacts; older ones lose them (by the periodic `Retention` task).
    #[serde(default)]
    releases_per_environment: u32,
}

/// What a client writes about the project itself.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectWrite {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    description: String,
    /// A lifecycle of the space; the default lifecycle when absent.
    #[serde(default)]
    lifecycle_id: Option<String>,
    #[serde(default)]
    retention: Retention,
}

/// The parts of a project document its own endpoints write.
const PARTS: [&str; 2] = ["process", "variables"];

impl DocumentResource for Projects {
    const KIND: &'static str = PROJECT;
    const FOLLOW: &'static [&'static str] = &[
        "getDeploymentProcess",
        "replaceDeploymentProcess",
        "getProjectVariables",
        "replaceProjectVariables",
        "createRelease",
        "listReleases",
    ];
    const ID_PREFIX: &'static str = "Projects-";
    const EVENT: &'static str = "project";
    type Write = ProjectWrite;
    const PARTS: &'static [&'static str] = &PARTS;

    fn name(w: &ProjectWrite) -> &str {
        &w.name
    }

    async fn check(
        s: &AppState,
        space: &Document,
        w: &ProjectWrite,
        _: Option<i64>,
    ) -> Result<(), ApiError> {
        if let Some(id) = &w.lifecycle_id {
            let found = match docs::doc_number::<Lifecycles>(id) {
                Ok(n) => s.store.get_document(&space_id(space), LIFECYCLE, n).await?,
                Err(_) => None,
            };
            if found.is_none() {
                return Err(ApiError::bad_request(format!(
                    "lifecycle_id: {id:?} is not a lifecycle of this space"
                )));
            }
        }
        Ok(())
    }

    /// The project's settings replace the old ones; its process and variables stay.
    fn merge(existing: Option<&Value>, w: &ProjectWrite) -> Result<Value, ApiError> {
        let mut body = stored_body(w)?;
        for part in PARTS {
            let kept = existing
                .and_then(|e| e.get(part).cloned())
                .unwrap_or_else(|| match part {
                    "process" => json!({"steps": []}),
                    _ => json!([]),
                });
            body[part] = kept;
        }
        Ok(body)
    }

    /// The settings only: the process and the variables have their own endpoints.
    fn show(d: &Document) -> Value {
        let mut v = docs::shown(Self::ID_PREFIX, d);
        if let Value::Object(m) = &mut v {
            for part in PARTS {
                m.remove(part);
            }
        }
        v
    }

    async fn check_delete(_: &AppState, _: &Document, _: &Document) -> Result<(), ApiError> {
        Ok(())
    }
}

/// A project of the space, by its id in the path.
pub(crate) async fn project(
    s: &AppState,
    space: &Document,
    raw: &str,
) -> Result<Document, ApiError> {
    let n = docs::doc_number::<Projects>(raw)?;
    s.store
        .get_document(&space_id(space), PROJECT, n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project {raw}")))
}

/// Replaces one part of a project (its process or its variables) at the version the client
/// read, with its audit event (`action`, and `details` that never hold a value).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_part(
    s: &AppState,
    caller: &Caller,
    doc: &Document,
    version: i64,
    part: &str,
    value: Value,
    action: &'static str,
    details: Value,
) -> Result<Document, ApiError> {
    docs::write_part(
        s,
        caller,
        doc,
        Projects::ID_PREFIX,
        version,
        part,
        value,
        action,
        details,
    )
    .await
}

pub(crate) fn routes() -> Api {
    docs::routes::<Projects>(
        "/api/spaces/{space}/projects",
        "/api/spaces/{space}/projects/{id}",
    )
    .merge(process::routes())
    .merge(variables::routes())
    .merge(releases::routes())
}

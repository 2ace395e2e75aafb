//! `/api/spaces/{space}/projects/{id}/deploymentprocess`: the project's steps, read and saved as
//! a whole.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use cuttle_core::plan::Process;
use cuttle_storage::Document;
use serde_json::Value;

use super::{project, Projects};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::resources::documents::{resolve_space, DocumentResource};
use crate::resources::process_part::{self, answer, process_of};
use crate::scoped::{Api, OPERATOR, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    const PATH: &str = "/api/spaces/{space}/projects/{id}/deploymentprocess";
    Api::new()
        .get(PATH, READER, read)
        .put(PATH, OPERATOR, replace)
}

async fn read(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let (doc, process) = read_process(&s, (&space, &raw)).await?;
    answer("project_id", Projects::ID_PREFIX, &doc, &process)
}

/// A project and its deployment process, by the space and id as the client named them.
pub(crate) async fn read_process(
    s: &AppState,
    (space, raw): (&str, &str),
) -> Result<(Document, Process), ApiError> {
    let space = resolve_space(s, space).await?;
    let doc = project(s, &space, raw).await?;
    let process = process_of(&doc)?;
    Ok((doc, process))
}

/// Replaces a project's deployment process whole at `version`. REST's and gRPC's one way.
pub(crate) async fn replace_process(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    process: Process,
    version: Option<i64>,
) -> Result<(Document, Process), ApiError> {
    let space = resolve_space(s, space).await?;
    let doc = project(s, &space, raw).await?;
    let owner = (Projects::ID_PREFIX, "project.process.update");
    process_part::save_process(s, caller, &space, &doc, owner, process, version).await
}

async fn replace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let space = resolve_space(&s, &space).await?;
    let doc = project(&s, &space, &raw).await?;
    process_part::save(
        &s,
        &caller,
        &space,
        &doc,
        "project_id",
        Projects::ID_PREFIX,
        "project.process.update",
        &headers,
        body,
    )
    .await
}

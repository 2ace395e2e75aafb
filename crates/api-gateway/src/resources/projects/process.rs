//! `/api/spaces/{space}/projects/{id}/deploymentprocess`: the project's steps, read and saved as
//! a whole.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use serde_json::Value;

use super::{project, Projects};
use crate::auth::Caller;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::resources::documents::{resolve_space, DocumentResource};
use crate::resources::process_part::{self, answer};
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
    let (doc, process) = process_part::read::<Projects>(&s, (&space, &raw)).await?;
    answer("project_id", Projects::ID_PREFIX, &doc, &process)
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

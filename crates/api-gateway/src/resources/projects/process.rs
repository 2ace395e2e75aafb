//! `/api/spaces/{space}/projects/{id}/deploymentprocess`: the project's steps, read and saved as
//! a whole.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use serde_json::Value;

use super::{project, Projects};
use crate::auth::Caller;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::openapi::{schemas, Op};
use crate::resources::documents::{resolve_space, DocumentResource};
use crate::resources::process_part::{self, answer};
use crate::scoped::{Api, OPERATOR, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    const PATH: &str = "/api/spaces/{space}/projects/{id}/deploymentprocess";
    Api::new()
        .get(
            PATH,
            READER,
            read,
            Op::new("getDeploymentProcess", "A project's deployment process").ok(
                "its steps, at the project's version (also its `ETag`)",
                schemas::project_process,
            ),
        )
        .put(
            PATH,
            OPERATOR,
            replace,
            Op::new(
                "replaceDeploymentProcess",
                "Replaces a project's deployment process",
            )
            .header(
                "If-Match",
                serde_json::json!({"type": "string"}),
                "the version read, quoted (or `version` in the body)",
            )
            .body(schemas::process_write)
            .ok(
                "the saved process, defaults filled in",
                schemas::project_process,
            )
            .refuses(409, "the project changed since the version named was read"),
        )
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

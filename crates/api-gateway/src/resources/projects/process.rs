//! `/api/spaces/{space}/projects/{id}/deploymentprocess`: the project's steps, read and saved as
//! a whole.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use cuttle_core::plan::Process;
use cuttle_storage::Document;
use serde_json::{json, Value};

use super::{project, write_part, Projects};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::resources::documents::{
    required_version, resolve_space, split_version, DocumentResource,
};
use crate::resources::environments::check_environments;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/spaces/{space}/projects/{id}/deploymentprocess",
        get(read).put(replace),
    )
}

/// The stored process; one that cannot be read is an error, never an empty process.
pub(crate) fn process_of(doc: &Document) -> Result<Process, ApiError> {
    serde_json::from_value(
        doc.body
            .get("process")
            .cloned()
            .unwrap_or(json!({"steps": []})),
    )
    .map_err(|e| {
        tracing::error!(project = doc.id, error = %e, "stored process unreadable");
        ApiError::new(
            cuttle_core::ErrorCode::Internal,
            format!("the process of project {:?} cannot be read: {e}", doc.name),
        )
    })
}

fn answer(doc: &Document, process: &Process) -> ApiResult {
    let body = json!({
        "project_id": format!("{}{}", Projects::ID_PREFIX, doc.id),
        "version": doc.version,
        "steps": process.steps,
    });
    let etag = format!("\"{}\"", doc.version);
    Ok(([(header::ETAG, etag)], Json(body)).into_response())
}

async fn read(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let space = resolve_space(&s, &space).await?;
    let doc = project(&s, &space, &raw).await?;
    answer(&doc, &process_of(&doc)?)
}

async fn replace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let space = resolve_space(&s, &space).await?;
    let (body, version) = split_version(body, &headers)?;
    let version = required_version(version)?;
    let process: Process = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    process.validate()?;
    check_environments(
        &s,
        &space,
        "steps[].environments",
        process.steps.iter().flat_map(|st| &st.environments),
    )
    .await?;
    let doc = project(&s, &space, &raw).await?;
    let steps: Vec<&str> = process.steps.iter().map(|st| st.name.as_str()).collect();
    let saved = write_part(
        &s,
        &caller,
        &doc,
        version,
        "process",
        serde_json::to_value(&process).map_err(|e| ApiError::bad_request(e.to_string()))?,
        "project.process.update",
        json!({"steps": steps}),
    )
    .await?;
    answer(&saved, &process)
}

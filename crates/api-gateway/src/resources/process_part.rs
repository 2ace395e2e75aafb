//! A process kept inside a document (a project's deployment process, a runbook's process): read
//! and saved as a whole, at the document's version, checked by the planner's rules and against
//! the space's environments. Shared by `projects/process.rs` and `runbooks.rs`.

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use cuttle_core::plan::Process;
use cuttle_storage::Document;
use serde_json::{json, Value};

use super::documents::DocumentResource;
use super::documents::{ops, required_version, resolve_space, split_version, write_part};
use super::environments::check_environments;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiResult;
use crate::AppState;

/// The stored process; one that cannot be read is an error, never an empty process.
pub(crate) fn process_of(doc: &Document) -> Result<Process, ApiError> {
    serde_json::from_value(
        doc.body
            .get("process")
            .cloned()
            .unwrap_or(json!({"steps": []})),
    )
    .map_err(|e| {
        tracing::error!(document = doc.id, error = %e, "stored process unreadable");
        ApiError::new(
            cuttle_core::ErrorCode::Internal,
            format!("the process of {:?} cannot be read: {e}", doc.name),
        )
    })
}

/// The answer: `{<owner>: id, "version", "steps"}` with the version as the `ETag`.
pub(crate) fn answer(owner: &str, prefix: &str, doc: &Document, process: &Process) -> ApiResult {
    let body = json!({
        owner: format!("{prefix}{}", doc.id),
        "version": doc.version,
        "steps": process.steps,
    });
    let etag = format!("\"{}\"", doc.version);
    Ok(([(header::ETAG, etag)], Json(body)).into_response())
}

/// Saves a whole process into `doc` at the version the client names; returns the answer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn save(
    s: &AppState,
    caller: &Caller,
    space: &Document,
    doc: &Document,
    owner: &str,
    prefix: &str,
    action: &'static str,
    headers: &HeaderMap,
    body: Value,
) -> ApiResult {
    let (body, version) = split_version(body, headers)?;
    // A body without `steps` is a mistake, not a wish to empty the process (`[]` says that).
    if body.get("steps").is_none() {
        return Err(ApiError::bad_request(
            "steps: required, the whole process (`[]` empties it)",
        ));
    }
    let process: Process = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let (saved, process) =
        save_process(s, caller, space, doc, (prefix, action), process, version).await?;
    answer(owner, prefix, &saved, &process)
}

/// Checks a whole process (the planner's rules, the space's environments) and saves it into
/// `doc` at `version` with its audit event (`action`): the saved document and process. REST's
/// and gRPC's one way to do it.
pub(crate) async fn save_process(
    s: &AppState,
    caller: &Caller,
    space: &Document,
    doc: &Document,
    (prefix, action): (&str, &'static str),
    process: Process,
    version: Option<i64>,
) -> Result<(Document, Process), ApiError> {
    let version = required_version(version)?;
    process.validate()?;
    check_environments(
        s,
        space,
        "steps[].environments",
        process.steps.iter().flat_map(|st| &st.environments),
    )
    .await?;
    let steps: Vec<&str> = process.steps.iter().map(|st| st.name.as_str()).collect();
    let saved = write_part(
        s,
        caller,
        doc,
        prefix,
        version,
        "process",
        serde_json::to_value(&process).map_err(|e| ApiError::bad_request(e.to_string()))?,
        action,
        json!({"steps": steps}),
    )
    .await?;
    Ok((saved, process))
}

/// A document and its process, by the space and id as the client named them.
pub(crate) async fn read<R: DocumentResource>(
    s: &AppState,
    (space, raw): (&str, &str),
) -> Result<(Document, Process), ApiError> {
    let doc = ops::get::<R>(s, space, raw).await?;
    let process = process_of(&doc)?;
    Ok((doc, process))
}

/// Replaces a document's process whole at `version`, audited as `action`. REST's and gRPC's one
/// way.
pub(crate) async fn replace<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    (process, version): (Process, Option<i64>),
    action: &'static str,
) -> Result<(Document, Process), ApiError> {
    let space_doc = resolve_space(s, space).await?;
    let doc = ops::get::<R>(s, space, raw).await?;
    save_process(
        s,
        caller,
        &space_doc,
        &doc,
        (R::ID_PREFIX, action),
        process,
        version,
    )
    .await
}

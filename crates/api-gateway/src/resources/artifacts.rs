//! A task's artifacts: `GET /api/tasks/{id}/artifacts` lists what its scripts handed over (and
//! what `PullFile` collected); `GET /api/tasks/{id}/artifacts/{artifact}` downloads one, by
//! range if asked. An artifact is named by its id, `{source}/{file}` as stored (percent-encoded
//! parts: no id can name a file outside the task's folder).

use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use cuttle_core::{format_rfc3339_ms, TaskId};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{ApiResult, Page, PathParams};
use crate::openapi::{file_download, schemas, Op};
use crate::resources::files::{serve, store_failed, Served};
use crate::scoped::{Api, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/tasks/{id}/artifacts",
            READER,
            list,
            Op::new(
                "listArtifacts",
                "The files a task's scripts handed over, oldest first",
            )
            .ok("the task's artifacts", schemas::artifacts),
        )
        .get(
            "/api/tasks/{id}/artifacts/{*artifact}",
            READER,
            download,
            file_download(
                "getArtifact",
                "One artifact's file, streamed",
                &["application/octet-stream"],
            ),
        )
}

/// The task a path names (404 for a malformed id, like an unknown one).
pub(crate) async fn task(s: &AppState, raw: &str) -> Result<TaskId, ApiError> {
    let id = raw
        .parse::<TaskId>()
        .map_err(|_| ApiError::not_found(format!("no task {raw}")))?;
    match s.store.get_task(id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::not_found(format!("no task {id}"))),
    }
}

/// An artifact id as one URL path: its `%` escaped, its `/` kept.
fn in_url(id: &str) -> String {
    id.replace('%', "%25")
}

pub(crate) fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn list(State(s): State<AppState>, PathParams(raw): PathParams<String>) -> ApiResult {
    let (id, found) = list_artifacts(&s, &raw).await?;
    let items: Vec<Value> = found
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "name": a.name,
                "source": a.source,
                "size": a.size,
                "created_at": format_rfc3339_ms(ms(a.created)),
                "links": {"raw": format!("/api/tasks/{id}/artifacts/{}", in_url(&a.id))},
            })
        })
        .collect();
    Ok(Json(Page::all(items)).into_response())
}

/// A task's artifacts, oldest first, by its id as the client wrote it. REST's and gRPC's one
/// list.
pub(crate) async fn list_artifacts(
    s: &AppState,
    raw: &str,
) -> Result<(TaskId, Vec<cuttle_storage::ArtifactFile>), ApiError> {
    let id = task(s, raw).await?;
    let shared = s.shared.clone();
    let found = tokio::task::spawn_blocking(move || shared.list_artifacts(id))
        .await
        .map_err(|e| ApiError::new(cuttle_core::ErrorCode::Internal, e.to_string()))?
        .map_err(store_failed)?;
    Ok((id, found))
}

/// Where an artifact's file is, and its size: 404 for one the task has not.
pub(crate) async fn artifact_file(
    s: &AppState,
    raw: &str,
    artifact: &str,
) -> Result<(std::path::PathBuf, std::fs::Metadata), ApiError> {
    let id = task(s, raw).await?;
    let missing = || ApiError::not_found(format!("task {id} has no artifact {artifact:?}"));
    let path = s.shared.artifact_file(id, artifact).ok_or_else(missing)?;
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => Ok((path, m)),
        _ => Err(missing()),
    }
}

async fn download(
    State(s): State<AppState>,
    PathParams((raw, artifact)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (path, meta) = artifact_file(&s, &raw, &artifact).await?;
    let id = task(&s, &raw).await?;
    let modified = meta.modified().map(ms).unwrap_or(0);
    let name = s
        .shared
        .list_artifacts(id)
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.id == artifact))
        .map(|a| a.name)
        .unwrap_or_else(|| artifact.clone());
    let file_name = name.rsplit('/').next().unwrap_or(&name).to_owned();
    let served = Served {
        path: &path,
        size: meta.len(),
        etag: format!("\"{:x}-{modified:x}\"", meta.len()),
        content_type: "application/octet-stream",
        file_name: &file_name,
        meter: None,
    };
    serve(served, &headers).await
}

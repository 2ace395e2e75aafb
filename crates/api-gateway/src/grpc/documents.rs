//! What every gRPC service over a document resource does the same way (environments,
//! projects, lifecycles, runbooks): the space named, the document operation REST's routes run,
//! its error as a status. Each service only turns messages into the write's JSON and documents
//! into messages.

use cuttle_core::plan::{Process, Step};
use cuttle_proto::v1 as pb;
use cuttle_storage::Document;
use serde_json::Value;
use tonic::Status;

use super::convert::{required, status};
use super::projects::core_step;
use crate::auth::Caller;
use crate::resources::documents::{ops, DocumentResource};
use crate::resources::process_part;
use crate::AppState;

pub(super) async fn list<R: DocumentResource>(
    s: &AppState,
    space: &str,
) -> Result<Vec<Document>, Status> {
    let space = required("space", space)?;
    ops::list::<R>(s, space).await.map_err(status)
}

pub(super) async fn get<R: DocumentResource>(
    s: &AppState,
    (space, id): (&str, &str),
) -> Result<Document, Status> {
    let space = required("space", space)?;
    ops::get::<R>(s, space, id).await.map_err(status)
}

pub(super) async fn create<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    space: &str,
    body: Value,
) -> Result<Document, Status> {
    let space = required("space", space)?;
    ops::create::<R>(s, caller, space, body)
        .await
        .map_err(status)
}

pub(super) async fn update<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, id): (&str, &str),
    (body, version): (Value, i64),
) -> Result<Document, Status> {
    let space = required("space", space)?;
    ops::replace::<R>(s, caller, (space, id), body, Some(version))
        .await
        .map_err(status)
}

pub(super) async fn delete<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, id): (&str, &str),
    version: Option<i64>,
) -> Result<(), Status> {
    let space = required("space", space)?;
    ops::delete::<R>(s, caller, (space, id), version)
        .await
        .map_err(status)
}

/// A document's process (a project's, a runbook's) as edited.
pub(super) async fn process<R: DocumentResource>(
    s: &AppState,
    (space, id): (&str, &str),
) -> Result<(Document, Process), Status> {
    let space = required("space", space)?;
    process_part::read::<R>(s, (space, id))
        .await
        .map_err(status)
}

/// Replaces a document's process with `steps` at `version`, audited as `action`.
pub(super) async fn update_process<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, id): (&str, &str),
    (steps, version): (Vec<pb::Step>, i64),
    action: &'static str,
) -> Result<(Document, Process), Status> {
    let space = required("space", space)?;
    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, st)| core_step(i, st))
        .collect::<Result<Vec<Step>, Status>>()?;
    let written = (Process { steps }, Some(version));
    process_part::replace::<R>(s, caller, (space, id), written, action)
        .await
        .map_err(status)
}

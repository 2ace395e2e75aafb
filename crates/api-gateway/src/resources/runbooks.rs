//! `/api/spaces/{space}/runbooks`: named processes of a project for operations (restart a
//! service, rotate a log, fail over a database), run against an environment on demand.
//!
//! A runbook has its own process (same step model as a deployment process), edited freely, and
//! runs only what was last **published**: publishing snapshots the process and the project's
//! variables as they are then (sensitive values still encrypted). A run is a `RunbookRun` task;
//! runs are not held back by a lifecycle.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{format_rfc3339_ms, ErrorCode, NewTask, RunbookArgs, TaskKind, TaskRecord};
use cuttle_storage::{Audit, Document};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::documents::{
    self as docs, doc_number, resolve_space, space_id, stored_body, write_part, DocumentResource,
};
use super::environments::{Environments, ENVIRONMENT};
use super::process_part::{self, process_of};
use super::projects::{variables_of, Projects, PROJECT};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::openapi::{schemas, Gen, Op};
use crate::scoped::{Api, DEPLOYER, OPERATOR, READER};
use crate::AppState;

pub(crate) const RUNBOOK: &str = "Runbook";

pub(crate) struct Runbooks;

/// What a client writes about the runbook itself.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunbookWrite {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    /// The project whose variables the runbook runs with.
    project_id: String,
    #[serde(default)]
    description: String,
}

impl DocumentResource for Runbooks {
    const KIND: &'static str = RUNBOOK;
    const ID_PREFIX: &'static str = "Runbooks-";
    const EVENT: &'static str = "runbook";
    type Write = RunbookWrite;
    const PARTS: &'static [&'static str] = &["process", "published"];
    const FOLLOW: &'static [&'static str] = &[
        "getRunbookProcess",
        "replaceRunbookProcess",
        "publishRunbook",
        "runRunbook",
    ];

    fn name(w: &RunbookWrite) -> &str {
        &w.name
    }

    async fn check(
        s: &AppState,
        space: &Document,
        w: &RunbookWrite,
        _: Option<i64>,
    ) -> Result<(), ApiError> {
        let found = match doc_number::<Projects>(&w.project_id) {
            Ok(n) => s.store.get_document(&space_id(space), PROJECT, n).await?,
            Err(_) => None,
        };
        if found.is_none() {
            return Err(ApiError::bad_request(format!(
                "project_id: {:?} is not a project of this space",
                w.project_id
            )));
        }
        Ok(())
    }

    /// The settings replace the old ones; the process and the published snapshot stay.
    fn merge(existing: Option<&Value>, w: &RunbookWrite) -> Result<Value, ApiError> {
        let mut body = stored_body(w)?;
        body["process"] = existing
            .and_then(|e| e.get("process").cloned())
            .unwrap_or(json!({"steps": []}));
        body["published"] = existing
            .and_then(|e| e.get("published").cloned())
            .unwrap_or(Value::Null);
        Ok(body)
    }

    /// The settings, and when (and by whom) it was last published.
    fn shown_too() -> Vec<(&'static str, Value)> {
        let published = json!({
            "type": "object",
            "required": ["published_at", "published_by"],
            "properties": {
                "published_at": {"type": "string", "format": "date-time"},
                "published_by": {"type": "string"},
            },
        });
        vec![(
            "published",
            json!({"anyOf": [published, {"type": "null"}], "description": "when and by whom its process was frozen for runs; null until published"}),
        )]
    }

    fn show(d: &Document) -> Value {
        let mut v = docs::shown(Self::ID_PREFIX, d);
        if let Value::Object(m) = &mut v {
            m.remove("process");
            let published = d.body.get("published").filter(|p| !p.is_null()).map(
                |p| json!({"published_at": p["published_at"], "published_by": p["published_by"]}),
            );
            m.insert("published".into(), published.unwrap_or(Value::Null));
        }
        v
    }

    async fn check_delete(_: &AppState, _: &Document, _: &Document) -> Result<(), ApiError> {
        Ok(())
    }
}

pub(crate) fn routes() -> Api {
    const PROCESS: &str = "/api/spaces/{space}/runbooks/{id}/process";
    let if_match = "the version read, quoted (or `version` in the body)";
    docs::routes::<Runbooks>(
        "/api/spaces/{space}/runbooks",
        "/api/spaces/{space}/runbooks/{id}",
    )
    .get(
        PROCESS,
        READER,
        read_process,
        Op::new("getRunbookProcess", "A runbook's process").ok(
            "its steps, at the runbook's version (also its `ETag`)",
            schemas::runbook_process,
        ),
    )
    .put(
        PROCESS,
        OPERATOR,
        replace_process,
        Op::new("replaceRunbookProcess", "Replaces a runbook's process")
            .header("If-Match", json!({"type": "string"}), if_match)
            .body(schemas::process_write)
            .ok(
                "the saved process, defaults filled in",
                schemas::runbook_process,
            )
            .refuses(409, "the runbook changed since the version named was read"),
    )
    .post(
        "/api/spaces/{space}/runbooks/{id}/publish",
        OPERATOR,
        publish,
        Op::new(
            "publishRunbook",
            "Freezes a runbook's process and its project's variables for runs",
        )
        .ok("the runbook with `published`", shown_runbook)
        .refuses(409, "the runbook has no steps"),
    )
    .post(
        "/api/spaces/{space}/runbooks/{id}/runs",
        DEPLOYER,
        run,
        Op::new(
            "runRunbook",
            "Runs a runbook's published process in an environment",
        )
        .body(|g| g.request::<RunWrite>())
        .created("the `RunbookRun` task, queued", schemas::task)
        .refuses(409, "the runbook is not published")
        .link("task", "getTask", &[("id", "$response.body#/id")]),
    )
}

fn shown_runbook(g: &mut Gen) -> Value {
    docs::shown_schema::<Runbooks>(g)
}

async fn runbook(s: &AppState, space: &Document, raw: &str) -> Result<Document, ApiError> {
    let n = doc_number::<Runbooks>(raw)?;
    s.store
        .get_document(&space_id(space), RUNBOOK, n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no runbook {raw}")))
}

async fn read_process(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let (doc, process) = process_part::read::<Runbooks>(&s, (&space, &raw)).await?;
    process_part::answer("runbook_id", Runbooks::ID_PREFIX, &doc, &process)
}

async fn replace_process(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let space = resolve_space(&s, &space).await?;
    let doc = runbook(&s, &space, &raw).await?;
    process_part::save(
        &s,
        &caller,
        &space,
        &doc,
        "runbook_id",
        Runbooks::ID_PREFIX,
        "runbook.process.update",
        &headers,
        body,
    )
    .await
}

async fn publish(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let saved = publish_runbook(&s, &caller, (&space, &raw)).await?;
    Ok(Json(Runbooks::show(&saved)).into_response())
}

/// Freezes the process and the project's variables as they are now: what runs from now on.
/// REST's and gRPC's one way to publish.
pub(crate) async fn publish_runbook(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
) -> Result<Document, ApiError> {
    let space = resolve_space(s, space).await?;
    let doc = runbook(s, &space, raw).await?;
    let project_id = doc.body["project_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let n = doc_number::<Projects>(&project_id)?;
    let project = s
        .store
        .get_document(&space_id(&space), PROJECT, n)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("the runbook's project {project_id} no longer exists"),
            )
        })?;
    let process = process_of(&doc)?;
    if process.steps.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the runbook has no steps to publish",
        ));
    }
    let snapshot = json!({
        "project_name": project.name,
        "process": process,
        "variables": variables_of(&project)?,
        "published_at": format_rfc3339_ms(now_ms()),
        "published_by": caller.actor(),
    });
    write_part(
        s,
        caller,
        &doc,
        Runbooks::ID_PREFIX,
        doc.version,
        "published",
        snapshot,
        "runbook.publish",
        json!({"project": project_id}),
    )
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunWrite {
    pub(crate) environment_id: String,
    #[serde(default)]
    pub(crate) targets: Vec<String>,
}

async fn run(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    JsonBody(w): JsonBody<RunWrite>,
) -> ApiResult {
    let record = run_runbook(&s, &caller, (&space, &raw), w).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Runs the published runbook against an environment: a `RunbookRun` task, audited. REST's
/// and gRPC's one way to run one.
pub(crate) async fn run_runbook(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    w: RunWrite,
) -> Result<TaskRecord, ApiError> {
    let space = resolve_space(s, space).await?;
    let sid = space_id(&space);
    let doc = runbook(s, &space, raw).await?;
    if doc.body.get("published").is_none_or(Value::is_null) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("runbook {:?} is not published: publish it first", doc.name),
        ));
    }
    let env_n = doc_number::<Environments>(&w.environment_id).map_err(|_| {
        ApiError::bad_request(format!(
            "environment_id: {:?} is not an environment id",
            w.environment_id
        ))
    })?;
    let environment = s
        .store
        .get_document(&sid, ENVIRONMENT, env_n)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "environment_id: no environment {} in this space",
                w.environment_id
            ))
        })?;
    let task = NewTask {
        kind: TaskKind::RunbookRun(RunbookArgs {
            space: sid,
            runbook: doc.id,
            environment: w.environment_id.clone(),
            targets: w.targets,
        }),
        description: format!("Run runbook {} in {}", doc.name, environment.name),
        concurrency_tag: None,
    };
    let by = caller.clone();
    let runbook_id = format!("{}{}", Runbooks::ID_PREFIX, doc.id);
    let details = json!({"runbook": runbook_id, "environment": w.environment_id});
    let audit: Audit<TaskRecord> =
        Box::new(move |t| by.event("runbook.run", t.id, details.clone()));
    let record = s.store.enqueue(&task, Some(audit)).await?;
    s.waker.enqueued();
    Ok(record)
}

//! `/api/spaces/{space}/projects/{id}/variables`: the project's variables, read and saved as a
//! whole.
//!
//! A sensitive value is encrypted (AES-GCM under the cluster's variable key, itself encrypted
//! with the master key) before it is stored, and is write-only: no answer ever holds it (`value`
//! is null). To keep a sensitive value while saving the set, send its `id` without a `value`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::plan::{validate_variables, StoredVariable, Variable, VariableScope};
use cuttle_core::ErrorCode;
use cuttle_storage::Document;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{project, write_part, Projects};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, PathParams};
use crate::openapi::{schemas, Op};
use crate::resources::documents::{
    required_version, resolve_space, split_version, DocumentResource,
};
use crate::resources::environments::check_environments;
use crate::scoped::{Api, OPERATOR, READER};
use crate::AppState;

const ID_PREFIX: &str = "Variables-";
const MAX_VARIABLES: usize = 2000;

pub(crate) fn routes() -> Api {
    const PATH: &str = "/api/spaces/{space}/projects/{id}/variables";
    Api::new()
        .get(
            PATH,
            READER,
            read,
            Op::new(
                "getProjectVariables",
                "A project's variables (sensitive values never shown)",
            )
            .ok(
                "its variables, at the project's version (also its `ETag`)",
                schemas::variables,
            ),
        )
        .put(
            PATH,
            OPERATOR,
            replace,
            Op::new("replaceProjectVariables", "Replaces a project's variables")
                .header(
                    "If-Match",
                    json!({"type": "string"}),
                    "the version read, quoted (or `version` in the body)",
                )
                .body(|g| schemas::with_version(g.request_definition::<VariablesWrite>()))
                .ok("the saved variables", schemas::variables)
                .refuses(409, "the project changed since the version named was read"),
        )
}

/// A variable as a client writes it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct VariableWrite {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    scope: VariableScope,
    #[serde(default)]
    sensitive: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct VariablesWrite {
    variables: Vec<VariableWrite>,
}

/// The stored variables; a set that cannot be read is an error, never an empty set.
pub(crate) fn variables_of(doc: &Document) -> Result<Vec<StoredVariable>, ApiError> {
    serde_json::from_value(doc.body.get("variables").cloned().unwrap_or(json!([]))).map_err(|e| {
        tracing::error!(project = doc.id, error = %e, "stored variables unreadable");
        ApiError::new(
            ErrorCode::Internal,
            format!(
                "the variables of project {:?} cannot be read: {e}",
                doc.name
            ),
        )
    })
}

/// The variables as shown: sensitive values never.
pub(crate) fn shown_variables(vars: &[StoredVariable]) -> Vec<Value> {
    vars.iter()
        .map(|v| {
            json!({
                "id": v.id,
                "name": v.name,
                "value": if v.sensitive { Value::Null } else { json!(v.value) },
                "scope": v.scope,
                "sensitive": v.sensitive,
            })
        })
        .collect()
}

fn answer(doc: &Document, vars: &[StoredVariable]) -> ApiResult {
    let shown = shown_variables(vars);
    let body = json!({
        "project_id": format!("{}{}", Projects::ID_PREFIX, doc.id),
        "version": doc.version,
        "variables": shown,
    });
    let etag = format!("\"{}\"", doc.version);
    Ok(([(header::ETAG, etag)], Json(body)).into_response())
}

async fn read(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    let (doc, vars) = read_variables(&s, (&space, &raw)).await?;
    answer(&doc, &vars)
}

async fn replace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (body, version) = split_version(body, &headers)?;
    let (saved, stored) = replace_variables(&s, &caller, (&space, &raw), body, version).await?;
    answer(&saved, &stored)
}

/// A project and its variables as stored (a sensitive one sealed), by the space and id as the
/// client named them.
pub(crate) async fn read_variables(
    s: &AppState,
    (space, raw): (&str, &str),
) -> Result<(Document, Vec<StoredVariable>), ApiError> {
    let space = resolve_space(s, space).await?;
    let doc = project(s, &space, raw).await?;
    let vars = variables_of(&doc)?;
    Ok((doc, vars))
}

/// Replaces a project's variables whole (`body`: `{"variables": […]}`) at `version`: checked,
/// sensitive values sealed (or kept, sent by id without a value), audited by name only. REST's
/// and gRPC's one way to do it.
pub(crate) async fn replace_variables(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    body: Value,
    version: Option<i64>,
) -> Result<(Document, Vec<StoredVariable>), ApiError> {
    let space = resolve_space(s, space).await?;
    let version = required_version(version)?;
    let write: VariablesWrite = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    if write.variables.len() > MAX_VARIABLES {
        return Err(ApiError::bad_request(format!(
            "variables: at most {MAX_VARIABLES}"
        )));
    }
    let doc = project(s, &space, raw).await?;
    let existing: HashMap<String, StoredVariable> = variables_of(&doc)?
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    let mut next_id = existing
        .keys()
        .filter_map(|id| id.strip_prefix(ID_PREFIX)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    // Checked with the values as written (a kept sensitive value is checked when first set).
    let checked: Vec<Variable> = write
        .variables
        .iter()
        .map(|v| Variable {
            name: v.name.clone(),
            value: v.value.clone().unwrap_or_default(),
            scope: v.scope.clone(),
            sensitive: v.sensitive,
        })
        .collect();
    validate_variables(&checked)?;
    check_environments(
        s,
        &space,
        "variables[].scope.environments",
        write.variables.iter().flat_map(|v| &v.scope.environments),
    )
    .await?;
    // The variable key stored now (read once, and only when there is something to seal).
    let keys = if write
        .variables
        .iter()
        .any(|v| v.sensitive && v.value.is_some())
    {
        Some(s.data_keys.fresh().await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("this node cannot seal a sensitive value now: {e}"),
            )
        })?)
    } else {
        None
    };
    let mut stored = Vec::with_capacity(write.variables.len());
    for (i, v) in write.variables.into_iter().enumerate() {
        let at = format!("variables[{i}]");
        let kept = v.id.as_ref().and_then(|id| existing.get(id));
        if v.id.is_some() && kept.is_none() {
            return Err(ApiError::bad_request(format!(
                "{at}.id: {:?} is not a variable of this project (leave id out for a new one)",
                v.id.unwrap_or_default()
            )));
        }
        let id = match &v.id {
            Some(id) => id.clone(),
            None => {
                next_id += 1;
                format!("{ID_PREFIX}{next_id}")
            }
        };
        let (value, ciphertext) = match (v.sensitive, v.value) {
            (false, Some(value)) => (Some(value), None),
            (false, None) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.value: required (an empty string for an empty value)"
                )))
            }
            (true, Some(value)) => {
                let keys = keys.as_ref().ok_or_else(|| {
                    ApiError::new(ErrorCode::Internal, "no variable key was read")
                })?;
                let sealed = keys.variables.encrypt(value.as_bytes()).map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("encrypt a sensitive value: {e}"),
                    )
                })?;
                (None, Some(sealed))
            }
            // Kept as it is stored: only a value that was sensitive already can be kept.
            (true, None) => match kept.and_then(|k| k.ciphertext.clone()) {
                Some(c) => (None, Some(c)),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "{at}.value: a sensitive value is write-only: give it (or the id of a \
                         sensitive variable to keep its value)"
                    )))
                }
            },
        };
        stored.push(StoredVariable {
            id,
            name: v.name,
            value,
            ciphertext,
            scope: v.scope,
            sensitive: v.sensitive,
        });
    }
    let names: Vec<&str> = stored.iter().map(|v| v.name.as_str()).collect();
    let saved = write_part(
        s,
        caller,
        &doc,
        version,
        "variables",
        serde_json::to_value(&stored).map_err(|e| ApiError::bad_request(e.to_string()))?,
        "project.variables.update",
        json!({"names": names}),
    )
    .await?;
    Ok((saved, stored))
}

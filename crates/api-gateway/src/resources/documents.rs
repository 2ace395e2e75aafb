//! What every configuration resource kept as a document (environments, lifecycles, and the
//! project-level ones to come) shares: the space it lives in, ids (`Environments-12`), the
//! version a write must name (`If-Match: "3"` or `"version": 3`; a stale one is 409 naming the
//! current version), and list/get/create/replace/delete/reorder handlers written once, generic
//! over [`DocumentResource`].

use std::future::Future;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{format_rfc3339_ms, ErrorCode};
use cuttle_storage::{Document, DocumentWrite, Written};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};

pub(crate) mod ops;
use crate::openapi::schemas::{document, page, with_version};
use crate::openapi::{Gen, Op};
use crate::scoped::{Api, OPERATOR, READER};
use crate::AppState;

/// The kind of document spaces are.
pub(crate) const SPACE: &str = "Space";
pub(crate) const SPACE_PREFIX: &str = "Spaces-";
/// The kind of document projects are (here, for the resources that look projects up without
/// depending on `projects`).
pub(crate) const PROJECT: &str = "Project";

/// A configuration resource stored as a document.
pub(crate) trait DocumentResource: Send + Sync + 'static {
    /// The document kind (`Environment`).
    const KIND: &'static str;
    /// Ids are this and the document number (`Environments-`).
    const ID_PREFIX: &'static str;
    /// Audit actions are this and `.create`, `.update`, `.delete`, `.reorder`.
    const EVENT: &'static str;
    /// What a client writes: `name` and the resource's own fields, nothing unknown.
    type Write: Serialize + DeserializeOwned + JsonSchema + Send + Sync;
    /// Parts of the stored body written through endpoints of their own (a project's process and
    /// variables), not through `PUT`/`PATCH` of the document.
    const PARTS: &'static [&'static str] = &[];
    /// The operations of its own endpoints (a project's process, variables, releases): what a
    /// client does next with a document just made (OpenAPI links from `create`).
    const FOLLOW: &'static [&'static str] = &[];

    /// Members the API shows besides the write's (a runbook's `published`): their names and
    /// JSON Schemas, for the OpenAPI document.
    fn shown_too() -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    fn name(w: &Self::Write) -> &str;

    /// Checks a write against the rest of the space (references to other documents); `id` is
    /// the document being replaced, if any.
    fn check(
        s: &AppState,
        space: &Document,
        w: &Self::Write,
        id: Option<i64>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The body to store for a write: by default the write without its name. A resource whose
    /// document holds more than its write (a project's process and variables) keeps the rest of
    /// `existing`.
    fn merge(existing: Option<&Value>, w: &Self::Write) -> Result<Value, ApiError> {
        let _ = existing;
        stored_body(w)
    }

    /// The document as the API shows it (by default everything it holds).
    fn show(d: &Document) -> Value {
        shown(Self::ID_PREFIX, d)
    }

    /// Refuses to delete a document others still refer to.
    fn check_delete(
        s: &AppState,
        space: &Document,
        doc: &Document,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// A space's id as stored on the documents it holds.
pub(crate) fn space_id(space: &Document) -> String {
    format!("{SPACE_PREFIX}{}", space.id)
}

/// The space a path names, by id (`Spaces-1`) or by name whatever its case (`default`).
pub(crate) async fn resolve_space(s: &AppState, raw: &str) -> Result<Document, ApiError> {
    let by_id = match raw.strip_prefix(SPACE_PREFIX).and_then(|n| n.parse().ok()) {
        Some(id) => s.store.get_document("", SPACE, id).await?,
        None => None,
    };
    let found = match by_id {
        Some(d) => Some(d),
        None => s.store.find_document("", SPACE, raw).await?,
    };
    found.ok_or_else(|| ApiError::not_found(format!("no space {raw:?}")))
}

/// The number in an id of this resource; 404 for anything else (a malformed id names nothing).
pub(crate) fn doc_number<R: DocumentResource>(raw: &str) -> Result<i64, ApiError> {
    raw.strip_prefix(R::ID_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no {} {raw}", R::KIND.to_lowercase())))
}

/// A document as the API shows it: its own fields, and `id`, `name`, `space_id`, `version`,
/// `created_at`, `modified_at`.
pub(crate) fn shown(prefix: &str, d: &Document) -> Value {
    let mut out = match &d.body {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    out.insert("id".into(), json!(format!("{prefix}{}", d.id)));
    out.insert("name".into(), json!(d.name));
    if !d.space.is_empty() {
        out.insert("space_id".into(), json!(d.space));
    }
    out.insert("version".into(), json!(d.version));
    out.insert("created_at".into(), json!(format_rfc3339_ms(d.created_at)));
    out.insert(
        "modified_at".into(),
        json!(format_rfc3339_ms(d.modified_at)),
    );
    Value::Object(out)
}

/// The answer for one document: its JSON and its version as the `ETag`.
fn one<R: DocumentResource>(status: StatusCode, d: &Document) -> ApiResult {
    let etag = format!("\"{}\"", d.version);
    Ok((status, [(header::ETAG, etag)], Json(R::show(d))).into_response())
}

/// The body stored for a write: everything but the name (kept in its own column).
pub(crate) fn stored_body<W: Serialize>(w: &W) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(w)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encode: {e}")))?;
    if let Value::Object(m) = &mut v {
        m.remove("name");
    }
    Ok(v)
}

/// A write's body: the resource's fields, and the version it was read at (`version`, or the
/// `If-Match` header).
pub(crate) fn split_version(
    mut body: Value,
    headers: &HeaderMap,
) -> Result<(Value, Option<i64>), ApiError> {
    let in_body = match &mut body {
        Value::Object(m) => m.remove("version"),
        _ => return Err(ApiError::bad_request("the body must be a JSON object")),
    };
    let in_body = match in_body {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::bad_request("version: a whole number (the version the document was read at)")
        })?),
    };
    let in_header = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("If-Match: the version in quotes, e.g. \"3\"")
                })?,
        ),
    };
    if let (Some(a), Some(b)) = (in_body, in_header) {
        if a != b {
            return Err(ApiError::bad_request(format!(
                "version {a} and If-Match {b} disagree"
            )));
        }
    }
    Ok((body, in_body.or(in_header)))
}

fn parse_write<R: DocumentResource>(body: Value) -> Result<R::Write, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn stale<R: DocumentResource>(id: i64, current: i64) -> ApiError {
    stale_error(&format!("{}{id}", R::ID_PREFIX), current)
}

/// The 409 of a write made at an old version.
pub(crate) fn stale_error(id: &str, current: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "{id} changed since it was read: it is at version {current}; read it again and \
             reapply the change"
        ),
    )
}

/// The version a write names; 400 when it names none.
pub(crate) fn required_version(version: Option<i64>) -> Result<i64, ApiError> {
    version.ok_or_else(|| {
        ApiError::bad_request(
            "version: give the version the document was read at (`\"version\": N` or \
             `If-Match: \"N\"`), so a change made meanwhile is not overwritten",
        )
    })
}

/// A document resource's five routes: list and create on `collection`, read, replace, patch and
/// delete on `one`. Reading is a reader's; every change is an operator's.
pub(crate) fn routes<R: DocumentResource>(collection: &'static str, one: &'static str) -> Api {
    let (kind, lower) = (R::KIND, R::KIND.to_lowercase());
    let link_one = |op: Op| {
        let params: &[(&str, &str)] = &[
            ("space", "$request.path.space"),
            ("id", "$response.body#/id"),
        ];
        let op = op
            .link("get", format!("get{kind}"), params)
            .link("replace", format!("replace{kind}"), params)
            .link("patch", format!("patch{kind}"), params)
            .link("delete", format!("delete{kind}"), params);
        R::FOLLOW.iter().fold(op, |op, id| op.link(id, *id, params))
    };
    let stale = "the document changed since the version named was read: read it again";
    let taken = "the name is taken in this space (whatever its case)";
    Api::new()
        .get(
            collection,
            READER,
            list::<R>,
            Op::new(format!("list{kind}s"), format!("The {lower}s of a space"))
                .ok(format!("every {lower} of the space"), |g| {
                    page(shown_schema::<R>(g))
                }),
        )
        .post(
            collection,
            OPERATOR,
            create::<R>,
            link_one(
                Op::new(format!("create{kind}"), format!("Creates a {lower}"))
                    .body(|g| write_schema::<R>(g, Write::Create))
                    .created(format!("the {lower}, at version 1"), shown_schema::<R>)
                    .refuses(409, taken),
            ),
        )
        .get(
            one,
            READER,
            get_one::<R>,
            Op::new(format!("get{kind}"), format!("One {lower}"))
                .ok(
                    format!("the {lower}; `ETag` is its version"),
                    shown_schema::<R>,
                )
                .with_headers(&[("ETag", "the version, quoted")]),
        )
        .put(
            one,
            OPERATOR,
            replace::<R>,
            Op::new(
                format!("replace{kind}"),
                format!("Replaces a {lower}'s settings whole"),
            )
            .header(
                "If-Match",
                json!({"type": "string"}),
                "the version read, quoted (or `version` in the body)",
            )
            .body(|g| write_schema::<R>(g, Write::Replace))
            .ok(format!("the {lower} at its new version"), shown_schema::<R>)
            .refuses(409, stale),
        )
        .patch(
            one,
            OPERATOR,
            patch::<R>,
            Op::new(
                format!("patch{kind}"),
                format!("Changes some of a {lower}'s settings (JSON merge patch)"),
            )
            .header(
                "If-Match",
                json!({"type": "string"}),
                "the version read, quoted (or `version` in the body)",
            )
            .body(|g| write_schema::<R>(g, Write::Patch))
            .ok(format!("the {lower} at its new version"), shown_schema::<R>)
            .refuses(409, stale),
        )
        .delete(
            one,
            OPERATOR,
            delete::<R>,
            Op::new(format!("delete{kind}"), format!("Deletes a {lower}"))
                .header(
                    "If-Match",
                    json!({"type": "string"}),
                    "the version read, quoted (optional)",
                )
                .no_content("deleted")
                .refuses(
                    409,
                    "something still names it, or it changed since the version named",
                ),
        )
}

/// Which write a body schema is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Replace,
    Patch,
}

/// A document as the API shows it, from its write's schema.
pub(crate) fn shown_schema<R: DocumentResource>(g: &mut Gen) -> serde_json::Value {
    g.named(R::KIND, |g| {
        let write = g.request_definition::<R::Write>();
        document(&write, &R::shown_too())
    })
}

/// The body of a write: the resource's fields and, for a replace or a patch, the version read.
fn write_schema<R: DocumentResource>(g: &mut Gen, w: Write) -> Value {
    let schema = g.request_definition::<R::Write>();
    if w == Write::Create {
        return schema;
    }
    let mut schema = with_version(schema);
    if let (Value::Object(m), Write::Patch) = (&mut schema, w) {
        m.remove("required");
        // A merge patch's `null` removes a member, which then takes its default.
        if let Some(Value::Object(props)) = m.get_mut("properties") {
            for (name, p) in props.iter_mut() {
                if name != "version" {
                    *p = json!({"anyOf": [p.clone(), {"type": "null"}]});
                }
            }
        }
    }
    schema
}

pub(crate) async fn list<R: DocumentResource>(
    State(s): State<AppState>,
    PathParams(space): PathParams<String>,
) -> ApiResult {
    let docs = ops::list::<R>(&s, &space).await?;
    let items: Vec<Value> = docs.iter().map(R::show).collect();
    Ok(Json(Page::all(items)).into_response())
}

pub(crate) async fn get_one<R: DocumentResource>(
    State(s): State<AppState>,
    PathParams((space, raw)): PathParams<(String, String)>,
) -> ApiResult {
    one::<R>(StatusCode::OK, &ops::get::<R>(&s, &space, &raw).await?)
}

pub(crate) async fn create<R: DocumentResource>(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(space): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    // A new document has no version to name: `version` is refused as any unknown member is.
    let doc = ops::create::<R>(&s, &caller, &space, body).await?;
    one::<R>(StatusCode::CREATED, &doc)
}

pub(crate) async fn replace<R: DocumentResource>(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (body, version) = split_version(body, &headers)?;
    let doc = ops::replace::<R>(&s, &caller, (&space, &raw), body, version).await?;
    one::<R>(StatusCode::OK, &doc)
}

/// `PATCH`: the fields sent replace those of the document as it is (a JSON merge patch, RFC
/// 7396: objects merge key by key, `null` removes a field so it takes its default); every
/// other field is kept. Checked against the version read, like `PUT`.
pub(crate) async fn patch<R: DocumentResource>(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let (changes, version) = split_version(body, &headers)?;
    let doc = ops::patch::<R>(&s, &caller, (&space, &raw), changes, version).await?;
    one::<R>(StatusCode::OK, &doc)
}

pub(crate) async fn delete<R: DocumentResource>(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, raw)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (_, version) = split_version(json!({}), &headers)?;
    ops::delete::<R>(&s, &caller, (&space, &raw), version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of a reorder: every id of the kind in the space, in the new order.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reorder {
    ids: Vec<String>,
}

pub(crate) async fn reorder<R: DocumentResource>(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(space): PathParams<String>,
    JsonBody(req): JsonBody<Reorder>,
) -> ApiResult {
    let docs = ops::reorder::<R>(&s, &caller, &space, &req.ids).await?;
    let items: Vec<Value> = docs.iter().map(R::show).collect();
    Ok(Json(Page::all(items)).into_response())
}

/// Replaces one part of a document's body (a project's process, a runbook's published snapshot)
/// at `version`, keeping the rest, with its audit event (`action`, and `details` that never hold
/// a value).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_part(
    s: &AppState,
    caller: &Caller,
    doc: &Document,
    prefix: &str,
    version: i64,
    part: &str,
    value: Value,
    action: &'static str,
    details: Value,
) -> Result<Document, ApiError> {
    let mut body = doc.body.clone();
    body[part] = value;
    let by = caller.clone();
    let id = format!("{prefix}{}", doc.id);
    let target = id.clone();
    let write = DocumentWrite {
        space: &doc.space,
        kind: &doc.kind,
        name: &doc.name,
        body: &body,
    };
    let audit = Box::new(move |d: &Document| {
        let mut details = details.clone();
        details["version"] = json!(d.version);
        by.event(action, &target, details)
    });
    match s
        .store
        .update_document(doc.id, version, &write, Some(audit))
        .await?
    {
        Written::Done(d) => Ok(d),
        Written::NotFound => Err(ApiError::not_found(format!(
            "no {} {id}",
            doc.kind.to_lowercase()
        ))),
        Written::Stale { current } => Err(stale_error(&id, current)),
    }
}

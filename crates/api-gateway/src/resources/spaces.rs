//! `/api/spaces`: spaces, each holding its own environments, lifecycles and projects. Every
//! cluster has the space `Default`; a path names a space by id (`Spaces-1`) or by name whatever
//! its case (`/api/spaces/default/…`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_storage::{Audit, Document, DocumentWrite};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::documents::{resolve_space, shown, SPACE, SPACE_PREFIX};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};
use crate::openapi::schemas::{document, page};
use crate::openapi::{Gen, Op};
use crate::scoped::{Api, ADMIN, READER};
use crate::AppState;

/// What a client writes.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpaceWrite {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    description: String,
}

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/spaces",
            READER,
            list,
            Op::new("listSpaces", "The spaces").ok("every space", |g| page(space(g))),
        )
        .post(
            "/api/spaces",
            ADMIN,
            create,
            Op::new("createSpace", "Makes a space")
                .body(|g| g.request::<SpaceWrite>())
                .created("the space", space)
                .refuses(409, "the name is taken (whatever its case)")
                .link("get", "getSpace", &[("space", "$response.body#/id")]),
        )
        .get(
            "/api/spaces/{space}",
            READER,
            get_one,
            Op::new("getSpace", "One space").ok("the space", space),
        )
}

fn space(g: &mut Gen) -> Value {
    g.named("Space", |g| {
        document(&g.request_definition::<SpaceWrite>(), &[])
    })
}

async fn list(State(s): State<AppState>) -> ApiResult {
    let spaces = s.store.list_documents("", SPACE).await?;
    let items: Vec<Value> = spaces.iter().map(|d| shown(SPACE_PREFIX, d)).collect();
    Ok(Json(Page::all(items)).into_response())
}

async fn get_one(State(s): State<AppState>, PathParams(raw): PathParams<String>) -> ApiResult {
    let space = resolve_space(&s, &raw).await?;
    Ok(Json(shown(SPACE_PREFIX, &space)).into_response())
}

async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(w): JsonBody<SpaceWrite>,
) -> ApiResult {
    let space = create_space(&s, &caller, &w.name, &w.description).await?;
    Ok((StatusCode::CREATED, Json(shown(SPACE_PREFIX, &space))).into_response())
}

/// Makes a space (audited). REST's and gRPC's one way.
pub(crate) async fn create_space(
    s: &AppState,
    caller: &Caller,
    name: &str,
    description: &str,
) -> Result<Document, ApiError> {
    if name.trim().starts_with(SPACE_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "name: may not start with {SPACE_PREFIX:?} (paths name spaces by id or name)"
        )));
    }
    let body = json!({"description": description});
    let by = caller.clone();
    let audit: Audit<Document> = Box::new(move |d| {
        by.event(
            "space.create",
            format!("{SPACE_PREFIX}{}", d.id),
            json!({"name": d.name}),
        )
    });
    Ok(s.store
        .create_document(
            &DocumentWrite {
                space: "",
                kind: SPACE,
                name,
                body: &body,
            },
            Some(audit),
        )
        .await?)
}

//! `/api/events`: the audit events, newest first.

use crate::extract::parse_limit;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::extract::{ApiResult, Page, QueryMap};
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/events", get(list_events))
}

async fn list_events(State(s): State<AppState>, q: QueryMap) -> ApiResult {
    let q = q.only(&["limit"])?;
    let limit = parse_limit(q.get("limit"))?;
    let events = s.store.list_events(limit).await?;
    Ok(Json(Page::all(events)).into_response())
}

//! `/api/events`: the audit events, newest first; `/api/events/export?from=&to=`: every event
//! in a time range as JSON lines, oldest first, read from the archive's day files in the shared
//! store and then from the database (a day that has an archive file is read from it alone), so
//! an export covers both, streamed and never held whole.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use cuttle_core::{format_rfc3339_ms, parse_time, UnixMs, DAY_MS};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::extract::{parse_limit, ApiResult, Page, QueryMap};
use crate::openapi::{schemas, Content, Op};
use crate::scoped::{Api, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/events",
            READER,
            list_events,
            Op::new("listEvents", "The audit events, newest first")
                .query("limit", schemas::limit(), "at most this many (default 100)")
                .ok("the newest events", schemas::events),
        )
        .get(
            "/api/events/export",
            READER,
            export,
            Op::new(
                "exportEvents",
                "Every audit event of a time range, archived or not, oldest first",
            )
            .query(
                "from",
                schemas::time_param(),
                "from this time (included): `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.mmm]Z`",
            )
            .query("to", schemas::time_param(), "until this time (excluded)")
            .reply(200, "one event per line", Content::JsonLines),
        )
}

async fn list_events(State(s): State<AppState>, q: QueryMap) -> ApiResult {
    let q = q.only(&["limit"])?;
    let limit = parse_limit(q.get("limit"))?;
    let events = s.store.list_events(limit).await?;
    Ok(Json(Page::all(events)).into_response())
}

fn time_param(raw: Option<&String>, name: &str, default: UnixMs) -> Result<UnixMs, ApiError> {
    match raw {
        None => Ok(default),
        Some(t) => parse_time(t).map_err(|e| ApiError::bad_request(format!("{name}: {}", e.0))),
    }
}

async fn export(State(s): State<AppState>, q: QueryMap) -> ApiResult {
    let q = q.only(&["from", "to"])?;
    let from = time_param(q.get("from"), "from", 0)?;
    let to = q
        .get("to")
        .map(|t| time_param(Some(t), "to", 0))
        .transpose()?;
    let rx = export_lines(&s, from, to).await?;
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    let body = Body::from_stream(lines);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Every event from `from` to `to` (now when absent), oldest first, as JSON lines: from the
/// archive's day files, then the database, sent as they are read (the channel holds at most 64
/// lines). REST's and gRPC's one export.
pub(crate) async fn export_lines(
    s: &AppState,
    from: UnixMs,
    to: Option<UnixMs>,
) -> Result<mpsc::Receiver<Result<Vec<u8>, std::io::Error>>, ApiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as UnixMs)
        .unwrap_or(0);
    let to = to.unwrap_or(now + 1);
    if to <= from {
        return Err(ApiError::bad_request("to must be after from"));
    }
    let shared = s.shared.clone();
    let archived: Vec<i64> = tokio::task::spawn_blocking(move || shared.archived_days())
        .await
        .map_err(|e| ApiError::new(cuttle_core::ErrorCode::Internal, e.to_string()))?
        .map_err(crate::resources::files::store_failed)?
        .into_iter()
        .filter(|d| (d + 1) * DAY_MS > from && d * DAY_MS < to)
        .collect();
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let (from_s, to_s) = (format_rfc3339_ms(from), format_rfc3339_ms(to));
    let shared = s.shared.clone();
    let store = s.store.clone();
    tokio::spawn(async move {
        let days: HashSet<i64> = archived.iter().copied().collect();
        for day in archived {
            let (shared, day_tx, from_s, to_s) =
                (shared.clone(), tx.clone(), from_s.clone(), to_s.clone());
            let read = tokio::task::spawn_blocking(move || {
                shared.read_day_export(day, |v| {
                    // RFC 3339 in one fixed form sorts as text.
                    let at = v["occurred_at"].as_str().unwrap_or_default();
                    if at < from_s.as_str() || at >= to_s.as_str() {
                        return true;
                    }
                    let mut line = v.to_string().into_bytes();
                    line.push(b'\n');
                    day_tx.blocking_send(Ok(line)).is_ok()
                })
            })
            .await;
            if let Ok(Err(e)) | Err(e) =
                read.map_err(|e| cuttle_storage::Error::Invalid(e.to_string()))
            {
                tracing::error!(error = %e, day, "export archived events");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        }
        let mut after = 0;
        loop {
            let page = match store.events_between(from, to, after, 1000).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let Some((last, _)) = page.last() else { return };
            after = *last;
            let full = page.len() == 1000;
            for (_, e) in page {
                if days.contains(&e.occurred_at.div_euclid(DAY_MS)) {
                    continue; // archived, and already sent from its file
                }
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if !full {
                return;
            }
        }
    });
    Ok(rx)
}

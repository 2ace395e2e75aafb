//! The router: every resource's routes, the API key on all but the public ones, and the
//! cross-cutting layers (declared-size check, body deadline, the serving node's name).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use cuttle_core::ErrorCode;
use serde_json::json;
use tracing::Instrument;

use crate::auth::{require_api_key, Guard};
use crate::error::ApiError;
use crate::extract::too_large;
use crate::openapi::{schemas, Op};
use crate::resources::{
    artifacts, deployments, environments, events, keys, lifecycles, metrics, nodes, packages, ping,
    projects, runbooks, spaces, targets, tasks,
};
use crate::scoped::{Api, RouteNeeds};
use crate::{AppState, MAX_JSON_BODY};

pub(crate) fn router(state: AppState) -> Router {
    let (keyed, needs) = keyed_routes();
    let (private, streaming) = keyed;
    let guard = Guard {
        state: state.clone(),
        needs,
    };
    let private = private
        // The key first, from the headers: a caller without one has none of its body read.
        .route_layer(from_fn_with_state(state.clone(), read_body_in_time))
        .route_layer(from_fn_with_state(guard.clone(), require_api_key));
    // Uploads stream past the JSON body limit and whole-body deadline (they have their own).
    let streaming = streaming.route_layer(from_fn_with_state(guard, require_api_key));
    Router::new()
        .merge(open_routes().into_parts().0)
        // The web UI signs people in itself (a session cookie, not an API key header); its
        // forms are small.
        .merge(
            crate::ui::routes().route_layer(from_fn_with_state(state.clone(), read_form_in_time)),
        )
        .merge(private)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .merge(streaming)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            name_node,
        ))
        .layer(axum::middleware::from_fn(observe_request))
        .with_state(state)
}

/// Paths answered without a span: the load balancer's health checks and the metrics scrapes
/// would each be a trace of their own, every few seconds, forever.
const UNTRACED: [&str; 3] = [
    "/api/nodes/ping",
    "/api/octopusservernodes/ping",
    "/metrics",
];

/// Counts every request in `cuttle_http_requests_total` and times it in
/// `cuttle_http_request_duration_seconds` (until its answer's head), by method and by the
/// template of the route it matched (`unmatched` for none), so a path's ids never become labels.
/// Runs it in a `request` span that continues the caller's trace (`traceparent`).
async fn observe_request(request: Request, next: Next) -> Response {
    use axum::http::Method;
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    // A shared string: no copy of the template per request.
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let span = if UNTRACED.contains(&route) {
        tracing::Span::none()
    } else {
        let span = tracing::info_span!(
            "request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        cuttle_telemetry::trace::continued(span, request.headers())
    };
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let m = cuttle_telemetry::metrics();
    m.http_requests
        .with_label_values(&[method, route, response.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[method, route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The routes that take no key: the ping, the cluster's identity, the OpenAPI document.
pub(crate) fn open_routes() -> Api {
    ping::routes()
        // A tentacle checks the cluster it was told to pin before it sends a key. The
        // thumbprint is public (every gateway handshake presents it).
        .open_get(
            "/api/cluster/identity",
            targets::cluster_identity,
            Op::new(
                "getClusterIdentity",
                "The cluster certificate's thumbprint (and, with a working key, its gateways)",
            )
            .header(
                "X-API-Key",
                serde_json::json!({"type": "string"}),
                "optional: with a working key, the gateways are named too",
            )
            .ok("the thumbprint (and `gateways`)", schemas::identity)
            .refuses(401, "the key given is unknown or past its expiry")
            .refuses(429, "ten unknown API keys from this client within a minute"),
        )
        .open_get(
            "/api/openapi.json",
            openapi_document,
            Op::new("getOpenApi", "This document").ok("the OpenAPI 3.1 document", schemas::openapi),
        )
}

/// The OpenAPI document of every route (made once).
async fn openapi_document() -> Response {
    static DOCUMENT: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        serde_json::to_vec(&described())
            .expect("a JSON value serializes")
            .into()
    });
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

/// The OpenAPI document of every route.
pub(crate) fn described() -> serde_json::Value {
    let (_, needs) = keyed_routes();
    let (_, open) = open_routes().into_parts();
    let all: Vec<&crate::scoped::Declared> = needs.declared().iter().chain(&open).collect();
    crate::openapi::document(&all)
}

type KeyedRouters = (Router<AppState>, Router<AppState>);

/// Every route an API key opens, each with the scope it needs: the JSON routes, and the upload
/// routes (outside the body limit and deadline).
pub(crate) fn keyed_routes() -> (KeyedRouters, std::sync::Arc<RouteNeeds>) {
    let (private, a) = Api::new()
        .merge(nodes::routes())
        .merge(tasks::routes())
        .merge(artifacts::routes())
        .merge(events::routes())
        .merge(keys::routes())
        .merge(targets::routes())
        .merge(metrics::routes())
        .merge(spaces::routes())
        .merge(environments::routes())
        .merge(lifecycles::routes())
        .merge(projects::routes())
        .merge(deployments::routes())
        .merge(runbooks::routes())
        .merge(packages::routes())
        .into_parts();
    let (streaming, b) = packages::upload_routes().into_parts();
    ((private, streaming), RouteNeeds::join([a, b]))
}

/// Every response names the node that served it: behind a load balancer, that is the first
/// thing an operator needs when a request misbehaves.
async fn name_node(State(s): State<AppState>, mut resp: Response) -> Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(&s.config.node_name) {
        resp.headers_mut().insert("x-cuttle-node", v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

async fn method_not_allowed() -> Response {
    let err = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this path"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(err)).into_response()
}

/// Refuses a request whose declared `Content-Length` is over the limit before reading any of
/// its body: the client hears 413 at once instead of after sending it all, or a reset.
pub(crate) async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_JSON_BODY as u64 => too_large().into_response(),
        _ => next.run(request).await,
    }
}

/// Reads an authenticated request's body (every route takes at most 1 MiB of JSON) within the
/// body deadline: a client that sends its headers and then trickles or withholds the body gets
/// 408 instead of holding the connection and a task.
async fn read_body_in_time(State(s): State<AppState>, request: Request, next: Next) -> Response {
    read_within(s, request, next, MAX_JSON_BODY).await
}

/// The most a web UI form takes: a sign-in or a change is a few fields. Read before anyone is
/// known (a sign-in), so kept small.
const MAX_FORM_BODY: usize = 64 * 1024;

/// [`read_body_in_time`] for the web UI's forms, at most [`MAX_FORM_BODY`].
async fn read_form_in_time(State(s): State<AppState>, request: Request, next: Next) -> Response {
    read_within(s, request, next, MAX_FORM_BODY).await
}

async fn read_within(s: AppState, request: Request, next: Next, max: usize) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large().into_response();
    }
    let (parts, body) = request.into_parts();
    let limit = s.config.limits.body_timeout;
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large().into_response(),
        Err(_) => {
            return ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs_f32()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

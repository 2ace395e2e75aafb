//! The public gRPC API, `cuttle.v1` (`proto/cuttle/v1/*.proto`), on its own listener
//! (`CUTTLE_PUBLIC_GRPC_LISTEN`) with the REST listener's TLS and connection limits. Every
//! method runs the operation REST runs (`resources::…`), with the same API keys, the same scope
//! (declared beside each method, in its service's `NEEDS`) and the same audit events. The
//! standard health (`grpc.health.v1`) and reflection services answer without a key.

mod api_keys;
mod artifacts;
mod convert;
mod counted;
mod deployments;
mod documents;
mod environments;
mod events;
mod files;
mod lifecycles;
mod nodes;
mod packages;
mod projects;
mod releases;
mod runbooks;
mod spaces;
mod targets;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::auth::{authenticate, authorize, client_address, presented_key, Caller};
use crate::resources::packages::drain;
use crate::scoped::{Need, ADMIN};
use crate::AppState;

/// Every public service: its full name and what each of its methods needs.
const SERVICES: &[(&str, &[(&str, Need)])] = &[
    (tasks::SERVICE, tasks::NEEDS),
    (spaces::SERVICE, spaces::NEEDS),
    (environments::SERVICE, environments::NEEDS),
    (projects::SERVICE, projects::NEEDS),
    (releases::SERVICE, releases::NEEDS),
    (deployments::SERVICE, deployments::NEEDS),
    (packages::SERVICE, packages::NEEDS),
    (nodes::SERVICE, nodes::NEEDS),
    (lifecycles::SERVICE, lifecycles::NEEDS),
    (runbooks::SERVICE, runbooks::NEEDS),
    (events::SERVICE, events::NEEDS),
    (api_keys::SERVICE, api_keys::NEEDS),
    (targets::SERVICE, targets::NEEDS),
    (artifacts::SERVICE, artifacts::NEEDS),
];

/// The largest message a method takes (REST's body limit); uploads take larger data messages.
const MAX_MESSAGE: usize = crate::MAX_JSON_BODY;
/// The largest health or reflection request.
const MAX_KEYLESS_MESSAGE: usize = 16 * 1024;
/// Methods whose request is a stream the client sends for as long as it needs (an upload, a
/// reflection session). Every other request is one message, read whole within the body
/// deadline (`CUTTLE_HTTP_BODY_TIMEOUT_SECS`) before the method runs, as a REST body is.
const STREAMING_REQUESTS: [&str; 3] = [
    "/cuttle.v1.Packages/Upload",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Paths served without a key: the health check (load balancers) and reflection (it describes
/// only what `proto/` publishes).
const KEYLESS: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What each method (`/cuttle.v1.Tasks/Create`) needs.
fn method_needs() -> HashMap<String, Need> {
    SERVICES
        .iter()
        .flat_map(|(svc, needs)| needs.iter().map(move |(m, n)| (format!("/{svc}/{m}"), *n)))
        .collect()
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    needs: Arc<HashMap<String, Need>>,
}

/// Serves the public API on `listener` until `shutdown`; its health turns NOT_SERVING as soon
/// as the node starts shutting down.
pub(crate) async fn serve(
    state: AppState,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_service = health_service.max_decoding_message_size(MAX_KEYLESS_MESSAGE);
    for (svc, _) in SERVICES {
        health
            .set_service_status(*svc, ServingStatus::Serving)
            .await;
    }
    tokio::spawn(report_shutdown(state.clone(), health, shutdown.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cuttle_proto::PUBLIC_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?
        .max_decoding_message_size(MAX_KEYLESS_MESSAGE);
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cuttle_proto::PUBLIC_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(std::io::Error::other)?
        .max_decoding_message_size(MAX_KEYLESS_MESSAGE);
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(tasks::server(state.clone()))
        .add_service(spaces::server(state.clone()))
        .add_service(environments::server(state.clone()))
        .add_service(projects::server(state.clone()))
        .add_service(releases::server(state.clone()))
        .add_service(deployments::server(state.clone()))
        .add_service(packages::server(state.clone()))
        .add_service(nodes::server(state.clone()))
        .add_service(lifecycles::server(state.clone()))
        .add_service(runbooks::server(state.clone()))
        .add_service(events::server(state.clone()))
        .add_service(api_keys::server(state.clone()))
        .add_service(targets::server(state.clone()))
        .add_service(artifacts::server(state.clone()));
    let guard = Guard {
        state: state.clone(),
        needs: Arc::new(method_needs()),
    };
    let app = routes
        .into_axum_router()
        .layer(from_fn_with_state(guard.clone(), authenticate_call))
        .layer(from_fn_with_state(guard, counted::count_call));
    let config = &state.config;
    crate::listener::serve(
        listener,
        tls,
        app,
        config.limits.clone(),
        config.trusted_proxies.clone(),
        shutdown,
        crate::listener::Protocol::Http2,
    )
    .await
}

async fn report_shutdown(
    state: AppState,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if state.is_shutting_down() {
            break;
        }
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for (svc, _) in SERVICES {
        health
            .set_service_status(*svc, ServingStatus::NotServing)
            .await;
    }
}

/// Finds the caller's key and checks the scope the method needs (a method nobody declared
/// needs `admin`), as REST's `require_api_key` does; the method reads the [`Caller`]. Then runs
/// the call within its deadlines ([`within_deadlines`]) and gives a request tonic could not
/// decode the status a client's mistake has ([`client_faults`]).
async fn authenticate_call(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let keyless = KEYLESS.iter().any(|p| path.starts_with(p));
    if !keyless {
        let Some(key) = presented_key(req.headers()).filter(|k| !k.is_empty()) else {
            return Status::unauthenticated(
                "an API key is required: send metadata x-api-key or authorization: Bearer",
            )
            .into_http();
        };
        let client = client_address(&g.state, req.headers(), req.extensions());
        let found = match authenticate(&g.state, key, client).await {
            Ok(k) => k,
            Err(e) => return convert::status(e).into_http(),
        };
        let need = g.needs.get(&path).copied().unwrap_or(ADMIN);
        let method = path.trim_start_matches('/');
        if let Err(e) = authorize(found.scope, need, method) {
            return convert::status(e).into_http();
        }
        req.extensions_mut().insert(Caller::of_key(found, client));
    }
    let body_timeout = g.state.config.limits.body_timeout;
    // The message and gRPC's 5-byte frame header.
    let max = 5 + if keyless {
        MAX_KEYLESS_MESSAGE
    } else {
        MAX_MESSAGE
    };
    let resp = within_deadlines(&path, (max, body_timeout), req, next).await;
    client_faults(resp)
}

/// Runs a call. A one-message request is read whole first, as REST reads a JSON body: at most
/// `max` bytes (RESOURCE_EXHAUSTED past it, once what the client still sends has been read and
/// dropped, so it hears why) within `body_timeout` (DEADLINE_EXCEEDED past it: a client that
/// trickles or withholds its message holds no call). The client's own `grpc-timeout` bounds the
/// wait for the answer (a stream's answer starts at once and then runs until the client goes
/// away).
async fn within_deadlines(
    path: &str,
    (max, body_timeout): (usize, Duration),
    req: Request,
    next: Next,
) -> Response {
    let deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    let req = if STREAMING_REQUESTS.contains(&path) {
        req
    } else {
        let (parts, body) = req.into_parts();
        let mut stream = body.into_data_stream();
        let read = tokio::time::timeout(body_timeout, async {
            let mut whole = Vec::new();
            while let Some(piece) = stream.next().await {
                let piece = piece.map_err(|e| Status::cancelled(e.to_string()))?;
                if whole.len() + piece.len() > max {
                    return Err(Status::resource_exhausted(format!(
                        "the request message is over {} bytes",
                        max - 5
                    )));
                }
                whole.extend_from_slice(&piece);
            }
            Ok(whole)
        })
        .await;
        match read {
            Ok(Ok(whole)) => Request::from_parts(parts, axum::body::Body::from(whole)),
            Ok(Err(refused)) => {
                drain(&mut stream, body_timeout, |b| b.len()).await;
                return refused.into_http();
            }
            Err(_) => {
                let secs = body_timeout.as_secs_f32();
                return Status::deadline_exceeded(format!(
                    "the request did not arrive within {secs} s"
                ))
                .into_http();
            }
        }
    };
    match deadline {
        None => next.run(req).await,
        Some(d) => match tokio::time::timeout(d, next.run(req)).await {
            Ok(r) => r,
            Err(_) => Status::deadline_exceeded("the call's deadline passed").into_http(),
        },
    }
}

/// `grpc-timeout`: a whole number of at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    if n.is_empty() || n.len() > 8 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic answers a request it cannot decode (not protobuf, cut short, missing) before any method
/// runs, as INTERNAL. That is the client's fault: INVALID_ARGUMENT. Every INTERNAL a method
/// answers carries `google.rpc` details; these never do, which is how they are told apart.
fn client_faults(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    if headers.contains_key("grpc-status-details-bin") {
        return resp;
    }
    if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"13") {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every public service has its scope declared, and nothing else is.
    #[test]
    fn every_public_method_declares_its_scope() {
        let set =
            prost_types::FileDescriptorSet::decode(cuttle_proto::PUBLIC_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "cuttle.v1") {
            for svc in &file.service {
                for m in &svc.method {
                    methods.push(format!("/cuttle.v1.{}/{}", svc.name(), m.name()));
                }
            }
        }
        let needs = method_needs();
        for m in &methods {
            assert!(needs.contains_key(m), "{m} declares no scope");
        }
        for declared in needs.keys() {
            assert!(methods.contains(declared), "{declared} is not a method");
        }
        assert!(methods.len() >= 10, "{methods:?}");
    }

    /// The scope each method's comment in its `.proto` file gives (what a client's generated
    /// code shows) is the scope the method needs.
    #[test]
    fn every_method_needs_the_scope_its_proto_comment_gives() {
        let set =
            prost_types::FileDescriptorSet::decode(cuttle_proto::PUBLIC_DESCRIPTOR_SET).unwrap();
        let needs = method_needs();
        let mut checked = 0;
        for file in set.file.iter().filter(|f| f.package() == "cuttle.v1") {
            let info = file.source_code_info.as_ref().expect("source info kept");
            for (si, svc) in file.service.iter().enumerate() {
                for (mi, m) in svc.method.iter().enumerate() {
                    let path = [6, si as i32, 2, mi as i32];
                    let comment = info
                        .location
                        .iter()
                        .find(|l| l.path == path)
                        .map(|l| l.leading_comments().split_whitespace().collect::<Vec<_>>())
                        .unwrap_or_default()
                        .join(" ");
                    let name = format!("/cuttle.v1.{}/{}", svc.name(), m.name());
                    let said = comment
                        .split("scope ")
                        .nth(1)
                        .and_then(|rest| {
                            rest.split(|c: char| !c.is_ascii_alphabetic() && c != '-')
                                .next()
                        })
                        .unwrap_or_else(|| panic!("{name}: its comment names no scope"));
                    let need = needs[&name];
                    assert_eq!(need.scope.as_str(), said, "{name}: {comment}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn grpc_timeouts_read_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "S", "123456789S", "10x", "-1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_request_tonic_could_not_decode_is_the_clients_fault() {
        let ours = convert::status(crate::error::ApiError::new(
            cuttle_core::ErrorCode::Internal,
            "x",
        ));
        assert_eq!(
            client_faults(ours.into_http()).headers()["grpc-status"],
            "13",
            "a method's own INTERNAL stays"
        );
        let undecodable = Status::internal("failed to decode Protobuf message");
        assert_eq!(
            client_faults(undecodable.into_http()).headers()["grpc-status"],
            "3"
        );
        let range = Status::out_of_range("offset: past the end");
        assert_eq!(
            client_faults(range.into_http()).headers()["grpc-status"],
            "11"
        );
    }
}

//! The public gRPC API, `cuttle.v1` (`proto/cuttle/v1/*.proto`), on its own listener
//! (`CUTTLE_PUBLIC_GRPC_LISTEN`) with the REST listener's TLS and connection limits. Every
//! method runs the operation REST runs (`resources::…`), with the same API keys, the same scope
//! (declared beside each method, in its service's `NEEDS`) and the same audit events. The
//! standard health (`grpc.health.v1`) and reflection services answer without a key.

mod convert;
mod deployments;
mod environments;
mod packages;
mod projects;
mod releases;
mod spaces;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::auth::{authenticate, authorize, client_address, presented_key, Caller};
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
    for (svc, _) in SERVICES {
        health
            .set_service_status(*svc, ServingStatus::Serving)
            .await;
    }
    tokio::spawn(report_shutdown(state.clone(), health, shutdown.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cuttle_proto::PUBLIC_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cuttle_proto::PUBLIC_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(tasks::server(state.clone()))
        .add_service(spaces::server(state.clone()))
        .add_service(environments::server(state.clone()))
        .add_service(projects::server(state.clone()))
        .add_service(releases::server(state.clone()))
        .add_service(deployments::server(state.clone()))
        .add_service(packages::server(state.clone()));
    let guard = Guard {
        state: state.clone(),
        needs: Arc::new(method_needs()),
    };
    let app = routes
        .into_axum_router()
        .layer(from_fn_with_state(guard, authenticate_call));
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
/// needs `admin`), as REST's `require_api_key` does; the method reads the [`Caller`].
async fn authenticate_call(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if KEYLESS.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
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
    req.extensions_mut().insert(Caller {
        name: found.name,
        address: client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        principal: format!("ApiKeys-{}", found.id),
        scope: found.scope,
        target: found.target_name,
        grant: found.grant,
    });
    next.run(req).await
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
}

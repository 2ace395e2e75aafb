//! The api role: the REST/JSON API and the health ping load balancers use.
//!
//! Every `/api` path except the ping needs an API key. Every failure is a JSON error with a
//! 4xx/5xx status; malformed input is always a 4xx, never a 500.

mod auth;
mod error;
mod extract;
mod forwarders;
mod grpc;
mod https;
mod listener;
mod log_follow;
mod openapi;
mod resources;
mod routes;
mod scoped;
mod throttle;
mod ui;
mod wake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use cuttle_core::TrustedProxies;
use cuttle_storage::{Keyring, SharedStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{SETTING_FIRST_ADMIN_KEY, SETTING_FIRST_ADMIN_KEY_USED};
pub use https::Https;
pub use listener::ConnectionLimits;
pub use wake::{LocalWake, WakeReason};

/// Largest JSON body accepted; larger ones get 413.
const MAX_JSON_BODY: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// This node's name: what the ping reports on.
    pub node_name: String,
    /// A node silent for longer than this is shown offline.
    pub offline_after: Duration,
    /// Peers whose `X-Forwarded-For` is believed for audit events.
    pub trusted_proxies: TrustedProxies,
    /// The cluster certificate's thumbprint: what tentacles trust.
    pub cluster_thumbprint: String,
    /// HTTPS on the listener; `None`: plain HTTP (behind a load balancer that terminates TLS).
    pub https: Option<Https>,
    /// What one client may hold of the listener.
    pub limits: ConnectionLimits,
    /// Largest package upload accepted, in bytes; `None`: no limit.
    pub package_max_bytes: Option<u64>,
}

/// What the API needs from the rest of the node.
pub struct ApiDeps {
    pub store: Store,
    pub shared: SharedStore,
    /// Set when this node starts shutting down: the ping answers 418 from then on.
    pub shutting_down: Arc<AtomicBool>,
    /// Wakes the worker in this process, if it hosts one.
    pub local_wake: Option<LocalWake>,
    /// The cluster certificate: other nodes' internal gRPC accepts only it.
    pub cluster: cuttle_tls::ClusterTls,
    /// The data keys: hash presented API keys the way they are stored, seal sensitive values.
    pub data_keys: Keyring,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) store: Store,
    pub(crate) shared: SharedStore,
    pub(crate) shutting_down: Arc<AtomicBool>,
    pub(crate) keys: Arc<auth::KeyCache>,
    pub(crate) data_keys: Keyring,
    pub(crate) waker: wake::Waker,
    /// Checks web UI passwords on threads of its own.
    pub(crate) passwords: Arc<throttle::PasswordPool>,
    /// The web UI's live-log streams: how many each person holds, and one watcher per task.
    pub(crate) streams: Arc<ui::streams::Streams>,
    /// Package uploads in progress, in all and per key.
    pub(crate) uploads: Arc<resources::packages::Uploads>,
    /// Peers sending forwarding headers without being trusted proxies.
    pub(crate) forwarders: Arc<forwarders::UntrustedForwarders>,
}

impl AppState {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Serves the API on a bound listener (and the public gRPC API on its own, when given) until
/// `shutdown`, then finishes in-flight requests.
pub async fn serve(
    config: ApiConfig,
    deps: ApiDeps,
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let waker = wake::start(
        deps.store.clone(),
        config.node_name.clone(),
        config.offline_after,
        deps.local_wake,
        deps.cluster,
        shutdown.clone(),
    );
    // The first admin key's file is removed once that key has been used (on any node).
    let first_key = deps
        .store
        .get_setting(auth::SETTING_FIRST_ADMIN_KEY)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    let state = AppState {
        config: Arc::new(config),
        store: deps.store,
        shared: deps.shared,
        shutting_down: deps.shutting_down,
        keys: Arc::new(auth::KeyCache::watching_first(first_key)),
        data_keys: deps.data_keys,
        waker,
        passwords: Arc::new(throttle::PasswordPool::start()),
        streams: Arc::new(ui::streams::Streams::default()),
        uploads: Arc::new(resources::packages::Uploads::default()),
        forwarders: Arc::new(forwarders::UntrustedForwarders::default()),
    };
    let https = state.config.https.clone();
    let grpc = match grpc_listener {
        None => None,
        Some(l) => {
            let tls = match &https {
                None => None,
                Some(h) => Some(
                    cuttle_tls::grpc_server_config(h.served.clone())
                        .map_err(|e| std::io::Error::other(format!("gRPC TLS settings: {e}")))?,
                ),
            };
            Some(tokio::spawn(grpc::serve(
                state.clone(),
                l,
                tls,
                shutdown.clone(),
            )))
        }
    };
    let (limits, trusted) = (
        state.config.limits.clone(),
        state.config.trusted_proxies.clone(),
    );
    let mut app = routes::router(state).layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    let tls = match https {
        None => None,
        Some(https) => {
            let tls = cuttle_tls::https_server_config(https.served.clone())
                .map_err(|e| std::io::Error::other(format!("HTTPS settings: {e}")))?;
            if let Some(files) = https.files {
                https::watch(files, https.served, shutdown.clone());
            }
            // Browsers that reached the API over HTTPS keep to it.
            app = app.layer(axum::middleware::map_response(
                |mut r: axum::response::Response| async move {
                    r.headers_mut().insert(
                        axum::http::header::STRICT_TRANSPORT_SECURITY,
                        axum::http::HeaderValue::from_static("max-age=31536000"),
                    );
                    r
                },
            ));
            Some(tls)
        }
    };
    let rest = listener::serve(
        listener,
        tls,
        app,
        limits,
        trusted,
        shutdown,
        listener::Protocol::Http1,
    )
    .await;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "public gRPC stopped"),
            Err(e) => tracing::error!(error = %e, "public gRPC crashed"),
        }
    }
    rest
}

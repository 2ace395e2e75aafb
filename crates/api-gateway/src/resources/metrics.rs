//! `/metrics`: Prometheus' text format. What this process observed (requests, claims, task runs,
//! database waits and errors, package bytes) comes from the process's registry
//! (`cuttle_telemetry`); what is true of the whole cluster (the queue, every node, the gateways'
//! sessions) is read from the database for each scrape, so every node shows the same cluster.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use cuttle_core::{NodeRecord, Role, TaskKind, TaskState};
use cuttle_storage::ClusterGauges;
use cuttle_telemetry::{metrics, Snapshot};

use crate::extract::ApiResult;
use crate::openapi::{Content, Op};
use crate::scoped::{Api, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new().get(
        "/metrics",
        READER,
        metrics_text,
        Op::new("getMetrics", "Prometheus metrics").reply(
            200,
            "Prometheus' text format",
            Content::Prometheus,
        ),
    )
}

async fn metrics_text(State(s): State<AppState>) -> ApiResult {
    let snapshot = Snapshot::new();
    this_node(&s, &snapshot);
    let (gauges, nodes) = tokio::join!(
        s.store.cluster_gauges(),
        s.store.list_nodes(s.config.offline_after)
    );
    let read = match (gauges, nodes) {
        (Ok(g), Ok(n)) => {
            cluster(&snapshot, &g, &n);
            true
        }
        (Err(e), _) | (_, Err(e)) => {
            // The node's own metrics are still worth a scrape (the database's errors among
            // them): only the cluster's part is missing.
            tracing::warn!(error = %e, "metrics: the cluster's state could not be read");
            false
        }
    };
    snapshot.value(
        "cuttle_cluster_state_up",
        "Whether this scrape read the cluster's state (queue, nodes) from the database.",
        f64::from(u8::from(read)),
    );
    let text = metrics().render(snapshot);
    Ok((
        [(
            header::CONTENT_TYPE,
            cuttle_telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// What this process holds now: commits, uploads, its database pool, its HTTPS certificate.
fn this_node(s: &AppState, snapshot: &Snapshot) {
    snapshot.counter(
        "cuttle_db_commits_total",
        "Database transactions this node committed.",
        s.store.commits(),
    );
    snapshot.value(
        "cuttle_uploads_in_progress",
        "Package uploads this node is receiving.",
        s.uploads.in_progress() as f64,
    );
    if let Some(pool) = s.store.pool_state() {
        let conns = snapshot.gauge(
            "cuttle_db_pool_connections",
            "This node's database connections, in use or idle.",
            &["state"],
        );
        conns
            .with_label_values(&["in_use"])
            .set(f64::from(pool.open.saturating_sub(pool.idle)));
        conns.with_label_values(&["idle"]).set(f64::from(pool.idle));
        snapshot.value(
            "cuttle_db_pool_max_connections",
            "The most database connections this node opens (CUTTLE_DB_POOL_SIZE).",
            f64::from(pool.max),
        );
    }
    if let Some(at) = s.config.https.as_ref().and_then(|h| h.served.not_after()) {
        metrics()
            .certificate_expiry
            .with_label_values(&["https"])
            .set(at);
    }
}

/// The cluster as the database holds it.
fn cluster(snapshot: &Snapshot, g: &ClusterGauges, nodes: &[NodeRecord]) {
    let tasks = snapshot.gauge(
        "cuttle_queue_tasks",
        "Unfinished tasks in the cluster, by state (Queued, Executing, Cancelling) and kind.",
        &["state", "kind"],
    );
    // Every kind in every unfinished state, 0 when none: an empty queue is a value (a
    // dashboard's zero, an autoscaler's input), not a missing series.
    for state in [
        TaskState::Queued,
        TaskState::Executing,
        TaskState::Cancelling,
    ] {
        for kind in TaskKind::NAMES {
            tasks.with_label_values(&[state.as_str(), kind]).set(0.0);
        }
    }
    for t in &g.tasks {
        tasks
            .with_label_values(&[t.state.as_str(), &t.kind])
            .set(t.count as f64);
    }
    snapshot.value(
        "cuttle_queue_oldest_age_seconds",
        "How long the oldest queued task has waited (0 when nothing is queued).",
        g.oldest_queued_ms.unwrap_or(0).max(0) as f64 / 1000.0,
    );
    let per_node = |name: &str, help: &str| snapshot.gauge(name, help, &["node"]);
    let running = per_node("cuttle_node_running_tasks", "Tasks executing on each node.");
    let cap = per_node("cuttle_node_task_cap", "Each node's task cap.");
    let online = per_node(
        "cuttle_node_online",
        "Whether each node's heartbeat is current.",
    );
    let draining = per_node("cuttle_node_draining", "Whether each node is draining.");
    let storage = per_node(
        "cuttle_node_storage_ok",
        "Whether each node could write the shared store at its last heartbeat.",
    );
    let age = per_node(
        "cuttle_node_heartbeat_age_seconds",
        "Time since each node's last heartbeat (database clock).",
    );
    let sessions = per_node(
        "cuttle_gateway_tentacle_sessions",
        "Polling tentacles holding a session with each gateway node.",
    );
    let info = snapshot.gauge(
        "cuttle_node_info",
        "Each node's version and roles; always 1.",
        &["node", "version", "roles"],
    );
    for n in nodes {
        let name = n.name.as_str();
        running
            .with_label_values(&[name])
            .set(f64::from(n.running_tasks));
        cap.with_label_values(&[name]).set(f64::from(n.task_cap));
        online
            .with_label_values(&[name])
            .set(f64::from(u8::from(n.online)));
        draining
            .with_label_values(&[name])
            .set(f64::from(u8::from(n.draining)));
        storage
            .with_label_values(&[name])
            .set(f64::from(u8::from(n.storage_ok)));
        age.with_label_values(&[name])
            .set((g.now_ms - n.last_seen).max(0) as f64 / 1000.0);
        info.with_label_values(&[name, &n.version, &n.roles.join(",")])
            .set(1.0);
        if n.roles.iter().any(|r| r == Role::Gateway.as_str()) {
            sessions.with_label_values(&[name]).set(0.0);
        }
    }
    for (node, count) in &g.sessions {
        sessions.with_label_values(&[node]).set(*count as f64);
    }
}

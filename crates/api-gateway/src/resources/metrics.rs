//! `/metrics`: Prometheus text for the cluster's nodes and this node's database commits.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::extract::ApiResult;
use crate::openapi::{Content, Op};
use crate::scoped::{Api, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new().get(
        "/metrics",
        READER,
        metrics,
        Op::new("getMetrics", "Prometheus metrics").reply(
            200,
            "Prometheus' text format",
            Content::Prometheus,
        ),
    )
}

async fn metrics(State(s): State<AppState>) -> ApiResult {
    let nodes = s.store.list_nodes(s.config.offline_after).await?;
    let mut out = String::new();
    out.push_str("# HELP cuttle_db_commits_total Database transactions committed by this node.\n");
    out.push_str("# TYPE cuttle_db_commits_total counter\n");
    out.push_str(&format!("cuttle_db_commits_total {}\n", s.store.commits()));
    out.push_str("# HELP cuttle_uploads_in_progress Package uploads this node is receiving.\n");
    out.push_str("# TYPE cuttle_uploads_in_progress gauge\n");
    out.push_str(&format!(
        "cuttle_uploads_in_progress {}\n",
        s.uploads.in_progress()
    ));
    out.push_str("# HELP cuttle_node_running_tasks Tasks executing on each node.\n");
    out.push_str("# TYPE cuttle_node_running_tasks gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "cuttle_node_running_tasks{{node=\"{}\"}} {}\n",
            n.name, n.running_tasks
        ));
    }
    out.push_str("# HELP cuttle_node_online Whether each node's heartbeat is current.\n");
    out.push_str("# TYPE cuttle_node_online gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "cuttle_node_online{{node=\"{}\"}} {}\n",
            n.name,
            u8::from(n.online)
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

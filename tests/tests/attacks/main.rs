//! The attacks of the second security review, each performed as written against real nodes:
//! every test here failed before its defence existed. `docs/security.md` lists each defence
//! with its test.

use std::time::Duration;

use cuttle_e2e::{Cluster, NodeOptions};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);

mod connections;
mod keys;
mod packages;
mod scripts;
mod web;

/// Starts `t` as a polling tentacle of `n` in Production with the role `web`, and waits until a
/// gateway holds its session.
fn web_tentacle(n: &cuttle_e2e::Node, t: &mut cuttle_e2e::Tentacle, api_key: &str) {
    production(n);
    let out = t.register(&n.url(""), api_key, "web", "polling", &["Production"], &[]);
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("Machines-"))
        .unwrap_or_else(|| panic!("no target id in {out:?}"))
        .to_owned();
    t.start();
    cuttle_e2e::wait_until("the tentacle's session", MIN, || {
        let (_, target) = n.get(&format!("/api/targets/{id}"));
        (!target["connected_nodes"].as_array()?.is_empty()).then_some(())
    });
}

/// The id of the environment "Production", made if it is not there yet.
fn production(n: &cuttle_e2e::Node) -> String {
    let envs = "/api/spaces/default/environments";
    let (_, list) = n.get(envs);
    if let Some(e) = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "Production"))
    {
        return e["id"].as_str().unwrap().to_owned();
    }
    let (status, made) = n.post(envs, &json!({"name": "Production"}));
    assert_eq!(status, 201, "{made}");
    made["id"].as_str().unwrap().to_owned()
}

/// A project "Shop" with one environment, `steps` as its process and `variables`, released as
/// 1.0.0 and deployed: the deployment's task, once finished, and its log.
fn deploy_once(
    n: &cuttle_e2e::Node,
    steps: serde_json::Value,
    variables: serde_json::Value,
) -> (serde_json::Value, String) {
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let env = production(n);
    let (_, project) = n.post("/api/spaces/default/projects", &json!({"name": "Shop"}));
    let path = format!("/api/spaces/default/projects/{}", id(&project));
    let (status, saved) = n.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&json!({"version": 1, "steps": steps}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, saved) = n.request(
        "PUT",
        &format!("{path}/variables"),
        Some(&json!({"version": 2, "variables": variables}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, release) = n.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    assert_eq!(status, 201, "{release}");
    let (status, d) = n.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": id(&release), "environment_id": env}),
    );
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap();
    (n.wait_finished(task, MIN), n.task_log(task))
}

//! `cuttle-bench deploy`: one deployment of a three-step process (two steps on every target,
//! one on the node) to N simulated polling tentacles, against one node (release build, SQLite).
//! Reports the wall time, each step's time, the node's memory and the database commits per
//! target-step.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cuttle_e2e::{Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

use crate::tentacles::{rss_of, start_sims};

/// The `id` of an API answer.
pub(crate) fn id(v: &Value) -> Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {v}"))
}

fn commits(node: &Node) -> u64 {
    let (_, text) = node.get("/metrics");
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("cuttle_db_commits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn run(count: usize) -> Result<()> {
    println!("\n## one deployment, 3 steps, {count} polling tentacles, one node (SQLite)");
    let cluster = Cluster::new(Database::Sqlite)?;
    let node = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
        ..NodeOptions::named("n1", 8)
    });
    let sims = start_sims(
        &node,
        count,
        json!({"environments": ["Bench"], "roles": ["web"]}),
    )?;
    let _guard = sims.runtime.enter();
    let env = id(&node
        .post(
            "/api/spaces/default/environments",
            &json!({"name": "Bench"}),
        )
        .1)?;
    let project = id(&node
        .post("/api/spaces/default/projects", &json!({"name": "Bench"}))
        .1)?;
    let path = format!("/api/spaces/default/projects/{project}");
    let step = |name: &str, roles: Value| {
        json!({"name": name, "target_roles": roles,
               "action": {"type": "script", "script": "echo #{Cuttle.Step.Name}"}})
    };
    let process = json!({"version": 1, "steps": [
        step("Stop", json!(["web"])),
        step("Deploy", json!(["web"])),
        step("Notify", json!([])),
    ]});
    let (status, body) = node.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    anyhow::ensure!(status == 200, "save the process: {body}");
    let release = id(&node
        .post(&format!("{path}/releases"), &json!({"version": "1.0.0"}))
        .1)?;
    let rss_before = rss_of(&node);
    let commits_before = commits(&node);
    let started = Instant::now();
    let (status, d) = node.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": release, "environment_id": env}),
    );
    anyhow::ensure!(status == 201, "deploy: {d}");
    let task = d["task_id"].as_str().unwrap_or_default().to_owned();
    // Peak memory while it runs, sampled.
    let mut rss_peak = rss_before;
    let t = loop {
        rss_peak = rss_peak.max(rss_of(&node));
        let t = node.task(&task);
        if matches!(
            t["state"].as_str(),
            Some("Success" | "Failed" | "Canceled" | "TimedOut")
        ) {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(t["state"] == "Success", "the deployment failed: {t}");
    let commits = commits(&node).saturating_sub(commits_before);
    let log = node.task_log(&task);
    println!("| measure | value |\n|---|---|");
    println!("| deployment, queued → done | {wall:.2} s |");
    for line in log.lines().filter(|l| l.contains(": succeeded in ")) {
        if let Some(rest) = line.split("=== ").nth(1) {
            println!("| {} |  |", rest.replace(": succeeded in ", " | "));
        }
    }
    println!(
        "| node memory (RSS) before / peak | {} MiB / {} MiB |",
        rss_before >> 10,
        rss_peak >> 10
    );
    let target_steps = 2 * count + 1;
    println!(
        "| database commits / per target-step | {commits} / {:.2} |",
        commits as f64 / target_steps as f64
    );
    drop(_guard);
    sims.runtime.shutdown_background();
    Ok(())
}

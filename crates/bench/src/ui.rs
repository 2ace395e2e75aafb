//! `cuttle-bench ui`: how long the web UI's pages take with a cluster's worth of data behind
//! them — by default 1,000 finished tasks, 100 targets, 5 projects deployed to 3 environments,
//! on one node (release build, PostgreSQL). Each page is fetched with a signed-in session,
//! sequentially, over loopback with a kept-alive connection; the time to the last byte bounds
//! the node's own rendering time from above.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cuttle_e2e::web::{no_redirects, session_of};
use cuttle_e2e::{wait_until, Cluster, Database, Node, NodeOptions};
use serde_json::json;

use crate::deploy::id;
use crate::{percentile, sleep0};

/// Finished tasks, pushed by `clients` threads, then waited for.
fn seed_tasks(node: &Node, count: usize) -> Result<()> {
    let clients = 8;
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                for _ in (c..count).step_by(clients) {
                    node.enqueue(sleep0());
                }
            });
        }
    });
    wait_until(
        "the seeded tasks to finish",
        Duration::from_secs(600),
        || {
            let (_, q) = node.get("/api/tasks?state=Queued&limit=1");
            let (_, r) = node.get("/api/tasks?state=Executing&limit=1");
            (q["items"].as_array()?.is_empty() && r["items"].as_array()?.is_empty()).then_some(())
        },
    );
    Ok(())
}

fn seed_targets(node: &Node, count: usize, environments: &[String]) -> Result<()> {
    for i in 0..count {
        let (status, t) = node.post(
            "/api/targets",
            &json!({
                "name": format!("web-{i:03}"),
                "environments": [environments[i % environments.len()]],
                "roles": ["web"],
                "comms": "polling",
                "thumbprint": format!("{:064X}", i + 1),
            }),
        );
        if status != 201 {
            bail!("register target {i}: {status} {t}");
        }
    }
    Ok(())
}

/// Projects with a release deployed through every environment (steps on the node).
fn seed_projects(node: &Node, projects: usize, environments: &[String]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut releases = Vec::new();
    for p in 0..projects {
        let project = id(&node
            .post(
                "/api/spaces/default/projects",
                &json!({"name": format!("Service {p}")}),
            )
            .1)?;
        let path = format!("/api/spaces/default/projects/{project}");
        let (status, body) = node.request(
            "PUT",
            &format!("{path}/deploymentprocess"),
            Some(
                &json!({"version": 1, "steps": [
                    {"name": "Migrate", "action": {"type": "script", "script": "echo migrate"}},
                    {"name": "Release", "action": {"type": "script", "script": "echo release"}},
                ]})
                .to_string(),
            ),
        );
        if status != 200 {
            bail!("process of {project}: {status} {body}");
        }
        let (status, r) = node.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
        if status != 201 {
            bail!("release of {project}: {status} {r}");
        }
        releases.push(id(&r)?);
        ids.push(project);
    }
    // Environment by environment (the default lifecycle), every project at once.
    for env in environments {
        let tasks: Vec<String> = releases
            .iter()
            .map(|r| {
                let (status, d) = node.post(
                    "/api/spaces/default/deployments",
                    &json!({"release_id": r, "environment_id": env}),
                );
                if status != 201 {
                    bail!("deploy {r} to {env}: {status} {d}");
                }
                Ok(d["task_id"].as_str().unwrap_or_default().to_owned())
            })
            .collect::<Result<_>>()?;
        for t in tasks {
            let done = node.wait_finished(&t, Duration::from_secs(120));
            if done["state"] != "Success" {
                bail!("deployment task {t} ended {}", done["state"]);
            }
        }
    }
    Ok(ids)
}

/// A signed-in session's cookie value.
pub(crate) fn sign_in(node: &Node) -> Result<String> {
    let resp = no_redirects()
        .post(&node.url("/ui/sign-in"))
        .send_form([("api_key", node.api_key().as_str())])?;
    let set = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let cookie = session_of(set);
    if cookie.is_empty() {
        bail!("no session cookie from the sign-in: {}", resp.status());
    }
    Ok(cookie)
}

pub(crate) fn run(tasks: usize, targets: usize, samples: usize) -> Result<()> {
    println!(
        "\n## web UI pages: {tasks} finished tasks, {targets} targets, 5 projects x 3 environments, one node (PostgreSQL)"
    );
    let cluster = Cluster::new(Database::Postgres)?;
    let node = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
        ..NodeOptions::named("n1", 16)
    });
    let environments: Vec<String> = ["Development", "Test", "Production"]
        .iter()
        .map(|n| {
            id(&node
                .post("/api/spaces/default/environments", &json!({"name": n}))
                .1)
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    seed_targets(&node, targets, &environments)?;
    let projects = seed_projects(&node, 5, &environments)?;
    seed_tasks(&node, tasks)?;
    let (_, list) = node.get("/api/tasks?limit=1");
    let newest = id(&list["items"][0])?;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());

    let cookie = format!("cuttle_session={}", sign_in(&node)?);
    let agent = no_redirects();
    let pages = [
        "/ui/nodes".to_owned(),
        "/ui/tasks".to_owned(),
        "/ui/tasks?state=Success".to_owned(),
        // A rare kind: the list reads back through every task to fill its page.
        "/ui/tasks?kind=Deploy".to_owned(),
        format!("/ui/tasks/{newest}"),
        "/ui/dashboard".to_owned(),
        "/ui/projects".to_owned(),
        format!("/ui/projects/{}", projects[0]),
        "/ui/environments".to_owned(),
        "/ui/lifecycles".to_owned(),
        "/ui/targets".to_owned(),
        "/ui/events".to_owned(),
    ];
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "page", "median ms", "p95 ms", "max ms", "KiB"
    );
    let mut worst = 0.0f64;
    for page in &pages {
        let mut times = Vec::with_capacity(samples);
        let mut bytes = 0;
        for i in 0..samples + 5 {
            let at = Instant::now();
            let mut resp = agent
                .get(&node.url(page))
                .header("Cookie", &cookie)
                .call()?;
            let body = resp.body_mut().read_to_string()?;
            let took = at.elapsed();
            if resp.status().as_u16() != 200 {
                bail!("{page}: {} {body}", resp.status());
            }
            bytes = body.len();
            // The first few warm the connection and the node's caches.
            if i >= 5 {
                times.push(took.as_micros() as i64);
            }
        }
        times.sort_unstable();
        let median = percentile(&times, 0.5) as f64 / 1000.0;
        worst = worst.max(median);
        println!(
            "{page:<34} {median:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            percentile(&times, 0.95) as f64 / 1000.0,
            *times.last().unwrap_or(&0) as f64 / 1000.0,
            bytes as f64 / 1024.0
        );
    }
    println!(
        "slowest page's median: {worst:.2} ms (goal: under 50 ms); {samples} samples per page after 5 warm-up loads"
    );
    Ok(())
}

//! `cuttle release create`, `cuttle deploy`, `cuttle deployment`, `cuttle runbook run`: what a
//! build pipeline and an operator run. Projects,
//! environments and releases are named as people name them (`Shop`, `Production`, `1.4.2`);
//! `deploy --wait` follows the deployment's log and exits non-zero unless it succeeded.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::cluster::follow_log;
use crate::model::find;
use crate::output::{show, Output};
use crate::Api;

#[derive(Subcommand)]
pub(crate) enum DeploymentCmd {
    /// The space's deployments, newest first
    List {
        /// Only this project's, by name or id
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One deployment, by id (`Deployments-7`)
    Show { id: String },
}

const DEPLOYMENT_COLS: &[&str] = &[
    "id",
    "project_id",
    "release_id",
    "environment_id",
    "state",
    "created_by",
    "created_at",
    "completed_at",
];

pub(crate) fn deployment(api: &Api, out: Output, space: &str, cmd: DeploymentCmd) -> Result<()> {
    match cmd {
        DeploymentCmd::List { project, limit } => {
            let mut path = format!("/api/spaces/{space}/deployments?limit={limit}");
            if let Some(p) = project {
                let p = find(api, &format!("/api/spaces/{space}/projects"), "project", &p)?;
                path.push_str(&format!("&project_id={}", id(&p)));
            }
            show(out, &api.json("GET", &path, None)?, DEPLOYMENT_COLS);
        }
        DeploymentCmd::Show { id } => {
            let d = api.json(
                "GET",
                &format!("/api/spaces/{space}/deployments/{id}"),
                None,
            )?;
            show(out, &d, DEPLOYMENT_COLS);
        }
    }
    Ok(())
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Creates a release of a project; returns it.
pub(crate) fn create_release(
    api: &Api,
    space: &str,
    project: &str,
    version: &str,
    notes: Option<String>,
) -> Result<Value> {
    let p = find(
        api,
        &format!("/api/spaces/{space}/projects"),
        "project",
        project,
    )?;
    api.json(
        "POST",
        &format!("/api/spaces/{space}/projects/{}/releases", id(&p)),
        Some(json!({"version": version, "notes": notes.unwrap_or_default()})),
    )
}

/// What a deployment or run leaves out: only these targets (none: every one), not these steps.
#[derive(Default)]
pub(crate) struct Pick {
    pub(crate) targets: Vec<String>,
    pub(crate) skip_steps: Vec<String>,
}

/// Deploys a release (`project`, `version`) to `environment`; with `wait`, follows its log and
/// fails unless it succeeded.
pub(crate) fn deploy(
    api: &Api,
    space: &str,
    (project, version, environment): (&str, &str, &str),
    pick: Pick,
    wait: bool,
) -> Result<Value> {
    let p = find(
        api,
        &format!("/api/spaces/{space}/projects"),
        "project",
        project,
    )?;
    let releases = api.json(
        "GET",
        &format!("/api/spaces/{space}/projects/{}/releases", id(&p)),
        None,
    )?;
    let release = releases["items"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|r| {
                r["version"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(version))
            })
        })
        .cloned()
        .with_context(|| format!("project {project:?} has no release {version:?}"))?;
    let env = find(
        api,
        &format!("/api/spaces/{space}/environments"),
        "environment",
        environment,
    )?;
    let d = api.json(
        "POST",
        &format!("/api/spaces/{space}/deployments"),
        Some(json!({
            "release_id": id(&release), "environment_id": id(&env),
            "targets": pick.targets, "skip_steps": pick.skip_steps,
        })),
    )?;
    if !wait {
        return Ok(d);
    }
    let task = d["task_id"].as_str().unwrap_or_default().to_owned();
    follow_log(api, &task, true)?;
    let t = api.json("GET", &format!("/api/tasks/{task}"), None)?;
    if t["state"] != "Success" {
        bail!(
            "deployment {} ended {}: {}",
            id(&d),
            t["state"].as_str().unwrap_or("?"),
            t["error"].as_str().unwrap_or("")
        );
    }
    Ok(d)
}

/// Runs a published runbook in an environment; with `wait`, follows its log and fails unless
/// it succeeded. Returns the task.
pub(crate) fn run_runbook(
    api: &Api,
    space: &str,
    (runbook, environment): (&str, &str),
    targets: Vec<String>,
    wait: bool,
) -> Result<Value> {
    let rb = find(
        api,
        &format!("/api/spaces/{space}/runbooks"),
        "runbook",
        runbook,
    )?;
    let env = find(
        api,
        &format!("/api/spaces/{space}/environments"),
        "environment",
        environment,
    )?;
    let task = api.json(
        "POST",
        &format!("/api/spaces/{space}/runbooks/{}/runs", id(&rb)),
        Some(json!({"environment_id": id(&env), "targets": targets})),
    )?;
    if !wait {
        return Ok(task);
    }
    let tid = id(&task);
    follow_log(api, &tid, true)?;
    let t = api.json("GET", &format!("/api/tasks/{tid}"), None)?;
    if t["state"] != "Success" {
        bail!(
            "runbook run {tid} ended {}: {}",
            t["state"].as_str().unwrap_or("?"),
            t["error"].as_str().unwrap_or("")
        );
    }
    Ok(t)
}

//! `Retention`: what each project keeps (`retention.releases_to_keep`: its newest releases;
//! `retention.releases_per_environment`: in each environment, the deployments of the newest
//! releases deployed there keep their logs and artifacts), and what the package repository
//! keeps (the newest versions of each id, never one a remaining release deploys). Decisions
//! are `cuttle_core::retention`'s; this does the I/O, reports each removal in its log, and
//! removes only what is still there, so running it again removes nothing more.

use std::collections::{BTreeMap, HashSet};

use cuttle_core::retention::{
    releases_in_use, releases_to_remove, tasks_losing_logs, versions_to_remove, DeploymentFacts,
};
use cuttle_core::{package_version_key, NewEvent, SemVer};
use cuttle_storage::{audit_as, Document, Execution, PackageRecord};

use super::Executor;
use crate::ctx::{TaskCtx, TaskError, TaskResult};

pub(crate) struct Retention {
    pub(crate) package_versions_to_keep: u32,
}

impl Executor for Retention {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        ctx.until_stopped(retain(key, self.package_versions_to_keep, ctx))
            .await
    }
}

fn failed(why: String) -> TaskError {
    TaskError::Failed(why)
}

fn event(key: Execution, action: &str, target: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        actor: format!("Retention ({})", key.task),
        action: action.to_owned(),
        target,
        client_address: String::new(),
        details,
    }
}

/// What was removed, for the closing line.
#[derive(Default)]
struct Removed {
    releases: u64,
    logs: u64,
    artifacts: u64,
    packages: u64,
}

async fn retain(key: Execution, keep_versions: u32, ctx: &TaskCtx) -> TaskResult {
    let store = &ctx.targets.store;
    let mut removed = Removed::default();
    // (space, package id lower-case, version key) of every package a remaining release deploys.
    let mut in_use: HashSet<(String, String, String)> = HashSet::new();
    let spaces = store
        .list_documents("", "Space")
        .await
        .map_err(|e| failed(format!("read spaces: {e}")))?;
    for space in spaces {
        let space_id = format!("Spaces-{}", space.id);
        let projects = store
            .list_documents(&space_id, "Project")
            .await
            .map_err(|e| failed(format!("read projects: {e}")))?;
        for project in projects {
            project_retention(key, &space_id, &project, &mut removed, ctx).await?;
        }
        // What the remaining releases deploy, and what processes and published runbooks name.
        let pins = cuttle_storage::package_pins(store, &space_id)
            .await
            .map_err(|e| failed(format!("read what names package versions: {e}")))?;
        in_use.extend(
            pins.into_iter()
                .map(|p| (p.space, p.package_id, p.version_key)),
        );
    }
    if keep_versions > 0 {
        package_retention(key, keep_versions as usize, &in_use, &mut removed, ctx).await?;
    }
    ctx.logs
        .line(
            key,
            format!(
                "INFO  retention done: {} release(s), {} deployment log(s), {} artifact(s), {} \
                 package version(s) removed",
                removed.releases, removed.logs, removed.artifacts, removed.packages
            ),
        )
        .await;
    Ok(())
}

/// Every deployment of a project, newest first.
async fn deployments_of(
    space: &str,
    project: i64,
    ctx: &TaskCtx,
) -> Result<Vec<DeploymentFacts>, TaskError> {
    let all = ctx
        .targets
        .store
        .all_deployments_of(space, project)
        .await
        .map_err(|e| failed(format!("read deployments: {e}")))?;
    Ok(all.iter().map(|d| d.facts()).collect())
}

async fn project_retention(
    key: Execution,
    space: &str,
    project: &Document,
    removed: &mut Removed,
    ctx: &TaskCtx,
) -> TaskResult {
    let store = &ctx.targets.store;
    let setting = |name: &str| project.body["retention"][name].as_u64().unwrap_or(0) as usize;
    let (keep_releases, keep_per_env) = (
        setting("releases_to_keep"),
        setting("releases_per_environment"),
    );
    let deployments = deployments_of(space, project.id, ctx).await?;
    let mut releases = store
        .list_releases(project.id)
        .await
        .map_err(|e| failed(format!("read releases of {}: {e}", project.name)))?;
    let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
    let gone = releases_to_remove(&ids, keep_releases, &releases_in_use(&deployments));
    for r in releases.iter().filter(|r| gone.contains(&r.id)) {
        let audit = audit_as(event(
            key,
            "release.delete",
            format!("Releases-{}", r.id),
            serde_json::json!({"version": r.version, "reason": format!("retention: keep {keep_releases}")}),
        ));
        if store
            .delete_release(space, r.id, Some(audit))
            .await
            .map_err(|e| failed(format!("remove release {}: {e}", r.version)))?
        {
            removed.releases += 1;
            ctx.logs
                .line(
                    key,
                    format!(
                        "INFO  {}: release {} removed (the project keeps {keep_releases})",
                        project.name, r.version
                    ),
                )
                .await;
        }
    }
    releases.retain(|r| !gone.contains(&r.id));
    let versions: BTreeMap<i64, &str> = releases
        .iter()
        .map(|r| (r.id, r.version.as_str()))
        .collect();
    for task in tasks_losing_logs(&deployments, keep_per_env) {
        let Some(record) = store
            .get_task(task)
            .await
            .map_err(|e| failed(format!("read task {task}: {e}")))?
        else {
            continue;
        };
        let release = deployments
            .iter()
            .find(|d| d.task == task)
            .and_then(|d| versions.get(&d.release).copied())
            .unwrap_or("(removed)");
        let why = format!(
            "project {} keeps the deployments of {keep_per_env} release(s) per environment",
            project.name
        );
        let shared = ctx.targets.shared.clone();
        let (logs, artifacts) = tokio::task::spawn_blocking(move || {
            Ok::<_, cuttle_storage::Error>((
                shared.clear_task_log(&record, &why)?,
                shared.remove_artifacts(task)?,
            ))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("remove the log of {task}: {e}")))?;
        if logs || artifacts > 0 {
            removed.logs += u64::from(logs);
            removed.artifacts += artifacts as u64;
            ctx.logs
                .line(
                    key,
                    format!(
                        "INFO  {}: deployment {task} of release {release}: log{} removed, \
                         {artifacts} artifact(s) removed",
                        project.name,
                        if logs { "" } else { " already" }
                    ),
                )
                .await;
        }
    }
    Ok(())
}

async fn package_retention(
    key: Execution,
    keep: usize,
    in_use: &HashSet<(String, String, String)>,
    removed: &mut Removed,
    ctx: &TaskCtx,
) -> TaskResult {
    let store = &ctx.targets.store;
    let all = store
        .list_packages(None, None)
        .await
        .map_err(|e| failed(format!("read the repository: {e}")))?;
    let mut by_id: BTreeMap<(String, String), Vec<PackageRecord>> = BTreeMap::new();
    for p in all {
        by_id
            .entry((p.space.clone(), p.package_id.to_lowercase()))
            .or_default()
            .push(p);
    }
    for ((space, id), versions) in by_id {
        let keyed: Vec<(String, SemVer)> = versions
            .iter()
            .filter_map(|p| {
                let v = p.version.parse::<SemVer>().ok()?;
                Some((package_version_key(&v), v))
            })
            .collect();
        let used: HashSet<String> = in_use
            .iter()
            .filter(|(s, i, _)| *s == space && *i == id)
            .map(|(_, _, v)| v.clone())
            .collect();
        for version_key in versions_to_remove(&keyed, keep, &used) {
            let Some(p) = versions.iter().find(|p| {
                p.version
                    .parse::<SemVer>()
                    .is_ok_and(|v| package_version_key(&v) == version_key)
            }) else {
                continue;
            };
            let audit = audit_as(event(
                key,
                "package.delete",
                format!("{}.{}", p.package_id, p.version),
                serde_json::json!({"reason": format!("retention: keep {keep} versions")}),
            ));
            let gone = cuttle_storage::remove_package(
                store,
                &ctx.targets.shared,
                &ctx.node,
                p,
                &version_key,
                Some(audit),
            )
            .await
            .map_err(|e| failed(format!("remove {} {}: {e}", p.package_id, p.version)))?;
            if gone.is_some() {
                removed.packages += 1;
                ctx.logs
                    .line(
                        key,
                        format!(
                            "INFO  package {} {} removed (the repository keeps {keep} versions \
                             of each package)",
                            p.package_id, p.version
                        ),
                    )
                    .await;
            }
        }
    }
    Ok(())
}

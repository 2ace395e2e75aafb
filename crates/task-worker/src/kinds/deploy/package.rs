//! A package step on one target: the package sent from the shared store (skipped when the
//! target already holds that exact file), unpacked into
//! `Applications/{environment}/{package_id}/{version}` with `#{…}` replaced in the files the
//! step names, then the package's `deploy.sh` and the step's script, both run in that folder.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cuttle_core::plan::{
    environment, literal_values, secrets, substitute_script, Action, Shell, Step, Value,
};
use cuttle_core::{glob_match, package_version_key, parse_package_version, TargetRecord};
use cuttle_proto::v1::{ExtractPackageRequest, FileHeader, RunScriptRequest};
use cuttle_storage::{Execution, PackageRecord};

use super::{failed, values_at, Plan};
use crate::ctx::{TaskCtx, TaskError};
use crate::output::{Output, SetOutput};
use crate::tentacles::{extract_on, run_script_on, send_file};

/// What a target-side call of a package step needs from its deployment.
pub(super) struct At<'a> {
    pub(super) plan: &'a Plan,
    pub(super) outputs: &'a BTreeMap<String, Value>,
    pub(super) key: Execution,
    pub(super) ctx: &'a TaskCtx,
}

/// The version a step deploys: the one its release chose, else the one it names, else the
/// newest in the repository (a runbook, run as it is now).
pub(super) async fn resolve(
    step: &Step,
    plan: &Plan,
    key: Execution,
    ctx: &TaskCtx,
) -> Result<PackageRecord, TaskError> {
    let Action::DeployPackage {
        package_id,
        version,
        ..
    } = &step.action
    else {
        return Err(failed("not a package step"));
    };
    let chosen = plan
        .packages
        .get(&step.name)
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| version.clone());
    let store = &ctx.targets.store;
    let found = match chosen {
        Some(v) => {
            let parsed = parse_package_version(&v).map_err(|e| failed(e.0))?;
            store
                .get_package(&plan.space, package_id, &package_version_key(&parsed))
                .await
                .map_err(|e| failed(format!("read package {package_id}: {e}")))?
                .ok_or_else(|| {
                    failed(format!(
                        "package {package_id} version {v} is no longer in the repository"
                    ))
                })?
        }
        None => cuttle_storage::newest_package(
            store
                .list_packages(Some(&plan.space), Some(package_id))
                .await
                .map_err(|e| failed(format!("read package {package_id}: {e}")))?,
        )
        .ok_or_else(|| failed(format!("the repository has no package {package_id}")))?,
    };
    // A release deploys exactly the bytes it was made with: the SHA-256 it recorded.
    let recorded = plan
        .packages
        .get(&step.name)
        .and_then(|p| p.get("sha256"))
        .and_then(|v| v.as_str());
    if let Some(recorded) = recorded {
        if !recorded.eq_ignore_ascii_case(&found.sha256) {
            return Err(failed(format!(
                "package {} version {} in the repository (SHA-256 {}) is not the one the release \
                 was made with (SHA-256 {recorded}): not deployed",
                found.package_id, found.version, found.sha256
            )));
        }
    }
    ctx.logs
        .line(
            key,
            format!(
                "INFO  package {} {} ({} bytes, SHA-256 {})",
                found.package_id, found.version, found.size, found.sha256
            ),
        )
        .await;
    Ok(found)
}

/// A name safe as one folder name on the target.
fn folder_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "_".to_owned(),
        t => t.to_owned(),
    }
}

/// Runs the step on one target; its output variables, or why it failed (naming the target).
pub(super) async fn on_target(
    t: &TargetRecord,
    step: &Step,
    p: &PackageRecord,
    shell: &str,
    limit: Duration,
    at: &At<'_>,
) -> Result<Vec<SetOutput>, String> {
    let started = Instant::now();
    let ran = tokio::time::timeout(limit, deploy_to(t, step, p, shell, at))
        .await
        .unwrap_or_else(|_| Err(format!("{}: timed out after {} s", t.name, limit.as_secs())));
    let took = started.elapsed().as_secs_f64();
    let line = match &ran {
        Ok(_) => format!("INFO  [{}] succeeded in {took:.1} s", t.name),
        Err(e) => format!("ERROR [{}] failed in {took:.1} s: {e}", t.name),
    };
    at.ctx.logs.line(at.key, line).await;
    ran
}

async fn deploy_to(
    t: &TargetRecord,
    step: &Step,
    p: &PackageRecord,
    shell: &str,
    at: &At<'_>,
) -> Result<Vec<SetOutput>, String> {
    let Action::DeployPackage {
        substitute_in_files,
        script,
        ..
    } = &step.action
    else {
        return Err("not a package step".into());
    };
    let (ctx, key) = (at.ctx, at.key);
    let file_name = p.file.rsplit('/').next().unwrap_or(&p.file);
    let header = FileHeader {
        path: format!("packages/{file_name}"),
        size: p.size,
        sha256: p.sha256.clone(),
        skip_if_present: true,
    };
    let sent_at = Instant::now();
    let source = ctx.targets.shared.package_path(&p.file);
    let sent = send_file(t, &source, &header, ctx).await?;
    let secs = sent_at.elapsed().as_secs_f64();
    let line = if sent.already_present {
        format!(
            "INFO  [{}] already holds {} {} (same SHA-256): not sent again",
            t.name, p.package_id, p.version
        )
    } else {
        format!(
            "INFO  [{}] sent {} bytes in {secs:.1} s ({:.0} MiB/s)",
            t.name,
            sent.size,
            sent.size as f64 / 1_048_576.0 / secs.max(0.001)
        )
    };
    ctx.logs.line(key, line).await;

    let values = values_at(at.plan, step, at.outputs, Some(t));
    let destination = format!(
        "{}/{}/{}",
        folder_name(&at.plan.environment_name),
        p.package_id,
        folder_name(&p.version)
    );
    let request = ExtractPackageRequest {
        package_path: header.path.clone(),
        format: p.format.extension().to_owned(),
        destination,
        substitute_in_files: substitute_in_files.clone(),
        // Substituted here: the tentacle puts them in files as they are, never looking
        // another variable up through a value a script's output chose.
        variables: literal_values(&values).into_iter().collect(),
    };
    let unpacked = extract_on(t, request, ctx).await?;
    ctx.logs
        .line(
            key,
            format!(
                "INFO  [{}] unpacked {} file(s), {} bytes, into {}",
                t.name, unpacked.files, unpacked.bytes, unpacked.path
            ),
        )
        .await;
    if !unpacked.substituted.is_empty() {
        ctx.logs
            .line(
                key,
                format!(
                    "INFO  [{}] variables substituted in {}",
                    t.name,
                    unpacked.substituted.join(", ")
                ),
            )
            .await;
    }
    for g in substitute_in_files {
        if !unpacked.substituted.iter().any(|f| glob_match(g, f)) {
            ctx.logs
                .line(key, format!("WARN  [{}] no file matches {g:?}", t.name))
                .await;
        }
    }

    let mut env: HashMap<String, String> = environment(&values).into_iter().collect();
    env.insert("CUTTLE_TASK_ID".into(), key.task.to_string());
    env.insert("CUTTLE_TARGET_NAME".into(), t.name.clone());
    env.insert("CUTTLE_PACKAGE_PATH".into(), unpacked.path.clone());
    let out = Output::step(secrets(&values));
    let mut scripts = Vec::new();
    if unpacked.has_deploy_script {
        scripts.push(("deploy.sh", "sh ./deploy.sh".to_owned(), "sh"));
    }
    if let Some(s) = script {
        let s = substitute_script(s, &values, Shell::of(shell))
            .map_err(|e| format!("{}: {e}", t.name))?;
        scripts.push(("the step's script", s, shell));
    }
    for (what, script, shell) in scripts {
        ctx.logs
            .line(key, format!("INFO  [{}] running {what}", t.name))
            .await;
        let request = RunScriptRequest {
            script,
            shell: shell.to_owned(),
            env: env.clone(),
            working_dir: unpacked.path.clone(),
        };
        run_script_on(key, t, request, &out, ctx)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(out.take_set())
}

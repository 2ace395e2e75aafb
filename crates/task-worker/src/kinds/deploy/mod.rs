//! `Deploy` and `RunbookRun`: run a release's process (or a runbook's published one) in an
//! environment, planned by `cuttle_core::plan` step by
//! step (which steps run, where, in which batches, with which script and variables) while this
//! module does the I/O; `package.rs` is what a package step does on each target. The log has a section per step and a line per target with its end and
//! how long it took; sensitive values are masked wherever they appear in output.
//!
//! Steps start in groups (a step `parallel_with_previous` joins the one before). A step runs on
//! the targets chosen when it starts (those of the environment with its roles), a batch at a
//! time (`max_parallel_targets`); one failing target fails the step, and the batches after it
//! are not started. Later steps run or are skipped by their condition. A stop ends the running
//! step's scripts on every target (their calls are dropped) and skips the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use cuttle_core::plan::{
    batches, decide, environment, groups, place, resolve, secrets, substitute_script, Action,
    Context, Decision, Placement, Process, Shell, Step, StoredVariable, Value, Variable,
};
use cuttle_core::{DeployArgs, RunbookArgs, TargetRecord};
use cuttle_proto::v1::RunScriptRequest;
use cuttle_storage::{DeploymentFilter, Execution};
use futures_util::future::join_all;

mod package;

use super::Executor;
use crate::ctx::{TaskCtx, TaskError, TaskResult};
use crate::local::on_node;
use crate::output::{Output, SetOutput};
use crate::tentacles::run_script_on;

/// What to run where: a release's snapshot, or a runbook's published one, in an environment.
pub(crate) struct Order {
    space: String,
    environment: String,
    skip_steps: Vec<String>,
    targets: Vec<String>,
    source: Source,
}

enum Source {
    Release(i64),
    Runbook(i64),
}

impl From<DeployArgs> for Order {
    fn from(a: DeployArgs) -> Self {
        Order {
            space: a.space,
            environment: a.environment,
            skip_steps: a.skip_steps,
            targets: a.targets,
            source: Source::Release(a.release),
        }
    }
}

impl From<RunbookArgs> for Order {
    fn from(a: RunbookArgs) -> Self {
        Order {
            space: a.space,
            environment: a.environment,
            skip_steps: Vec::new(),
            targets: a.targets,
            source: Source::Runbook(a.runbook),
        }
    }
}

impl Executor for Order {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        deploy(self, key, ctx).await
    }
}

/// What every step of one deployment shares.
struct Plan {
    space: String,
    process: Process,
    /// The package versions a release chose, by step name (none for a runbook).
    packages: serde_json::Map<String, serde_json::Value>,
    variables: Vec<Variable>,
    built_ins: BTreeMap<String, String>,
    environment_id: String,
    environment_name: String,
}

fn failed(why: impl Into<String>) -> TaskError {
    TaskError::Failed(why.into())
}

/// The snapshot to run (`process`, `variables`, `project_name`) and the built-ins that come with
/// it: a release's, or a runbook's published one.
async fn snapshot(
    a: &Order,
    key: Execution,
    ctx: &TaskCtx,
) -> Result<(serde_json::Value, BTreeMap<String, String>), TaskError> {
    let store = &ctx.targets.store;
    match a.source {
        Source::Release(n) => {
            let release = store
                .get_release(&a.space, n)
                .await
                .map_err(|e| failed(format!("read the release: {e}")))?
                .ok_or_else(|| failed(format!("release Releases-{n} no longer exists")))?;
            let deployment = store
                .list_deployments(DeploymentFilter::Release(n))
                .await
                .map_err(|e| failed(format!("read the deployment: {e}")))?
                .into_iter()
                .find(|d| d.task == key.task)
                .map(|d| format!("Deployments-{}", d.id))
                .unwrap_or_default();
            let built_ins = BTreeMap::from([
                ("Cuttle.Release.Number".to_owned(), release.version.clone()),
                ("Cuttle.Deployment.Id".to_owned(), deployment),
            ]);
            Ok((release.snapshot, built_ins))
        }
        Source::Runbook(n) => {
            let runbook = store
                .get_document(&a.space, "Runbook", n)
                .await
                .map_err(|e| failed(format!("read the runbook: {e}")))?
                .ok_or_else(|| failed(format!("runbook Runbooks-{n} no longer exists")))?;
            let published = runbook
                .body
                .get("published")
                .filter(|p| !p.is_null())
                .cloned()
                .ok_or_else(|| failed(format!("runbook {:?} is not published", runbook.name)))?;
            let built_ins = BTreeMap::from([("Cuttle.Runbook.Name".to_owned(), runbook.name)]);
            Ok((published, built_ins))
        }
    }
}

/// Reads the snapshot, the environment and the variables (sensitive ones opened).
async fn prepare(a: &Order, key: Execution, ctx: &TaskCtx) -> Result<Plan, TaskError> {
    let store = &ctx.targets.store;
    let (snapshot, mut built_ins) = snapshot(a, key, ctx).await?;
    let env_number = a
        .environment
        .strip_prefix("Environments-")
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| failed(format!("{:?} is not an environment id", a.environment)))?;
    let env = store
        .get_document(&a.space, "Environment", env_number)
        .await
        .map_err(|e| failed(format!("read the environment: {e}")))?
        .ok_or_else(|| failed(format!("environment {} no longer exists", a.environment)))?;
    let process: Process =
        serde_json::from_value(snapshot.get("process").cloned().unwrap_or_default())
            .map_err(|e| failed(format!("the process to run cannot be read: {e}")))?;
    let stored: Vec<StoredVariable> = serde_json::from_value(
        snapshot
            .get("variables")
            .cloned()
            .unwrap_or(serde_json::json!([])),
    )
    .map_err(|e| failed(format!("the variables to run with cannot be read: {e}")))?;
    let data_keys = ctx
        .targets
        .data_keys
        .as_ref()
        .ok_or_else(|| failed("this node cannot open sensitive values"))?;
    let mut variables = Vec::with_capacity(stored.len());
    for v in &stored {
        let sealed = v.ciphertext.as_deref().filter(|_| v.sensitive);
        let opened = match sealed {
            Some(sealed) => Some(
                data_keys
                    .open(sealed)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
                    .map_err(|e| failed(format!("sensitive variable {:?}: {e}", v.name)))?,
            ),
            None => None,
        };
        // `open` asks for exactly the value opened above (sensitive, with a ciphertext).
        variables.push(v.open(|_| Ok::<_, TaskError>(opened.clone().unwrap_or_default()))?);
    }
    let project = snapshot
        .get("project_name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    built_ins.insert("Cuttle.Project.Name".to_owned(), project);
    built_ins.insert("Cuttle.Environment.Name".to_owned(), env.name.clone());
    built_ins.insert("Cuttle.Task.Id".to_owned(), key.task.to_string());
    let packages = snapshot
        .get("packages")
        .and_then(|p| p.as_object())
        .cloned()
        .unwrap_or_default();
    Ok(Plan {
        space: a.space.clone(),
        process,
        packages,
        variables,
        built_ins,
        environment_id: a.environment.clone(),
        environment_name: env.name,
    })
}

async fn deploy(a: &Order, key: Execution, ctx: &TaskCtx) -> TaskResult {
    let plan = prepare(a, key, ctx).await?;
    let what = match (
        plan.built_ins.get("Cuttle.Release.Number"),
        plan.built_ins.get("Cuttle.Runbook.Name"),
    ) {
        (Some(version), _) => format!("release {version}"),
        (None, Some(runbook)) => format!("runbook {runbook:?}"),
        (None, None) => String::new(),
    };
    ctx.logs
        .line(
            key,
            format!(
                "INFO  running {} {what} in {} ({} step(s))",
                plan.built_ins["Cuttle.Project.Name"],
                plan.environment_name,
                plan.process.steps.len()
            ),
        )
        .await;
    let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for group in groups(&plan.process.steps) {
        if ctx.stop.is_cancelled() {
            return Err(TaskError::Interrupted);
        }
        let mut running = Vec::new();
        for i in group {
            let step = &plan.process.steps[i];
            match decide(
                step,
                &plan.environment_id,
                &a.skip_steps,
                !failures.is_empty(),
            ) {
                Decision::Skip(why) => {
                    ctx.logs
                        .line(
                            key,
                            format!("INFO  === step {}: {}: skipped ({why})", i + 1, step.name),
                        )
                        .await;
                }
                Decision::Run => running.push((i, step)),
            }
        }
        let ran = join_all(running.iter().map(|(i, step)| {
            // Names are attributes: span names stay a few, whatever people call their steps.
            let span = tracing::info_span!(
                "step",
                cuttle.step = %step.name,
                cuttle.step.index = i + 1,
            );
            run_step(*i, step, &plan, &outputs, a, key, ctx).instrument(span)
        }))
        .await;
        for ((_, step), result) in running.iter().zip(ran) {
            match result {
                Ok(set) => record_outputs(&mut outputs, &step.name, set),
                Err(TaskError::Interrupted) => return Err(TaskError::Interrupted),
                Err(TaskError::Failed(why)) => {
                    failures.push(format!("step {:?}: {why}", step.name))
                }
            }
        }
    }
    if ctx.stop.is_cancelled() {
        return Err(TaskError::Interrupted);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failed(failures.join("; ")))
    }
}

/// Output variables of a step: `Output.<step>.<name>` (the last value set across its targets)
/// and `Output.<step>[<target>].<name>` (each target's).
fn record_outputs(outputs: &mut BTreeMap<String, Value>, step: &str, set: Vec<SetOutput>) {
    for o in set {
        let v = Value {
            value: o.value,
            sensitive: o.sensitive,
            from_output: true,
        };
        if let Some(t) = &o.target {
            outputs.insert(format!("Output.{step}[{t}].{}", o.name), v.clone());
        }
        outputs.insert(format!("Output.{step}.{}", o.name), v);
    }
}

/// Runs one step; returns the output variables its scripts set.
async fn run_step(
    index: usize,
    step: &Step,
    plan: &Plan,
    outputs: &BTreeMap<String, Value>,
    a: &Order,
    key: Execution,
    ctx: &TaskCtx,
) -> Result<Vec<SetOutput>, TaskError> {
    let started = Instant::now();
    ctx.logs
        .line(
            key,
            format!("INFO  === step {}: {} ===", index + 1, step.name),
        )
        .await;
    let (shell, timeout_secs) = step.action.shell_and_limit();
    let limit = Duration::from_secs(timeout_secs);
    let package = match &step.action {
        Action::DeployPackage { .. } => Some(package::resolve(step, plan, key, ctx).await?),
        Action::Script { .. } => None,
    };
    let targets = ctx
        .targets
        .store
        .list_targets(None, ctx.targets.offline_after)
        .await
        .map_err(|e| failed(format!("read targets: {e}")))?;
    let result = match place(step, &plan.environment_name, &targets, &a.targets) {
        Placement::OnNode => {
            let Action::Script { script, .. } = &step.action else {
                return Err(failed("a package step runs on targets, not on the node"));
            };
            let values = values_at(plan, step, outputs, None);
            // On the node: /bin/sh.
            let script = substitute_script(script, &values, Shell::Posix)
                .map_err(|e| failed(e.to_string()))?;
            let out = Arc::new(Output::step(secrets(&values)));
            let ran = tokio::time::timeout(
                limit,
                on_node(key, &script, &environment(&values), out.clone(), ctx),
            )
            .await
            .unwrap_or_else(|_| Err(failed(format!("timed out after {} s", limit.as_secs()))));
            ran.map(|()| out.take_set())
        }
        Placement::Targets(chosen) if chosen.is_empty() => Err(failed(format!(
            "no target in {} has any of the roles {}",
            plan.environment_name,
            step.target_roles.join(", ")
        ))),
        Placement::Targets(chosen) => {
            let mut set = Vec::new();
            let mut result = Ok(());
            for batch in batches(chosen, step.max_parallel_targets) {
                let names: Vec<&str> = batch.iter().map(|t| t.name.as_str()).collect();
                ctx.logs
                    .line(key, format!("INFO  running on {}", names.join(", ")))
                    .await;
                let ran = ctx
                    .until_stopped(async {
                        Ok(join_all(batch.iter().map(|t| {
                            let span = tracing::info_span!(
                                "target",
                                cuttle.target = %t.name,
                                cuttle.step = %step.name,
                            );
                            async {
                                match (&step.action, &package) {
                                    (Action::Script { script, .. }, _) => {
                                        on_target(
                                            t, step, script, shell, limit, plan, outputs, key, ctx,
                                        )
                                        .await
                                    }
                                    (Action::DeployPackage { .. }, Some(p)) => {
                                        let at = package::At {
                                            plan,
                                            outputs,
                                            key,
                                            ctx,
                                        };
                                        package::on_target(t, step, p, shell, limit, &at).await
                                    }
                                    (Action::DeployPackage { .. }, None) => {
                                        Err("no package chosen".to_owned())
                                    }
                                }
                            }
                            .instrument(span)
                        }))
                        .await)
                    })
                    .await?;
                let mut errors = Vec::new();
                for r in ran {
                    match r {
                        Ok(s) => set.extend(s),
                        Err(e) => errors.push(e),
                    }
                }
                if !errors.is_empty() {
                    result = Err(failed(errors.join("; ")));
                    break;
                }
            }
            result.map(|()| set)
        }
    };
    let took = started.elapsed().as_secs_f64();
    let line = match &result {
        Ok(_) => format!(
            "INFO  === step {}: {}: succeeded in {took:.2} s",
            index + 1,
            step.name
        ),
        Err(TaskError::Failed(why)) => {
            format!(
                "ERROR === step {}: {}: failed in {took:.1} s: {why}",
                index + 1,
                step.name
            )
        }
        Err(TaskError::Interrupted) => {
            format!(
                "WARN  === step {}: {}: stopped after {took:.1} s",
                index + 1,
                step.name
            )
        }
    };
    ctx.logs.line(key, line).await;
    result
}

/// The values that apply to a step, on a target or on the node.
fn values_at(
    plan: &Plan,
    step: &Step,
    outputs: &BTreeMap<String, Value>,
    target: Option<&TargetRecord>,
) -> BTreeMap<String, Value> {
    let mut built_ins = plan.built_ins.clone();
    built_ins.insert("Cuttle.Step.Name".into(), step.name.clone());
    if let Some(t) = target {
        built_ins.insert("Cuttle.Target.Name".into(), t.name.clone());
    }
    let none = Vec::new();
    let at = Context {
        environment: &plan.environment_id,
        target: target.map(|t| t.name.as_str()),
        roles: target.map_or(&none, |t| &t.roles),
    };
    resolve(&plan.variables, &at, &built_ins, outputs)
}

/// Runs a step's script on one target; its output variables, or why it failed.
#[allow(clippy::too_many_arguments)]
async fn on_target(
    t: &TargetRecord,
    step: &Step,
    script: &str,
    shell: &str,
    limit: Duration,
    plan: &Plan,
    outputs: &BTreeMap<String, Value>,
    key: Execution,
    ctx: &TaskCtx,
) -> Result<Vec<SetOutput>, String> {
    let started = Instant::now();
    let values = values_at(plan, step, outputs, Some(t));
    let script = substitute_script(script, &values, Shell::of(shell))
        .map_err(|e| format!("{}: {e}", t.name))?;
    let mut env: HashMap<String, String> = environment(&values).into_iter().collect();
    env.insert("CUTTLE_TASK_ID".into(), key.task.to_string());
    env.insert("CUTTLE_TARGET_NAME".into(), t.name.clone());
    let request = RunScriptRequest {
        script,
        shell: shell.to_owned(),
        env,
        working_dir: String::new(),
    };
    let out = Output::step(secrets(&values));
    let ran = tokio::time::timeout(limit, run_script_on(key, t, request, &out, ctx))
        .await
        .unwrap_or_else(|_| Err(format!("{}: timed out after {} s", t.name, limit.as_secs())));
    let took = started.elapsed().as_secs_f64();
    let line = match &ran {
        Ok(()) => format!("INFO  [{}] succeeded in {took:.1} s", t.name),
        Err(e) => format!("ERROR [{}] failed in {took:.1} s: {e}", t.name),
    };
    ctx.logs.line(key, line).await;
    ran.map(|()| out.take_set())
}

//! `AdHocScript`: a script on the node that claimed the task, or on each selected target at
//! once (through the gateway holding a polling tentacle's session, or straight to a listening
//! one), every target's output prefixed with its name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cuttle_core::{TargetRecord, TargetSelection};
use cuttle_proto::v1::RunScriptRequest;
use cuttle_storage::Execution;
use futures_util::future::join_all;

use super::Executor;
use crate::ctx::{TaskCtx, TaskResult};
use crate::local::on_node;
use crate::output::Output;
use crate::tentacles::{all_succeeded, run_script_on, selected};

pub(crate) struct Script {
    pub(crate) script: String,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) on: TargetSelection,
    pub(crate) shell: Option<String>,
}

impl Executor for Script {
    fn deadline(&self) -> Option<Duration> {
        self.timeout_secs.map(Duration::from_secs)
    }

    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        if self.on.is_empty() {
            on_node(
                key,
                &self.script,
                &BTreeMap::new(),
                Arc::new(Output::plain()),
                ctx,
            )
            .await
        } else {
            on_targets(key, &self.script, self.shell.as_deref(), &self.on, ctx).await
        }
    }
}

/// Runs `script` on every selected target at once; succeeds when it exits 0 everywhere.
async fn on_targets(
    key: Execution,
    script: &str,
    shell: Option<&str>,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> TaskResult {
    let chosen = selected(on, ctx).await?;
    let names: Vec<&str> = chosen.iter().map(|t| t.name.as_str()).collect();
    ctx.logs
        .line(
            key,
            format!(
                "INFO  running on {} target(s): {}",
                chosen.len(),
                names.join(", ")
            ),
        )
        .await;
    // Ending the calls (stop, deadline) kills the scripts on the targets.
    ctx.until_stopped(async {
        all_succeeded(join_all(chosen.iter().map(|t| run_on(key, script, shell, t, ctx))).await)
    })
    .await
}

async fn run_on(
    key: Execution,
    script: &str,
    shell: Option<&str>,
    t: &TargetRecord,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let request = RunScriptRequest {
        script: script.to_owned(),
        shell: shell.unwrap_or_default().to_owned(),
        env: HashMap::from([
            ("CUTTLE_TASK_ID".to_owned(), key.task.to_string()),
            ("CUTTLE_TARGET_NAME".to_owned(), t.name.clone()),
        ]),
        working_dir: String::new(),
    };
    run_script_on(key, t, request, &Output::plain(), ctx).await
}

//! `AdHocScript`: a script on the node that claimed the task, or on each selected target at
//! once (through the gateway holding a polling tentacle's session, or straight to a listening
//! one), every target's output prefixed with its name.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use cuttle_core::{Comms, TargetRecord, TargetSelection};
use cuttle_proto::lines::OutputLines;
use cuttle_proto::v1::{RelayRunScript, RunScriptRequest, ScriptEvent};
use cuttle_storage::{Execution, TaskLogWriter};
use futures_util::future::join_all;
use tokio::io::AsyncRead;
use tonic::Streaming;

use super::Executor;
use crate::ctx::{TaskCtx, TaskError, TaskResult};
use crate::tentacles::{all_succeeded, direct, follow, relayed, selected};

/// How long to wait for a script's output pipes to close after the script is gone.
const PIPE_DRAIN: Duration = Duration::from_secs(5);

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
            on_node(key, &self.script, ctx).await
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
    let stream = match t.comms {
        Comms::Polling => through_gateway(t, request, ctx).await,
        Comms::Listening => direct(t, request, ctx).await,
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    follow(key, t, stream, ctx).await
}

/// Asks each node holding a session with the target, in turn, to relay the call.
async fn through_gateway(
    t: &TargetRecord,
    request: RunScriptRequest,
    ctx: &TaskCtx,
) -> Result<Streaming<ScriptEvent>, String> {
    relayed(t, ctx, |mut client| {
        let relay = RelayRunScript {
            target_id: t.id.0,
            request: Some(request.clone()),
        };
        async move { client.run_script(relay).await }
    })
    .await
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Stopped,
}

/// Runs `script` with `/bin/sh` on this node, in a work directory of its own and a clean
/// environment; a stop kills its whole process group.
async fn on_node(key: Execution, script: &str, ctx: &TaskCtx) -> TaskResult {
    let id = key.task;
    let dir = ctx.work_root.join(id.to_string());
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return Err(format!("create work directory {}: {e}", dir.display()).into());
    }
    let mut cmd = tokio::process::Command::new("/bin/sh");
    // Never the node's own environment: it holds the master key and the database URL.
    cuttle_proto::script_env::clean(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .current_dir(&dir)
        .env("CUTTLE_TASK_ID", id.to_string())
        .env("CUTTLE_NODE_NAME", &ctx.node)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a cancel reaches every process the script started.
        .process_group(0)
        .kill_on_drop(true);
    // The node runs with umask 077 (its files are its own); what a script deploys gets the
    // usual 022.
    // SAFETY: umask is async-signal-safe and changes only the child's own mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(format!("start /bin/sh: {e}").into()),
    };
    let pgid = child.id();
    // Kept until the group is killed below: if this node dies first, its next start kills it.
    let _record = pgid.and_then(|p| crate::groups::GroupRecord::create(&ctx.work_root, id, p));
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(pump(o, ctx.logs.clone(), key, "OUT   ")));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(pump(e, ctx.logs.clone(), key, "ERR   ")));
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        () = ctx.stop.cancelled() => Ended::Stopped,
    };
    // Whatever ended it, no process of the script outlives the task.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let _ = child.wait().await;
    for pump in [out, err].into_iter().flatten() {
        if tokio::time::timeout(PIPE_DRAIN, pump).await.is_err() {
            ctx.logs
                .line(
                    key,
                    "WARN  output still open after the script ended; not waiting",
                )
                .await;
        }
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    match ended {
        Ended::Exited(Ok(status)) if status.success() => Ok(()),
        Ended::Exited(Ok(status)) => match status.code() {
            Some(code) => Err(format!("script exited with code {code}").into()),
            None => Err(format!("script was killed ({status})").into()),
        },
        Ended::Exited(Err(e)) => Err(format!("wait for script: {e}").into()),
        Ended::Stopped => Err(TaskError::Interrupted),
    }
}

fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a negative pid names the process group
    // the script leads (created with process_group(0)).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Copies a script's output into the task log line by line as it is produced.
async fn pump<R: AsyncRead + Unpin>(
    r: R,
    logs: TaskLogWriter,
    key: Execution,
    prefix: &'static str,
) {
    let mut lines = OutputLines::new(r);
    while let Some(text) = lines.next_line().await {
        logs.line(key, format!("{prefix}{text}")).await;
    }
}

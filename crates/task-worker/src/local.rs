//! Scripts on the node itself: `/bin/sh` in a work directory of its own, a clean environment,
//! its own process group (killed, whole, when the task ends for any reason).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cuttle_proto::lines::OutputLines;
use cuttle_storage::{Execution, TaskLogWriter};
use tokio::io::AsyncRead;

use crate::ctx::{TaskCtx, TaskError, TaskResult};
use crate::output::Output;

/// How long to wait for a script's output pipes to close after the script is gone.
const PIPE_DRAIN: Duration = Duration::from_secs(5);

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Stopped,
}

/// Runs `script` with `/bin/sh` on this node, in a work directory of its own and a clean
/// environment (plus `env`); its lines go through `out` to the log; a stop kills its whole
/// process group.
pub(crate) async fn on_node(
    key: Execution,
    script: &str,
    env: &BTreeMap<String, String>,
    out: Arc<Output>,
    ctx: &TaskCtx,
) -> TaskResult {
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
        .envs(env)
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
    let stdout = child
        .stdout
        .take()
        .map(|o| tokio::spawn(pump(o, ctx.logs.clone(), key, "OUT   ", out.clone())));
    let stderr = child
        .stderr
        .take()
        .map(|e| tokio::spawn(pump(e, ctx.logs.clone(), key, "ERR   ", out.clone())));
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        () = ctx.stop.cancelled() => Ended::Stopped,
    };
    // Whatever ended it, no process of the script outlives the task.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let _ = child.wait().await;
    for pump in [stdout, stderr].into_iter().flatten() {
        if tokio::time::timeout(PIPE_DRAIN, pump).await.is_err() {
            ctx.logs
                .line(
                    key,
                    "WARN  output still open after the script ended; not waiting",
                )
                .await;
        }
    }
    let asked = out.take_artifacts(None);
    if !asked.is_empty() {
        crate::artifacts::collect_on_node(key, &dir, asked, ctx).await;
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
    out: Arc<Output>,
) {
    let mut lines = OutputLines::new(r);
    while let Some(text) = lines.next_line().await {
        logs.line(key, format!("{prefix}{}", out.line(None, &text)))
            .await;
    }
}

//! Scripts on the node itself: `/bin/sh` isolated in a sandbox as a user of their own
//! (`sandbox.rs`), in a work directory of their own, with a clean environment; the sandbox's
//! process group is killed when the task ends for any reason, and with it every process the
//! script started.

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

/// Runs `script` with `/bin/sh` on this node, isolated, in a work directory of its own and a
/// clean environment (plus `env`); its lines go through `out` to the log; a stop kills it and
/// everything it started. Refused, with the reason, on a node that cannot isolate scripts.
pub(crate) async fn on_node(
    key: Execution,
    script: &str,
    env: &BTreeMap<String, String>,
    out: Arc<Output>,
    ctx: &TaskCtx,
) -> TaskResult {
    let id = key.task;
    let sandbox = ctx.sandbox.clone();
    if let Some(why) = sandbox.refusal() {
        return Err(why.to_owned().into());
    }
    let dir = {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.work_dir(id))
            .await
            .map_err(|e| e.to_string())??
    };
    let mut vars = sandbox.base_env(&dir);
    vars.push(("CUTTLE_TASK_ID".into(), id.to_string().into()));
    vars.push(("CUTTLE_NODE_NAME".into(), ctx.node.clone().into()));
    vars.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    let spawned = sandbox.script(&dir, script, vars).and_then(|s| {
        s.spawn(Stdio::piped(), Stdio::piped())
            .map_err(|e| format!("start the sandbox: {e}"))
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || sandbox.remove(dir)).await;
            return Err(e.into());
        }
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
    // Whatever ended it, no process of the script outlives the task: the sandbox's first
    // process dies with its group, and the kernel ends every process of its namespace.
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
    let _ = tokio::task::spawn_blocking(move || sandbox.remove(dir)).await;
    match ended {
        // The sandbox passes the script's exit status on.
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
    let stderr = prefix.starts_with("ERR");
    let mut lines = OutputLines::new(r);
    while let Some((text, continues)) = lines.next_piece().await {
        if let Some(shown) = out.piece(None, stderr, &text, continues) {
            logs.line(key, format!("{prefix}{shown}")).await;
        }
    }
    if let Some(rest) = out.rest(None, stderr) {
        logs.line(key, format!("{prefix}{rest}")).await;
    }
}

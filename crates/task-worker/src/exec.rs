//! Running one task: the executors for each kind, and what a stop means for the outcome.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cuttle_core::{TaskKind, TaskState};
use cuttle_storage::{ClaimedTask, Execution, TaskLogWriter};

use crate::remote::{self, Targets};
use cuttle_proto::lines::OutputLines;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

/// How long to wait for a script's output pipes to close after the script is gone.
const PIPE_DRAIN: Duration = Duration::from_secs(5);

/// Why a running task was asked to stop. Set once, before the stop token fires.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    /// An operator cancelled it.
    Canceled,
    /// The database no longer says this node owns it (the node was considered lost).
    Fenced,
    /// The node is shutting down and the grace period ran out.
    Shutdown(String),
}

/// What a task needs while it runs.
pub(crate) struct TaskCtx {
    pub(crate) node: String,
    pub(crate) logs: TaskLogWriter,
    pub(crate) stop: CancellationToken,
    pub(crate) reason: Arc<OnceLock<StopReason>>,
    pub(crate) work_root: PathBuf,
    pub(crate) targets: Arc<Targets>,
}

/// How a task ended, as the worker will report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) state: TaskState,
    pub(crate) error: Option<String>,
}

impl Outcome {
    pub(crate) fn success() -> Self {
        Outcome {
            state: TaskState::Success,
            error: None,
        }
    }

    pub(crate) fn failed(msg: impl Into<String>) -> Self {
        Outcome {
            state: TaskState::Failed,
            error: Some(msg.into()),
        }
    }

    fn stopped(reason: Option<&StopReason>) -> Self {
        match reason {
            Some(StopReason::Canceled) | None => Outcome {
                state: TaskState::Canceled,
                error: Some("canceled by request".into()),
            },
            Some(StopReason::Fenced) => {
                Outcome::failed("the task was taken from this node (it was considered lost)")
            }
            Some(StopReason::Shutdown(msg)) => Outcome {
                state: TaskState::Canceled,
                error: Some(msg.clone()),
            },
        }
    }
}

/// Runs a claimed task to its end, writing its log, and returns the outcome to report.
pub(crate) async fn run(task: &ClaimedTask, ctx: &TaskCtx) -> Outcome {
    let (id, key) = (
        task.id,
        Execution {
            task: task.id,
            epoch: task.epoch,
        },
    );
    ctx.logs.open(key).await;
    let outcome = match TaskKind::parse(&task.kind, &task.arguments) {
        Err(e) => Outcome::failed(format!("cannot run task: {e}")),
        Ok(kind) => {
            ctx.logs
                .line(
                    key,
                    format!("INFO  {} {id} started on node {}", kind.name(), ctx.node),
                )
                .await;
            match kind {
                TaskKind::Sleep { duration_ms } => sleep(key, duration_ms, ctx).await,
                TaskKind::AdHocScript {
                    script,
                    timeout_secs,
                    on,
                    shell,
                } if !on.is_empty() => {
                    let timeout = async {
                        match timeout_secs {
                            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                            None => std::future::pending().await,
                        }
                    };
                    // Ending the remote calls (stop, timeout) kills the scripts on the targets.
                    tokio::select! {
                        o = remote::run(key, &script, shell.as_deref(), &on, ctx) => o,
                        _ = ctx.stop.cancelled() => Outcome::stopped(ctx.reason.get()),
                        _ = timeout => Outcome {
                            state: TaskState::TimedOut,
                            error: Some(format!(
                                "script timed out after {} s",
                                timeout_secs.unwrap_or_default()
                            )),
                        },
                    }
                }
                TaskKind::AdHocScript {
                    script,
                    timeout_secs,
                    ..
                } => run_script(key, &script, timeout_secs, ctx).await,
                TaskKind::PushFile {
                    source,
                    destination,
                    on,
                } => tokio::select! {
                    o = remote::push_file(key, &source, &destination, &on, ctx) => o,
                    _ = ctx.stop.cancelled() => Outcome::stopped(ctx.reason.get()),
                },
                TaskKind::PullFile { source, on } => tokio::select! {
                    o = remote::pull_file(key, &source, &on, ctx) => o,
                    _ = ctx.stop.cancelled() => Outcome::stopped(ctx.reason.get()),
                },
                TaskKind::HealthCheck { on } => tokio::select! {
                    o = remote::health_check(key, &on, ctx) => o,
                    _ = ctx.stop.cancelled() => Outcome::stopped(ctx.reason.get()),
                },
            }
        }
    };
    let summary = match &outcome.error {
        Some(e) => format!("{} {}: {e}", level(outcome.state), outcome.state.as_str()),
        None => format!("INFO  {}", outcome.state.as_str()),
    };
    ctx.logs.line(key, summary).await;
    match ctx.logs.close(key).await {
        Err(e) if outcome.state == TaskState::Success => {
            Outcome::failed(format!("the task log could not be written: {e}"))
        }
        _ => outcome,
    }
}

fn level(state: TaskState) -> &'static str {
    match state {
        TaskState::Success => "INFO ",
        TaskState::Canceled => "WARN ",
        _ => "ERROR",
    }
}

async fn sleep(key: Execution, duration_ms: u64, ctx: &TaskCtx) -> Outcome {
    ctx.logs
        .line(key, format!("INFO  sleeping for {duration_ms} ms"))
        .await;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(duration_ms)) => {
            ctx.logs.line(key, format!("INFO  slept {duration_ms} ms")).await;
            Outcome::success()
        }
        _ = ctx.stop.cancelled() => Outcome::stopped(ctx.reason.get()),
    }
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Stopped,
    TimedOut(u64),
}

async fn run_script(
    key: Execution,
    script: &str,
    timeout_secs: Option<u64>,
    ctx: &TaskCtx,
) -> Outcome {
    let id = key.task;
    let dir = ctx.work_root.join(id.to_string());
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return Outcome::failed(format!("create work directory {}: {e}", dir.display()));
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
        Err(e) => return Outcome::failed(format!("start /bin/sh: {e}")),
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
    let timeout = async {
        match timeout_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        _ = ctx.stop.cancelled() => Ended::Stopped,
        _ = timeout => Ended::TimedOut(timeout_secs.unwrap_or_default()),
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
        Ended::Exited(Ok(status)) if status.success() => Outcome::success(),
        Ended::Exited(Ok(status)) => match status.code() {
            Some(code) => Outcome::failed(format!("script exited with code {code}")),
            None => Outcome::failed(format!("script was killed ({status})")),
        },
        Ended::Exited(Err(e)) => Outcome::failed(format!("wait for script: {e}")),
        Ended::Stopped => Outcome::stopped(ctx.reason.get()),
        Ended::TimedOut(s) => Outcome {
            state: TaskState::TimedOut,
            error: Some(format!("script timed out after {s} s")),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use cuttle_core::TaskId;
    use cuttle_proto::lines::MAX_LINE;
    use cuttle_storage::SharedStore;

    struct Fixture {
        store: SharedStore,
        ctx: TaskCtx,
        _dir: PathBuf,
    }

    async fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("cuttle-exec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SharedStore::open(&dir).unwrap();
        let ctx = TaskCtx {
            node: "n1".into(),
            logs: TaskLogWriter::start(
                store.clone(),
                "test-node",
                cuttle_storage::DEFAULT_TASK_LOG_MAX_BYTES,
            ),
            stop: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
            work_root: dir.join("work"),
            targets: Arc::new(Targets {
                store: cuttle_storage::Store::connect(
                    &format!("sqlite://{}", dir.join("db.sqlite").display()),
                    &cuttle_storage::StoreOptions::default(),
                )
                .await
                .unwrap(),
                shared: store.clone(),
                cluster: cuttle_tls::ClusterTls::single(
                    cuttle_tls::Identity::generate("test", 1).unwrap(),
                ),
                offline_after: Duration::from_secs(60),
            }),
        };
        Fixture {
            store,
            ctx,
            _dir: dir,
        }
    }

    fn script(id: i64, s: &str, timeout: Option<u64>) -> ClaimedTask {
        let mut args = serde_json::json!({ "script": s });
        if let Some(t) = timeout {
            args["timeout_secs"] = t.into();
        }
        ClaimedTask {
            id: TaskId(id),
            epoch: 1,
            kind: "AdHocScript".into(),
            arguments: args,
        }
    }

    #[tokio::test]
    async fn script_output_goes_to_the_log_and_exit_code_decides() {
        let fx = fixture("ok").await;
        let out = run(
            &script(1, "echo hello; echo oops >&2; printf 'no newline'", None),
            &fx.ctx,
        )
        .await;
        assert_eq!(out, Outcome::success());
        let log = std::fs::read_to_string(fx.store.task_log_path(Execution {
            task: TaskId(1),
            epoch: 1,
        }))
        .unwrap();
        assert!(log.contains("OUT   hello"), "{log}");
        assert!(log.contains("ERR   oops"), "{log}");
        assert!(log.contains("OUT   no newline"), "{log}");
        let out = run(&script(2, "exit 3", None), &fx.ctx).await;
        assert_eq!(out, Outcome::failed("script exited with code 3"));
    }

    #[tokio::test]
    async fn long_lines_are_split_not_buffered_whole() {
        let fx = fixture("long").await;
        let s = format!("head -c {} /dev/zero | tr '\\0' x", MAX_LINE * 3);
        assert_eq!(run(&script(3, &s, None), &fx.ctx).await, Outcome::success());
        let log = std::fs::read_to_string(fx.store.task_log_path(Execution {
            task: TaskId(3),
            epoch: 1,
        }))
        .unwrap();
        let out_lines: Vec<&str> = log.lines().filter(|l| l.contains("OUT   ")).collect();
        assert_eq!(out_lines.len(), 3, "split into MAX_LINE chunks");
    }

    #[tokio::test]
    async fn timeout_and_cancel_kill_the_whole_process_group() {
        let fx = fixture("kill").await;
        let pidfile = fx.ctx.work_root.parent().unwrap().join("child.pid");
        // A child in the background that would outlive a naive kill of the shell.
        let s = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let out = run(&script(4, &s, Some(1)), &fx.ctx).await;
        assert_eq!(out.state, TaskState::TimedOut);
        assert_gone(&pidfile, "the timeout");

        // Cancel once the script is provably running (it wrote its pid), then check it died.
        let pidfile2 = pidfile.with_extension("2");
        let _ = std::fs::remove_file(&pidfile2);
        let stop = fx.ctx.stop.clone();
        let reason = fx.ctx.reason.clone();
        let watch = pidfile2.clone();
        let canceller = tokio::spawn(async move {
            // The shell creates the file before `echo` writes to it: wait for the whole line.
            let written =
                |p: &std::path::Path| std::fs::read_to_string(p).is_ok_and(|s| s.ends_with('\n'));
            while !written(&watch) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = reason.set(StopReason::Canceled);
            stop.cancel();
        });
        let s = format!("sleep 300 & echo $! > {}; wait", pidfile2.display());
        let out = run(&script(5, &s, None), &fx.ctx).await;
        canceller.await.unwrap();
        assert_eq!(out.state, TaskState::Canceled);
        assert_gone(&pidfile2, "the cancel");
    }

    /// The process whose pid the script wrote to `pidfile` no longer runs.
    fn assert_gone(pidfile: &std::path::Path, after: &str) {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(
            !alive || is_zombie(pid),
            "background child {pid} survived {after}"
        );
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn sleep_logs_and_unparseable_tasks_fail() {
        let fx = fixture("sleep").await;
        let t = ClaimedTask {
            id: TaskId(6),
            epoch: 1,
            kind: "Sleep".into(),
            arguments: serde_json::json!({"duration_ms": 1}),
        };
        assert_eq!(run(&t, &fx.ctx).await, Outcome::success());
        let log = std::fs::read_to_string(fx.store.task_log_path(Execution {
            task: TaskId(6),
            epoch: 1,
        }))
        .unwrap();
        assert!(
            log.contains("slept 1 ms") && log.contains("Success"),
            "{log}"
        );
        let bad = ClaimedTask {
            kind: "Bogus".into(),
            ..t
        };
        assert_eq!(run(&bad, &fx.ctx).await.state, TaskState::Failed);
    }
}

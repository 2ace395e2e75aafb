//! Running one claimed task: its log opened and closed around it, its kind run (see
//! [`crate::kinds`]), and the outcome the worker reports.

use cuttle_core::{TaskKind, TaskState};
use cuttle_storage::{ClaimedTask, Execution};

pub(crate) use crate::ctx::{Outcome, StopReason, TaskCtx};
use crate::kinds;

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
            Outcome::of(kinds::run(kind, key, ctx).await, ctx.reason.get())
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

#[cfg(test)]
mod tests {
    use super::*;
    use cuttle_core::TaskId;
    use cuttle_proto::lines::MAX_LINE;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::OnceLock;
    use std::time::Duration;

    use cuttle_storage::{SharedStore, TaskLogWriter};
    use tokio_util::sync::CancellationToken;

    use crate::ctx::StopReason;
    use crate::tentacles::Targets;

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
            targets: Arc::new(Targets::new(
                cuttle_storage::Store::connect(
                    &format!("sqlite://{}", dir.join("db.sqlite").display()),
                    &cuttle_storage::StoreOptions::default(),
                )
                .await
                .unwrap(),
                store.clone(),
                cuttle_tls::ClusterTls::single(cuttle_tls::Identity::generate("test", 1).unwrap()),
                Duration::from_secs(60),
            )),
            sandbox: Arc::new(crate::sandbox::Sandbox::probe(
                &crate::sandbox::SandboxConfig::isolated(vec![dir.clone()]),
                &dir.join("work"),
            )),
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
            waited_ms: 0,
            trace_parent: None,
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
    async fn timeout_and_cancel_kill_every_process_of_the_script() {
        let fx = fixture("kill").await;
        // A child in the background, and one in a session of its own: both would outlive a
        // kill of the shell, or of its process group.
        let s = "sleep 300.4 & setsid sleep 300.41 & wait";
        let out = run(&script(4, s, Some(1)), &fx.ctx).await;
        assert_eq!(out.state, TaskState::TimedOut);
        assert_eq!(out.error.as_deref(), Some("timed out after 1 s"));
        assert_gone(&["sleep", "300.4"], "the timeout");
        assert_gone(&["sleep", "300.41"], "the timeout");

        // The deadline stopped that task through its own stop token; the next task has its own.
        let mut fx = fx;
        fx.ctx.stop = CancellationToken::new();
        fx.ctx.reason = Arc::new(OnceLock::new());
        // Cancel once the script provably runs, then check that nothing of it is left.
        let stop = fx.ctx.stop.clone();
        let reason = fx.ctx.reason.clone();
        let canceller = tokio::spawn(async move {
            while processes(&["sleep", "300.5"]).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = reason.set(StopReason::Canceled);
            stop.cancel();
        });
        let out = run(&script(5, "sleep 300.5 & wait", None), &fx.ctx).await;
        canceller.await.unwrap();
        assert_eq!(out.state, TaskState::Canceled);
        assert_gone(&["sleep", "300.5"], "the cancel");
    }

    /// Live (not zombie) processes whose command line is exactly `argv`.
    fn processes(argv: &[&str]) -> Vec<i32> {
        let want: Vec<u8> = argv
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
            .filter(|pid| !is_zombie(*pid))
            .collect()
    }

    /// No process runs `argv` any more.
    fn assert_gone(argv: &[&str], after: &str) {
        // The kernel ends a sandbox's processes as its first one dies: give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !processes(argv).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = processes(argv);
        assert!(left.is_empty(), "{argv:?} survived {after}: {left:?}");
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z")
            })
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
            waited_ms: 0,
            trace_parent: None,
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

//! Crash safety of the shared store: a node killed with SIGKILL while its tasks write their logs
//! never leaves a half-written log that is served as complete, and on restart it fails the
//! tasks its previous process held and puts their logs in place, leaving nothing behind.

use std::time::Duration;

use cuttle_e2e::{report, wait_until, Cluster, Database, NodeOptions, Rng};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);
const PAYLOAD: &str = "the quick brown fox jumps over the lazy dog 0123456789";

/// The lines a script printed, checked to be whole and in order: `line N: PAYLOAD` from 0.
fn script_lines(log: &str) -> usize {
    let mut n = 0;
    for line in log.lines() {
        let Some((_, out)) = line.split_once(" OUT   ") else {
            continue;
        };
        assert_eq!(out, format!("line {n}: {PAYLOAD}"), "log:\n{log}");
        n += 1;
    }
    n
}

#[test]
fn killed_mid_write_logs_are_salvaged_and_never_served_half_written() {
    let mut rng = Rng::from_env();
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 3));
    // Bursts of output with pauses, for about ten seconds: the kill lands mid-write.
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do j=0; while [ $j -lt 50 ]; do \
         echo \"line $((i*50+j)): {PAYLOAD}\"; j=$((j+1)); done; i=$((i+1)); sleep 0.05; done"
    );
    let in_progress = cluster.shared_dir().join("TaskLogs/InProgress/n1");
    for round in 0..3 {
        let quick = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
        let ids: Vec<String> = (0..3)
            .map(|_| n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}})))
            .collect();
        assert_eq!(n1.wait_finished(&quick, MIN)["state"], "Success");
        for id in &ids {
            wait_until(&format!("{id} to be writing"), MIN, || {
                let (log, complete) = n1.task_log_and_completeness(id);
                assert!(!complete, "a running task's log is not complete");
                (script_lines(&log) > 0).then_some(())
            });
        }
        let delay = rng.below(1500);
        std::thread::sleep(Duration::from_millis(delay)); // the random point of the kill
        n1.kill9();
        report(format!("round {round}: killed after {delay} ms"));
        // Until the node is back, what is on disk is in progress, never in place.
        for id in &ids {
            let done = cluster.shared_dir().join(format!("TaskLogs/{id}.log"));
            assert!(!done.exists(), "{id} was in place before it ended");
        }
        cluster.restart(&mut n1);

        for id in &ids {
            let t = n1.task(id);
            assert_eq!(t["state"], "Failed", "{t}");
            let error = t["error"].as_str().unwrap();
            assert!(error.contains("node n1 restarted"), "{error}");
            let (log, complete) = n1.task_log_and_completeness(id);
            assert!(complete, "salvaged logs are complete: {id}");
            assert!(script_lines(&log) > 0, "{log}");
            assert!(log.ends_with("ERROR node n1 restarted; this task's log ends here\n"));
        }
        let (log, complete) = n1.task_log_and_completeness(&quick);
        assert!(complete && log.ends_with("INFO  Success\n"), "{log}");
        let left: Vec<_> = std::fs::read_dir(&in_progress)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "leftovers after restart: {left:?}");
    }
    // The restarted node works normally.
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo ok"}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
}

#[test]
fn scripts_of_a_killed_node_end_with_it_and_its_restart_fails_their_tasks() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    // The script's child never writes, so nothing (no SIGPIPE) ends it when the node dies.
    let script = "sleep 600.31 & echo started; wait";
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    wait_until("the script to start", MIN, || {
        n1.task_log(&id).contains("OUT   started").then_some(())
    });
    let pid = cuttle_e2e::wait_for_process(&["sleep", "600.31"], MIN);
    n1.kill9();
    // The sandbox dies with the node's process, and every process in it with the sandbox.
    wait_until("the script to end with the node", MIN, || {
        cuttle_e2e::process_gone(pid).then_some(())
    });
    cluster.restart(&mut n1);
    let t = n1.task(&id);
    assert_eq!(t["state"], "Failed", "{t}");
}

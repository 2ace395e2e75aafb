//! Database outages: a node keeps serving (503 on the ping), and one cut off for longer than
//! the offline timeout stops its tasks by itself — the rest of the cluster considers it lost.

use std::time::Duration;

use cuttle_e2e::{wait_until, Cluster, Database, NodeOptions};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);

#[test]
fn node_cut_off_from_the_database_stops_its_tasks_and_recovers() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions {
        expected_errors: vec!["heartbeat".into()],
        ..NodeOptions::named("n1", 1)
    });
    let pidfile = cluster.dir().join("script.pid");
    let script = format!("echo $$ > {}; echo begun; sleep 600", pidfile.display());
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    wait_until("the script to start", MIN, || {
        n1.task_log(&id).contains("OUT   begun").then_some(())
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let pg = cluster.postgres_server().expect("harness-owned server");
    pg.stop_server().unwrap();
    wait_until("ping 503 while the database is down", MIN, || {
        (n1.ping() == 503).then_some(())
    });
    // Past the offline timeout (4 s here) the node fences itself: the script dies with no
    // database to tell it so.
    wait_until("the node to stop its script", MIN, || {
        cuttle_e2e::process_gone(pid).then_some(())
    });
    assert!(n1
        .stderr_text()
        .contains("no database contact for longer than the offline timeout"));

    pg.start_server().unwrap();
    wait_until("the node to recover on its own", MIN, || {
        (n1.ping() == 200).then_some(())
    });
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    let log = n1.task_log(&id);
    assert!(log.contains("lost contact with the database"), "{log}");
    // And it works again.
    let next = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    assert_eq!(n1.wait_finished(&next, MIN)["state"], "Success");
}

#[test]
fn shared_store_loss_is_reported_and_fails_only_the_tasks_that_need_it() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions {
        expected_errors: vec!["shared store unusable".into()],
        ..NodeOptions::named("n1", 1)
    });
    let storage_ok = |want: bool| {
        wait_until(&format!("storage_ok to become {want}"), MIN, || {
            let (_, n) = n1.get("/api/nodes/n1");
            (n["storage_ok"] == want).then_some(())
        })
    };
    storage_ok(true);
    // The store disappears (an unmounted share): the next heartbeat reports it.
    let shared = cluster.shared_dir();
    let away = cluster.dir().join("shared-away");
    std::fs::rename(&shared, &away).unwrap();
    storage_ok(false);
    assert_eq!(n1.ping(), 200, "the node keeps serving the API");
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo hi"}}));
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    let err = t["error"].as_str().unwrap();
    assert!(
        err.contains("task log could not be written") && err.contains("TaskLogs"),
        "{err}"
    );
    // It comes back: so does the node's health, and tasks run again.
    std::fs::rename(&away, &shared).unwrap();
    storage_ok(true);
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo back"}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
}

#[test]
fn missing_shared_store_at_start_up_exits_with_the_path() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let missing = cluster.dir().join("not-mounted");
    let opts = NodeOptions {
        env: vec![("CUTTLE_SHARED_PATH".into(), missing.display().to_string())],
        ..NodeOptions::named("n1", 1)
    };
    let cmd = cluster.command(&opts, cuttle_e2e::free_port(), cuttle_e2e::free_port());
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("not-mounted") && err.contains("No such file or directory"),
        "{err}"
    );
    // The bad path was not adopted by the cluster: with the right one the node starts and
    // writes there.
    let node = cluster.start(NodeOptions::named("n1", 1));
    let id = node.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    node.wait_finished(&id, MIN);
    assert!(cluster
        .shared_dir()
        .join("TaskLogs")
        .join(format!("{id}.log"))
        .exists());
}

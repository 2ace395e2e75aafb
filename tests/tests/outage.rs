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
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true);
        gone.then_some(())
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

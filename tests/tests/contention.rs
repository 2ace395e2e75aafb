//! Contention: 4 node processes with cap 8 each claim 2,000 tasks from one database. Every
//! task must be executed exactly once — counted from the task logs the executions wrote.

use std::collections::HashMap;
use std::time::Duration;

use cuttle_e2e::{wait_until, Cluster, Database, Node, NodeOptions};
use serde_json::json;

const TASKS: usize = 2000;
const NODES: usize = 4;
const CAP: u32 = 8;

#[test]
fn sqlite_each_task_executed_exactly_once() {
    run(Database::Sqlite);
}

#[test]
fn postgres_each_task_executed_exactly_once() {
    run(Database::Postgres);
}

#[test]
#[ignore = "needs a SQL Server: set CUTTLE_TEST_MSSQL_URL, run with --run-ignored"]
fn sqlserver_each_task_executed_exactly_once() {
    run(Database::SqlServer);
}

fn run(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| cluster.start(NodeOptions::named(&format!("c{i}"), CAP)))
        .collect();
    std::thread::scope(|s| {
        for (i, node) in nodes.iter().enumerate() {
            s.spawn(move || {
                for _ in 0..TASKS / NODES {
                    node.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}}));
                }
                i
            });
        }
    });
    wait_until("every task to succeed", Duration::from_secs(300), || {
        let (_, body) = nodes[0].get("/api/tasks?state=Success&limit=1000");
        let (_, other) = nodes[0].get("/api/tasks?state=Queued&limit=1");
        let (_, exec) = nodes[0].get("/api/tasks?state=Executing&limit=1");
        let done = body["items"].as_array().unwrap().len();
        (done == 1000
            && other["items"].as_array().unwrap().is_empty()
            && exec["items"].as_array().unwrap().is_empty())
        .then_some(())
    });
    // Count executions from the logs the executions themselves wrote.
    let logs = cluster.shared_dir().join("TaskLogs");
    let mut starts_per_task: HashMap<String, usize> = HashMap::new();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "log") {
            continue; // the folder of logs in progress
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let id = path.file_stem().unwrap().to_string_lossy().into_owned();
        for line in text.lines().filter(|l| l.contains(" started on node ")) {
            *starts_per_task.entry(id.clone()).or_default() += 1;
            let node = line.rsplit(' ').next().unwrap().to_owned();
            *per_node.entry(node).or_default() += 1;
        }
    }
    let executions: usize = starts_per_task.values().sum();
    let twice: Vec<_> = starts_per_task.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks executed more than once: {twice:?}");
    assert_eq!(starts_per_task.len(), TASKS, "every task executed");
    assert_eq!(executions, TASKS);
    // No failures either.
    for state in ["Failed", "Canceled", "TimedOut", "Queued", "Executing"] {
        let (_, body) = nodes[0].get(&format!("/api/tasks?state={state}&limit=10"));
        assert!(
            body["items"].as_array().unwrap().is_empty(),
            "{state}: {body}"
        );
    }
    assert_eq!(per_node.values().sum::<usize>(), TASKS, "{per_node:?}");
    assert!(per_node.len() > 1, "the work was shared: {per_node:?}");
}

//! Chaos: three nodes on PostgreSQL behind haproxy, a client enqueuing all the while, a random
//! node killed with SIGKILL and restarted every 10–20 s, and the database restarted once. At
//! the end every task has ended, none ran twice, every failure names its cause, and every log
//! is complete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cuttle_e2e::{report, Cluster, Database, Haproxy, Node, NodeOptions, Rng};
use serde_json::json;

/// How long nodes are killed and restarted, after a 10 s warm-up. The whole test takes about
/// three and a half minutes.
const CHAOS: Duration = Duration::from_secs(140);

#[test]
fn random_kills_and_a_database_restart_lose_and_repeat_nothing() {
    let mut rng = Rng::from_env();
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let opts = |name: &str| NodeOptions {
        offline_after_secs: 8,
        // A restart of the database interrupts heartbeats and the lost-node check.
        expected_errors: vec!["heartbeat".into()],
        ..NodeOptions::named(name, 4)
    };
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| cluster.start(opts(&format!("n{i}"))))
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let executions = cluster.scripts_dir().join("executions");
    let stop = AtomicBool::new(false);
    let (mut kills, mut db_restarts) = (0, 0);

    let (accepted, refused) = std::thread::scope(|scope| {
        // A panic below stops the client too, so the scope can end and the test fail.
        let _stop_client = cuttle_e2e::SetOnDrop(&stop);
        let client = scope.spawn(|| {
            let agent: ureq::Agent = lb.agent();
            let (mut accepted, mut refused) = (Vec::new(), 0);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Tasks of 0.2 to 2 s: some are always running when a node dies.
                let script = format!(
                    "echo $CUTTLE_TASK_ID >> {}; sleep {}.{}",
                    executions.display(),
                    i % 2,
                    2 + i % 8
                );
                let sent = agent
                    .post(&lb.url("/api/tasks"))
                    .header("X-Api-Key", &cluster.api_key)
                    .header("Content-Type", "application/json")
                    .send(
                        json!({"kind": "AdHocScript", "arguments": {"script": script}}).to_string(),
                    );
                match sent {
                    Ok(mut r) if r.status().as_u16() == 201 => {
                        let t: serde_json::Value = r.body_mut().read_json().unwrap();
                        accepted.push(t["id"].as_str().unwrap().to_owned());
                    }
                    // A node dying mid-request or the database restarting: the client would
                    // retry; the test counts it.
                    _ => refused += 1,
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100)); // the client's pace
            }
            (accepted, refused)
        });

        std::thread::sleep(Duration::from_secs(10)); // the queue fills first
        let start = Instant::now();
        let db_restart_at = Duration::from_secs(50 + rng.below(40));
        while start.elapsed() < CHAOS {
            // One event every 10 to 20 s, its downtime included.
            let interval = Duration::from_secs(10 + rng.below(11));
            let event = Instant::now();
            if db_restarts == 0 && start.elapsed() >= db_restart_at {
                let pg = cluster.postgres_server().expect("harness-owned server");
                pg.stop_server().unwrap();
                std::thread::sleep(Duration::from_secs(3)); // down, briefly
                pg.start_server().unwrap();
                db_restarts += 1;
                report(format!(
                    "{:>4}s database restarted",
                    start.elapsed().as_secs()
                ));
            } else {
                let victim = rng.below(3) as usize;
                // Back before the offline timeout (its restart fails its tasks) or after it
                // (another node's scheduler does).
                let down = Duration::from_millis(rng.below(12_000));
                nodes[victim].kill9();
                kills += 1;
                std::thread::sleep(down);
                cluster.restart(&mut nodes[victim]);
                report(format!(
                    "{:>4}s {} killed, back after {} ms",
                    start.elapsed().as_secs(),
                    nodes[victim].name,
                    down.as_millis()
                ));
            }
            std::thread::sleep(interval.saturating_sub(event.elapsed()));
        }
        stop.store(true, Ordering::Relaxed);
        client.join().unwrap()
    });

    // Every task ends.
    let mut states: HashMap<String, usize> = HashMap::new();
    let (mut by_node_loss, mut unexplained, mut incomplete_logs) = (0, Vec::new(), Vec::new());
    let mut succeeded = Vec::new();
    for id in &accepted {
        let t = nodes[0].wait_finished(id, Duration::from_secs(120));
        let state = t["state"].as_str().unwrap().to_owned();
        *states.entry(state.clone()).or_default() += 1;
        let error = t["error"].as_str().unwrap_or_default();
        match state.as_str() {
            "Success" => succeeded.push(id.clone()),
            "Failed" if error.contains("was lost") || error.contains("restarted") => {
                by_node_loss += 1
            }
            _ => unexplained.push(format!("{id} {state}: {error}")),
        }
        let (_, complete) = nodes[0].task_log_and_completeness(id);
        if !complete {
            incomplete_logs.push(id.clone());
        }
    }
    let recorded = std::fs::read_to_string(&executions).unwrap_or_default();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for id in recorded.lines() {
        *runs.entry(id).or_default() += 1;
    }
    let duplicates: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    let unrecorded: Vec<_> = succeeded
        .iter()
        .filter(|id| !runs.contains_key(id.as_str()))
        .collect();
    report(format!(
        "tasks {}, refused requests {refused}, kills {kills}, restarts {kills}, database \
         restarts {db_restarts}, states {states:?}, failed by node loss {by_node_loss}, \
         duplicates {}",
        accepted.len(),
        duplicates.len()
    ));
    assert!(duplicates.is_empty(), "ran more than once: {duplicates:?}");
    assert!(
        unexplained.is_empty(),
        "failures without a cause: {unexplained:?}"
    );
    assert!(
        unrecorded.is_empty(),
        "succeeded without running: {unrecorded:?}"
    );
    assert!(
        incomplete_logs.is_empty(),
        "incomplete logs: {incomplete_logs:?}"
    );
    assert!(kills >= 5 && db_restarts == 1, "the chaos happened");
    assert!(by_node_loss > 0, "kills hit running tasks");
}

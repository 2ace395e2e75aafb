//! End-to-end: real `cuttle-server` processes sharing a real database and shared store.
//!
//! Past 800 lines for a reason: each test is one documented promise, end to end, with the
//! setup it needs in plain sight; splitting them would scatter the promises of one area.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cuttle_e2e::{wait_until, Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);

cuttle_e2e::on_every_database!(
    caps_are_respected_and_every_task_runs_once,
    concurrency_tags_never_overlap,
    killed_node_fails_its_tasks_while_others_drain_the_queue,
    frozen_node_is_fenced_when_it_comes_back,
    three_nodes_on_an_empty_database_migrate_once,
    enqueue_wakes_an_idle_worker_on_another_node,
    drain_returns_418_and_lets_running_tasks_finish,
    a_new_task_cap_applies_at_once,
);

fn sleep(ms: u64) -> Value {
    json!({"kind": "Sleep", "arguments": {"duration_ms": ms}})
}

/// A task's time field in Unix milliseconds (database clock).
fn ms(t: &Value, field: &str) -> i64 {
    t[field]
        .as_str()
        .and_then(cuttle_e2e::parse_rfc3339_ms)
        .unwrap_or_else(|| panic!("{field} missing or malformed in {t}"))
}

/// Largest number of `[start, end)` intervals that overlap at one instant.
fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for &(s, e) in intervals {
        events.push((s, 1));
        events.push((e, -1));
    }
    // Ends sort before starts at the same instant: half-open intervals.
    events.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

fn all_tasks(node: &Node) -> Vec<Value> {
    let (status, body) = node.get("/api/tasks?limit=1000");
    assert_eq!(status, 200);
    body["items"].as_array().unwrap().clone()
}

fn wait_all_finished(node: &Node, ids: &[String], timeout: Duration) -> Vec<Value> {
    ids.iter()
        .map(|id| node.wait_finished(id, timeout))
        .collect()
}

fn caps_are_respected_and_every_task_runs_once(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let n2 = cluster.start(NodeOptions::named("n2", 2));
    let n3 = cluster.start(NodeOptions::named("n3", 0));
    let ids: Vec<String> = (0..20)
        .map(|i| [&n1, &n2, &n3][i % 3].enqueue(sleep(150)))
        .collect();
    let tasks = wait_all_finished(&n3, &ids, MIN);
    let mut per_node: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for t in &tasks {
        assert_eq!(t["state"], "Success", "{t}");
        let node = t["node"].as_str().unwrap().to_owned();
        per_node
            .entry(node)
            .or_default()
            .push((ms(t, "started_at"), ms(t, "completed_at")));
    }
    assert!(!per_node.contains_key("n3"), "the cap-0 node ran tasks");
    for (node, iv) in &per_node {
        assert!(
            max_overlap(iv) <= 2,
            "{node} ran {} tasks at once",
            max_overlap(iv)
        );
    }
    assert_eq!(per_node.values().map(Vec::len).sum::<usize>(), 20);
    // Exactly once: every log holds one start, and it names the node the database recorded.
    for t in &tasks {
        let id = t["id"].as_str().unwrap();
        let log = n3.task_log(id);
        assert_eq!(log.matches(" started on node ").count(), 1, "{id}: {log}");
        assert!(log.contains(&format!("started on node {}", t["node"].as_str().unwrap())));
    }
    // Both workers took part.
    assert_eq!(per_node.len(), 2, "{per_node:?}");
}

fn concurrency_tags_never_overlap(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 4));
    let n2 = cluster.start(NodeOptions::named("n2", 4));
    let mut tagged = Vec::new();
    let mut untagged = Vec::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        let mut t = sleep(100);
        t["concurrency_tag"] = json!("web/production");
        tagged.push(node.enqueue(t));
        untagged.push(node.enqueue(sleep(100)));
    }
    let tagged = wait_all_finished(&n1, &tagged, MIN);
    let untagged = wait_all_finished(&n1, &untagged, MIN);
    let iv: Vec<(i64, i64)> = tagged
        .iter()
        .map(|t| {
            assert_eq!(t["state"], "Success", "{t}");
            (ms(t, "started_at"), ms(t, "completed_at"))
        })
        .collect();
    assert_eq!(max_overlap(&iv), 1, "tagged tasks overlapped: {iv:?}");
    // FIFO within the tag: each starts after the previous one was queued and finished.
    for w in tagged.windows(2) {
        assert!(ms(&w[1], "started_at") >= ms(&w[0], "completed_at"));
    }
    // Untagged tasks were not held back by the tag: some ran alongside tagged ones.
    let all: Vec<(i64, i64)> = iv
        .iter()
        .copied()
        .chain(
            untagged
                .iter()
                .map(|t| (ms(t, "started_at"), ms(t, "completed_at"))),
        )
        .collect();
    assert!(max_overlap(&all) > 1);
}

fn killed_node_fails_its_tasks_while_others_drain_the_queue(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 2));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let long: Vec<String> = (0..2).map(|_| n2.enqueue(sleep(600_000))).collect();
    for id in &long {
        n2.wait_task(id, "executing on n1", MIN, |t| {
            t["state"] == "Executing" && t["node"] == "n1"
        });
    }
    n1.kill9();
    let (status, _) = n2.patch("/api/nodes/n2", &json!({"task_cap": 3}));
    assert_eq!(status, 200);
    let short: Vec<String> = (0..6).map(|_| n2.enqueue(sleep(50))).collect();
    for t in wait_all_finished(&n2, &short, MIN) {
        assert_eq!(t["state"], "Success");
        assert_eq!(t["node"], "n2");
    }
    for id in &long {
        let t = n2.wait_finished(id, MIN);
        assert_eq!(t["state"], "Failed", "{t}");
        let err = t["error"].as_str().unwrap();
        assert!(err.contains("node n1 was lost"), "{err}");
    }
    let (_, node) = n2.get("/api/nodes/n1");
    assert_eq!(node["online"], false);
}

fn frozen_node_is_fenced_when_it_comes_back(db: Database) {
    // A command line of this variant's own: the three run at once.
    let sleep_for = match db {
        Database::Sqlite => "30.071",
        Database::Postgres => "30.072",
        _ => "30.073",
    };
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let marker = cluster.scripts_dir().join("ran-to-the-end");
    let script = format!("echo begun; sleep {sleep_for}; touch {}", marker.display());
    let id = n2.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    wait_until("script to start", MIN, || {
        n2.task_log(&id).contains("OUT   begun").then_some(())
    });
    let begun = std::time::Instant::now();
    // n1 stops heartbeating without dying; n2's scheduler declares it lost.
    n1.freeze();
    let t = n2.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed");
    assert!(
        t["error"].as_str().unwrap().contains("node n1 was lost"),
        "{t}"
    );
    // Cancel works without the owner.
    let queued = n2.enqueue(sleep(1000));
    let (status, body) = n2.patch("/api/nodes/n2", &json!({"draining": true}));
    assert_eq!(status, 200, "{body}");
    let (status, t2) = n2.post(&format!("/api/tasks/{queued}/cancel"), &json!({}));
    assert_eq!((status, t2["state"].as_str()), (202, Some("Canceled")));
    // n1 comes back: it must find its claim gone and stop the script before it finishes.
    n1.thaw();
    // Whichever it notices first — its own silence past the offline timeout, or the database
    // no longer listing the task as its own — it stops the task.
    wait_until("n1 to notice it lost the task", MIN, || {
        n1.stderr_text().contains("(fenced)").then_some(())
    });
    let log = wait_until("the fencing line in the task log", MIN, || {
        let log = n2.task_log(&id);
        (log.contains("lost its claim") || log.contains("lost contact with the database"))
            .then_some(log)
    });
    assert!(log.contains("node n1 lost"), "{log}");
    // The script would have touched the marker 30 s after starting: its sleep is killed well
    // before (its whole sandbox with it, so the marker never comes).
    wait_until("the fenced script to be killed", MIN, || {
        cuttle_e2e::processes_running(&["sleep", sleep_for])
            .is_empty()
            .then_some(())
    });
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "the script ended by itself, not fenced"
    );
    assert!(!marker.exists(), "a fenced task ran to its end");
    let t = n2.task(&id);
    assert_eq!(
        t["state"], "Failed",
        "the late outcome must be refused: {t}"
    );
}

fn three_nodes_on_an_empty_database_migrate_once(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| cluster.spawn(NodeOptions::named(&format!("m{i}"), 1)))
        .collect();
    for n in &mut nodes {
        wait_until(&format!("{} to answer its ping", n.name), MIN, || {
            (n.ping() == 200).then_some(())
        });
    }
    let migrated = nodes
        .iter()
        .filter(|n| n.stderr_text().contains("applied migration"))
        .count();
    assert_eq!(migrated, 1, "exactly one node creates the schema");
    let (_, list) = nodes[0].get("/api/nodes");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

fn enqueue_wakes_an_idle_worker_on_another_node(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    // A 20 s poll: only a wake-up can start the task quickly.
    let slow_poll = |name: &str, cap| NodeOptions {
        poll_ms: 20_000,
        ..NodeOptions::named(name, cap)
    };
    let api = cluster.start(NodeOptions {
        roles: "api,scheduler".into(),
        ..slow_poll("api", 0)
    });
    let _worker = cluster.start(NodeOptions {
        roles: "worker".into(),
        ..slow_poll("w", 1)
    });
    // Let the worker's first poll pass, so it is idle and waiting.
    wait_until("worker registered", MIN, || {
        let (_, n) = api.get("/api/nodes/w");
        (n["online"] == true).then_some(())
    });
    for _ in 0..3 {
        let id = api.enqueue(sleep(0));
        let t = api.wait_finished(&id, MIN);
        let latency = ms(&t, "started_at") - ms(&t, "queued_at");
        assert!(
            latency < 5_000,
            "task waited {latency} ms: the wake-up did not arrive"
        );
    }
}

fn drain_returns_418_and_lets_running_tasks_finish(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let first = n1.enqueue(sleep(1500));
    n1.wait_task(&first, "executing", MIN, |t| t["state"] == "Executing");
    assert_eq!(
        n1.get("/api/nodes/ping"),
        (200, json!({"node": "n1", "state": "online"})),
        "the ping says only what a load balancer needs: no addresses"
    );
    let (status, node) = n2.patch("/api/nodes/n1", &json!({"draining": true}));
    assert_eq!((status, node["draining"].as_bool()), (200, Some(true)));
    assert_eq!(
        n1.get("/api/nodes/ping"),
        (418, json!({"node": "n1", "state": "draining"}))
    );
    assert_eq!(n2.ping(), 200);
    let alias = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = alias
        .get(&n1.url("/api/octopusservernodes/ping"))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        418,
        "the guide's ping path answers the same"
    );
    let second = n2.enqueue(sleep(10));
    let t = n1.wait_finished(&first, MIN);
    assert_eq!(
        t["state"], "Success",
        "the running task finished while draining"
    );
    // The draining node claims nothing: give it several polls to prove it.
    std::thread::sleep(Duration::from_millis(1000)); // 5 poll intervals; nothing to await for an absence
    assert_eq!(n1.task(&second)["state"], "Queued");
    // A cap raised over the API applies without a restart.
    let (status, _) = n1.patch("/api/nodes/n2", &json!({"task_cap": 1}));
    assert_eq!(status, 200);
    let t = n1.wait_finished(&second, MIN);
    assert_eq!(
        (t["state"].as_str(), t["node"].as_str()),
        (Some("Success"), Some("n2"))
    );
    let (status, _) = n2.patch("/api/nodes/n1", &json!({"draining": false}));
    assert_eq!(status, 200);
    assert_eq!(n1.ping(), 200);
}

/// `PATCH /api/nodes/{name}` "takes effect at once": a raised cap fills at once and a lowered
/// one holds from the node's next claim — long before the node's next heartbeat (60 s here).
fn a_new_task_cap_applies_at_once(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let slow_beat = |name: &str, cap| NodeOptions {
        heartbeat_secs: 60,
        offline_after_secs: 180,
        ..NodeOptions::named(name, cap)
    };
    let w = cluster.start(slow_beat("w", 1));
    let api = cluster.start(slow_beat("api", 0));
    let (status, node) = api.patch("/api/nodes/w", &json!({"task_cap": 3}));
    assert_eq!((status, node["task_cap"].as_u64()), (200, Some(3)));
    let long: Vec<String> = (0..3).map(|_| api.enqueue(sleep(60_000))).collect();
    wait_until(
        "three tasks executing at once under the raised cap",
        MIN / 4,
        || {
            let executing = long
                .iter()
                .filter(|id| w.task(id)["state"] == "Executing")
                .count();
            (executing == 3).then_some(())
        },
    );
    for id in &long {
        let (status, _) = api.post(&format!("/api/tasks/{id}/cancel"), &json!({}));
        assert_eq!(status, 202);
    }
    wait_all_finished(&api, &long, MIN);

    let (status, _) = api.patch("/api/nodes/w", &json!({"task_cap": 1}));
    assert_eq!(status, 200);
    let ids: Vec<String> = (0..3).map(|_| api.enqueue(sleep(700))).collect();
    let tasks = wait_all_finished(&api, &ids, MIN);
    let iv: Vec<(i64, i64)> = tasks
        .iter()
        .map(|t| (ms(t, "started_at"), ms(t, "completed_at")))
        .collect();
    assert_eq!(
        max_overlap(&iv),
        1,
        "a cap of 1 ran tasks side by side: {iv:?}"
    );
}

#[test]
fn deleted_node_registers_again() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    // A node that still owns tasks cannot be deleted: its tasks would be orphaned.
    let busy = n1.enqueue(sleep(60_000));
    n1.wait_task(&busy, "executing", MIN, |t| t["state"] == "Executing");
    let (status, body) = n1.request("DELETE", "/api/nodes/n1", None);
    assert_eq!(status, 409, "{body}");
    let (status, _) = n1.post(&format!("/api/tasks/{busy}/cancel"), &json!({}));
    assert_eq!(status, 202);
    n1.wait_finished(&busy, MIN);
    let (status, _) = n1.request("DELETE", "/api/nodes/n1", None);
    assert_eq!(status, 204);
    let (status, _) = n1.get("/api/nodes/n1");
    assert_eq!(status, 404);
    let node = wait_until("n1 to re-register", MIN, || {
        let (status, node) = n1.get("/api/nodes/n1");
        (status == 200).then_some(node)
    });
    assert_eq!(node["online"], true);
    assert_eq!(n1.request("DELETE", "/api/nodes/ghost", None).0, 404);
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let cluster = Cluster::sqlite();
    let mut n1 = cluster.start(NodeOptions {
        shutdown_grace_secs: 30,
        ..NodeOptions::named("n1", 2)
    });
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let short = n1.enqueue(sleep(1500));
    n1.wait_task(&short, "executing", MIN, |t| t["state"] == "Executing");
    n1.terminate();
    wait_until("ping 418 while draining", MIN, || {
        (n1.ping() == 418).then_some(())
    });
    let st = n1.wait_exit(MIN).unwrap();
    assert!(st.success(), "exit status {st}");
    assert_eq!(n2.task(&short)["state"], "Success");

    // With a short grace period, what is still running is cancelled and marked so.
    let mut n3 = cluster.start(NodeOptions {
        shutdown_grace_secs: 1,
        ..NodeOptions::named("n3", 1)
    });
    let long = n3.enqueue(sleep(600_000));
    n3.wait_task(&long, "executing", MIN, |t| t["state"] == "Executing");
    n3.terminate();
    assert!(n3.wait_exit(MIN).unwrap().success());
    let t = n2.task(&long);
    assert_eq!(t["state"], "Canceled", "{t}");
    assert!(t["error"].as_str().unwrap().contains("shut down"), "{t}");
}

#[test]
fn cancel_kills_a_running_script_and_its_children() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    // A child in the background and one in a session of its own: both would outlive a kill of
    // the shell alone, or of its process group.
    let script = "sleep 600.21 & setsid sleep 600.22 & echo started; wait";
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    wait_until("script to start", MIN, || {
        n1.task_log(&id).contains("OUT   started").then_some(())
    });
    let pid = cuttle_e2e::wait_for_process(&["sleep", "600.21"], MIN);
    let escaped = cuttle_e2e::wait_for_process(&["sleep", "600.22"], MIN);
    let (status, t) = n1.post(&format!("/api/tasks/{id}/cancel"), &json!({}));
    assert_eq!(status, 202);
    assert!(
        matches!(t["state"].as_str(), Some("Cancelling" | "Canceled")),
        "{t}"
    );
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Canceled");
    wait_until("the script's children to die", MIN, || {
        (cuttle_e2e::process_gone(pid) && cuttle_e2e::process_gone(escaped)).then_some(())
    });
    let (status, body) = n1.post(&format!("/api/tasks/{id}/cancel"), &json!({}));
    assert_eq!(status, 409, "{body}");

    // "No process outlives its task": a script that ends Success while a `setsid` child of
    // its own still runs takes that child with it.
    let script = "setsid sleep 600.23 < /dev/null > /dev/null 2>&1 & echo left behind";
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}");
    assert!(
        cuttle_e2e::processes_running(&["sleep", "600.23"]).is_empty(),
        "a setsid child outlived its script"
    );
}

#[test]
fn scripts_never_see_the_node_s_secrets() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "env"}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
    let log = n1.task_log(&id);
    assert!(log.contains(&format!("OUT   CUTTLE_TASK_ID={id}")), "{log}");
    assert!(log.contains("OUT   PATH="), "{log}");
    // The node runs with its master key, database URL and admin key in its environment.
    for secret in [&cluster.master_key, &cluster.api_key, &cluster.db_url] {
        assert!(!log.contains(secret.as_str()), "{log}");
    }
    for name in [
        "CUTTLE_MASTER_KEY",
        "CUTTLE_DATABASE_URL",
        "CUTTLE_ADMIN_API_KEY",
    ] {
        assert!(!log.contains(name), "{log}");
    }
}

#[test]
fn what_the_node_writes_is_its_own_and_what_scripts_write_is_not() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let deployed = cluster.scripts_dir().join("deployed.txt");
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {
        "script": format!("echo hello > {}", deployed.display())}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
    // The node's: the database, the task log and the folders it made in the shared store.
    assert_eq!(mode(&cluster.dir().join("cuttle.db")), 0o600);
    let logs = cluster.shared_dir().join("TaskLogs");
    assert_eq!(mode(&logs), 0o700);
    assert_eq!(mode(&logs.join(format!("{id}.log"))), 0o600);
    // Traversable (not listable) by the scripts' user, to reach its own work directory.
    assert_eq!(mode(&cluster.dir().join("n1").join("work")), 0o711);
    // A script's: the usual umask.
    assert_eq!(mode(&deployed), 0o644);
}

#[test]
fn task_logs_are_bounded_and_scripts_cannot_forge_their_lines() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_TASK_LOG_MAX_BYTES".into(), "65536".into())],
        ..NodeOptions::named("n1", 1)
    });
    // A carriage return would let a script draw a line of its own over the stamped one.
    let script = "printf 'real\\r2026-01-01T00:00:00.000Z INFO  forged\\n'; \
                  i=0; while [ $i -lt 5000 ]; do echo \"line $i of a chatty script\"; i=$((i+1)); done";
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
    let log = n1.task_log(&id);
    assert!(log.len() < 70_000, "{} bytes", log.len());
    assert!(log.contains("log cut here"), "{}", &log[log.len() - 300..]);
    assert!(
        !log.contains("line 4999 of"),
        "output past the bound was dropped"
    );
    assert!(!log.contains("\r"), "no raw carriage return in the log");
    assert!(
        log.contains("real\u{fffd}2026-01-01T00:00:00.000Z INFO  forged"),
        "{}",
        &log[..500]
    );
}

#[test]
fn scripts_fail_on_nonzero_exit_and_time_out() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let bad = n1.enqueue(
        json!({"kind": "AdHocScript", "arguments": {"script": "echo about to fail >&2; exit 7"}}),
    );
    let slow = n1.enqueue(
        json!({"kind": "AdHocScript", "arguments": {"script": "sleep 60", "timeout_secs": 1}}),
    );
    let t = n1.wait_finished(&bad, MIN);
    assert_eq!(
        (t["state"].as_str(), t["error"].as_str()),
        (Some("Failed"), Some("script exited with code 7"))
    );
    assert!(n1.task_log(&bad).contains("ERR   about to fail"));
    let t = n1.wait_finished(&slow, MIN);
    assert_eq!(t["state"], "TimedOut", "{t}");
}

#[test]
fn bad_input_gets_a_4xx_json_error_and_the_node_stays_up() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let huge = format!(
        "{{\"kind\":\"Sleep\",\"arguments\":{{\"duration_ms\":1}},\"description\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("POST", "/api/tasks".into(), Some("{not json".into()), 400),
        ("POST", "/api/tasks".into(), Some("[]".into()), 400),
        (
            "POST",
            "/api/tasks".into(),
            Some(r#"{"kind":"Nope"}"#.into()),
            400,
        ),
        (
            "POST",
            "/api/tasks".into(),
            Some(r#"{"kind":"Sleep","arguments":{"duration_ms":-5}}"#.into()),
            400,
        ),
        (
            "POST",
            "/api/tasks".into(),
            Some(r#"{"kind":"Sleep","arguments":{"duration_ms":1e99}}"#.into()),
            400,
        ),
        (
            "POST",
            "/api/tasks".into(),
            Some(r#"{"kind":"Sleep","arguments":{"duration_ms":99999999999999}}"#.into()),
            400,
        ),
        ("GET", "/api/tasks?limit=-1".into(), None, 400),
        ("GET", "/api/tasks?limit=abc".into(), None, 400),
        ("GET", "/api/tasks?state=Sleeping".into(), None, 400),
        ("GET", "/api/tasks/ServerTasks-999999".into(), None, 404),
        ("GET", "/api/tasks/not-an-id".into(), None, 404),
        ("GET", "/api/tasks/ServerTasks-99999/log".into(), None, 404),
        (
            "POST",
            "/api/tasks/ServerTasks-99999/cancel".into(),
            None,
            404,
        ),
        (
            "PATCH",
            "/api/nodes/n1".into(),
            Some(r#"{"task_cap":-1}"#.into()),
            400,
        ),
        (
            "PATCH",
            "/api/nodes/n1".into(),
            Some(r#"{"task_cap":99999999999}"#.into()),
            400,
        ),
        (
            "PATCH",
            "/api/nodes/n1".into(),
            Some(r#"{"task_cap":5000}"#.into()),
            400,
        ),
        (
            "PATCH",
            "/api/nodes/n1".into(),
            Some(r#"{"draining":"yes"}"#.into()),
            400,
        ),
        ("PATCH", "/api/nodes/n1".into(), Some("{}".into()), 400),
        (
            "PATCH",
            "/api/nodes/ghost".into(),
            Some(r#"{"task_cap":1}"#.into()),
            404,
        ),
        ("GET", "/api/nodes/ghost".into(), None, 404),
        ("GET", "/api/nope".into(), None, 404),
        ("PUT", "/api/tasks".into(), Some("{}".into()), 405),
    ];
    for (method, path, body, want) in cases {
        let (status, json) = n1.request(method, &path, body.as_deref());
        assert_eq!(status, want, "{method} {path}: {json}");
        if status != 405 {
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{method} {path}: {json}"
            );
            assert!(json["error"]["code"].is_string(), "{method} {path}: {json}");
        }
    }
    // Oversized bodies, each on a connection of its own. Declared too large: refused with a
    // 413 before a byte of it is read.
    let (status, body) = oversized_post(&n1, &cluster.api_key, huge.len(), None);
    assert_eq!(status.as_deref(), Some("413"), "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // Sent in chunks, no length declared: refused once past the limit. The node may close the
    // connection while the body is still being sent, and the client then sees it reset
    // rather than the answer: either will do; the node must stay up.
    let (status, body) = oversized_post(&n1, &cluster.api_key, huge.len(), Some(&huge));
    assert!(
        matches!(status.as_deref(), None | Some("413")),
        "{status:?} {body}"
    );
    // No key, wrong key.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = agent.get(&n1.url("/api/tasks")).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = agent
        .get(&n1.url("/api/tasks"))
        .header("X-Api-Key", "API-WRONG")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nothing was half-written, and the node still serves.
    assert!(all_tasks(&n1).is_empty());
    assert_eq!(n1.ping(), 200);
}

/// `POST /api/tasks` with a body of `len` bytes on a raw connection: only the headers when
/// `chunked` is `None` (with `Content-Length`), else `chunked` as a chunked body written by a
/// thread of its own that gives up when the node closes. Returns the answer's status code and
/// body, or no status when the connection was closed or reset before an answer was read.
fn oversized_post(
    node: &Node,
    key: &str,
    len: usize,
    chunked: Option<&str>,
) -> (Option<String>, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    conn.set_read_timeout(Some(MIN)).unwrap();
    let framing = match chunked {
        None => format!("Content-Length: {len}"),
        Some(_) => "Transfer-Encoding: chunked".to_owned(),
    };
    write!(
        conn,
        "POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\n\
         Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    std::thread::scope(|s| {
        if let Some(body) = chunked {
            let mut writer = conn.try_clone().unwrap();
            s.spawn(move || {
                for chunk in body.as_bytes().chunks(64 << 10) {
                    let size = format!("{:x}\r\n", chunk.len());
                    let framed = [size.as_bytes(), chunk, b"\r\n"];
                    if framed.iter().any(|part| writer.write_all(part).is_err()) {
                        return; // the node closed the connection: expected
                    }
                }
                let _ = writer.write_all(b"0\r\n\r\n");
            });
        }
        // A reset after part of the answer leaves what was read.
        let _ = conn.read_to_end(&mut answer);
        let _ = conn.shutdown(std::net::Shutdown::Both);
    });
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .map(str::to_owned);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn wrong_master_key_exits_with_its_reason() {
    let mut cluster = Cluster::sqlite();
    drop(cluster.start(NodeOptions::named("n1", 0)));
    cluster.master_key = "AAAAAAAAAAAAAAAAAAAAAA==".into();
    let cmd = cluster.command(
        &NodeOptions::named("n1", 0),
        cuttle_e2e::free_port(),
        cuttle_e2e::free_port(),
    );
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(err.contains("master key does not match"), "{err}");
    assert!(
        !err.contains("AAAAAAAAAAAAAAAAAAAAAA"),
        "the key must never be printed"
    );
}

/// One live process per node name: a second process started with a live node's name is
/// refused, naming the first, and the first keeps its running task; a killed process's name is
/// taken over once its heartbeat has stopped, a cleanly stopped one's without waiting.
#[test]
fn a_node_name_is_held_by_one_live_process() {
    let cluster = Cluster::sqlite();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    let busy = n1.enqueue(sleep(60_000));
    n1.wait_task(&busy, "executing", MIN, |t| t["state"] == "Executing");
    let cmd = cluster.command(
        &NodeOptions::named("n1", 1),
        cuttle_e2e::free_port(),
        cuttle_e2e::free_port(),
    );
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("another cuttle-server process is running as node \"n1\"")
            && err.contains(n1.url("").trim_start_matches("http://")),
        "the refusal names the name and the process holding it: {err}"
    );
    assert_eq!(
        n1.task(&busy)["state"],
        "Executing",
        "the first keeps its task"
    );
    assert_eq!(n1.ping(), 200);
    let (status, _) = n1.post(&format!("/api/tasks/{busy}/cancel"), &json!({}));
    assert_eq!(status, 202);
    n1.wait_finished(&busy, MIN);

    // Killed: the next start watches the old heartbeat, finds it stopped, and takes over.
    n1.kill9();
    cluster.restart(&mut n1);
    assert!(n1.stderr_text().contains("watching its heartbeat"));
    // Stopped cleanly: the name is let go, the next start takes it without watching.
    n1.terminate();
    n1.wait_exit(MIN).unwrap();
    let watched = n1.stderr_text().matches("watching its heartbeat").count();
    cluster.restart(&mut n1);
    assert_eq!(
        n1.stderr_text().matches("watching its heartbeat").count(),
        watched
    );
    let id = n1.enqueue(sleep(0));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
}

/// A process whose name was taken over while it was frozen learns it at its next heartbeat
/// and stops, exiting 1: two live processes never share a name.
#[test]
fn a_process_whose_name_was_taken_over_stops() {
    let cluster = Cluster::sqlite();
    let mut old = cluster.start(NodeOptions {
        expected_errors: vec![
            "held by another process".into(),
            "another process holds this node's name".into(),
            "took over node name".into(),
        ],
        ..NodeOptions::named("n1", 1)
    });
    old.freeze_between_writes();
    let new = cluster.start(NodeOptions::named("n1", 1));
    assert!(new.stderr_text().contains("taking the name over"));
    old.thaw();
    let status = old.wait_exit(MIN).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        old.stderr_text()
            .contains("another cuttle-server process took over node name \"n1\""),
        "{}",
        old.stderr_text()
    );
    let id = new.enqueue(sleep(0));
    assert_eq!(new.wait_finished(&id, MIN)["state"], "Success");
}

#[test]
fn sql_server_connection_strings_are_checked_and_passwords_never_shown() {
    let cluster = Cluster::sqlite();
    let port = cuttle_e2e::free_port();
    let refused = format!(
        "Server=tcp:127.0.0.1,{port};Database=cuttle;User Id=cuttle;Password=hunter2;Encrypt=true"
    );
    let unreachable = format!("database sqlserver 127.0.0.1:{port}/cuttle is unreachable");
    for (url, want) in [
        (refused.as_str(), unreachable.as_str()),
        (
            "Server=tcp:db.example.com,1433;Database=cuttle;User Id=cuttle;Password=hunter2;Colour=red",
            "unknown setting \"colour\"",
        ),
        (
            "mssql://cuttle:hunter2@db.example.com/cuttle?encrypt=maybe",
            "encrypt must be",
        ),
    ] {
        let opts = NodeOptions {
            env: vec![
                ("CUTTLE_DATABASE_URL".into(), url.into()),
                ("CUTTLE_DB_WAIT_SECS".into(), "1".into()),
            ],
            ..NodeOptions::named("n1", 0)
        };
        let cmd = cluster.command(&opts, cuttle_e2e::free_port(), cuttle_e2e::free_port());
        let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
        assert!(!status.success(), "{url}");
        assert!(err.contains(want), "{url}: {err}");
        assert!(!err.contains("hunter2"), "the password must never be printed: {err}");
    }
}

/// A claim that commits while its answer is lost (the connection drops after the commit, as in
/// a failover) leaves the task held by a node that never started it. The node gives it back
/// to the queue, in its old place, and it runs once.
#[test]
fn a_claim_whose_answer_was_lost_goes_back_to_the_queue_and_runs_once() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let runs = cluster.scripts_dir().join("runs");
    let script = format!("echo $CUTTLE_TASK_ID >> {}", runs.display());
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    let seq: i64 = id.trim_start_matches("ServerTasks-").parse().unwrap();
    // What n1's claim would have written, had its answer been lost on the way back.
    let pg = cluster.postgres_server().expect("harness-owned server");
    pg.psql(&format!(
        "UPDATE tasks SET state = 'Executing', node = 'n1', claim_epoch = claim_epoch + 1,
             started_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
         WHERE seq = {seq}"
    ))
    .unwrap();
    let (status, _) = n1.patch("/api/nodes/n1", &json!({"task_cap": 1}));
    assert_eq!(status, 200);
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}");
    let epoch = pg
        .psql(&format!("SELECT claim_epoch FROM tasks WHERE seq = {seq}"))
        .unwrap();
    assert_eq!(epoch, "2", "claimed again after it was given back");
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        vec![id.as_str()],
        "ran exactly once"
    );
    assert!(
        n1.stderr_text().contains("claim never received"),
        "the node says what it did"
    );
    // Both executions have their log: the one that never ran says why.
    let (log, complete) = n1.task_log_and_completeness(&id);
    assert!(complete, "{log}");
    assert!(log.contains("never received this claim"), "{log}");
}

#[test]
fn unreachable_database_exits_naming_the_host() {
    let cluster = Cluster::sqlite();
    let port = cuttle_e2e::free_port();
    let opts = NodeOptions {
        env: vec![
            (
                "CUTTLE_DATABASE_URL".into(),
                format!("postgres://cuttle:hunter2@127.0.0.1:{port}/cuttle"),
            ),
            ("CUTTLE_DB_WAIT_SECS".into(), "2".into()),
        ],
        ..NodeOptions::named("n1", 0)
    };
    let cmd = cluster.command(&opts, cuttle_e2e::free_port(), cuttle_e2e::free_port());
    let started = std::time::Instant::now();
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "gave up before CUTTLE_DB_WAIT_SECS"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password must never be printed: {err}"
    );
}

#[test]
fn task_ids_are_unique_across_nodes() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let ids: HashSet<String> = (0..20)
        .map(|i| if i % 2 == 0 { &n1 } else { &n2 }.enqueue(sleep(1)))
        .collect();
    assert_eq!(ids.len(), 20);
    let queued: Vec<Value> = all_tasks(&n1);
    assert_eq!(queued.len(), 20);
    assert!(queued.iter().all(|t| t["state"] == "Queued"));
}

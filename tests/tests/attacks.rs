//! The attacks of the second security review, each performed as written against real nodes:
//! every test here failed before its defence existed. `docs/security.md` lists each defence
//! with its test.

use std::time::Duration;

use cuttle_e2e::{Cluster, NodeOptions};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);

/// What a script on a node tries to read to take the cluster: the node's environment (master
/// key, database URL, admin key), the data directory's files, and the shared store.
fn loot_script(data_dir: &std::path::Path, shared: &std::path::Path) -> String {
    format!(
        "id; echo \"ppid=$PPID\"
for p in /proc/$PPID /proc/1 /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done
cat {d}/master.key {d}/admin-api-key 2>&1
head -c 300 {d}/cuttle.db 2>&1 | tr -c '[:print:]\\n' '.'
ls -la {d} {d}/.. 2>&1
ls -laR {s} 2>&1 | head -50
cat {s}/TaskLogs/*.log 2>&1 | head -20
echo end-of-attack",
        d = data_dir.display(),
        s = shared.display()
    )
}

/// C-1: a `deployer` key (what CI holds) cannot run a script on a node at all; an operator's
/// script runs isolated and reads none of the node's secrets.
#[test]
fn c1_scripts_on_a_node_read_nothing_of_the_node() {
    let cluster = Cluster::sqlite();
    // A node as the README starts one: its master key in its data directory, and the first
    // admin key's file beside it.
    let data = cluster.dir().join("n1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("master.key"), format!("{}\n", cluster.master_key)).unwrap();
    let planted = "planted-admin-key-0123456789abcdef";
    std::fs::write(data.join("admin-api-key"), planted).unwrap();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_MASTER_KEY".into(), String::new())],
        ..NodeOptions::named("n1", 1)
    });
    let deployer = n1.key_with_scope("ci", "deployer");
    let operator = n1.key_with_scope("ops", "operator");
    let script = loot_script(&data, &cluster.shared_dir());
    // A task whose log the attacker would like to read.
    let earlier = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    n1.wait_finished(&earlier, MIN);

    // The deployer: refused, naming the scope a script needs.
    let body = json!({"kind": "AdHocScript", "arguments": {"script": script}}).to_string();
    let (status, err) = n1.request_with_key(&deployer, "POST", "/api/tasks", Some(&body));
    assert_eq!(status, 403, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("AdHocScript task needs scope operator"),
        "{msg}"
    );

    // The operator: the script runs, isolated, and reads nothing of the node.
    let (status, task) = n1.request_with_key(&operator, "POST", "/api/tasks", Some(&body));
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    n1.wait_finished(id, MIN);
    let log = n1.task_log(id);
    assert!(log.contains("OUT   end-of-attack"), "{log}");
    assert!(
        log.contains("OUT   uid=") && log.contains("(cuttle-script)"),
        "runs as its own user: {log}"
    );
    for secret in [
        cluster.master_key.as_str(),
        cluster.api_key.as_str(),
        cluster.db_url.as_str(),
        planted,
        "SQLite format",
        "CUTTLE_MASTER_KEY",
        "CUTTLE_DATABASE_URL",
        "CUTTLE_ADMIN_API_KEY",
        &format!("{earlier} started"),
    ] {
        assert!(!log.contains(secret), "the script read {secret:?}:\n{log}");
    }

    // The node itself keeps no secret in its environment for anyone else to read either.
    let environ = std::fs::read(format!("/proc/{}/environ", n1.pid().unwrap())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("CUTTLE_NODE_NAME=n1"), "{environ}");
    for secret in [cluster.api_key.as_str(), cluster.db_url.as_str()] {
        assert!(
            !environ.contains(secret),
            "the node's environment holds {secret:?}"
        );
    }
}

/// C-1: maintenance and file kinds are an operator's (or an admin's), whatever the kind's
/// arguments; a deployer still deploys, sleeps and checks health.
#[test]
fn c1_a_deployer_queues_no_maintenance_or_file_kinds() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let deployer = n1.key_with_scope("ci", "deployer");
    let operator = n1.key_with_scope("ops", "operator");
    let post = |key: &str, kind: &str, arguments: serde_json::Value| {
        let body = json!({"kind": kind, "arguments": arguments}).to_string();
        n1.request_with_key(key, "POST", "/api/tasks", Some(&body))
    };
    let refused = |key: &str, kind: &str, arguments: serde_json::Value, needs: &str| {
        let (status, err) = post(key, kind, arguments);
        assert_eq!(status, 403, "{kind}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("needs scope {needs}")), "{msg}");
    };
    refused(
        &deployer,
        "AdHocScript",
        json!({"script": "id", "roles": ["web"]}),
        "operator",
    );
    refused(
        &deployer,
        "PushFile",
        json!({"source": "Packages/x", "destination": "x", "roles": ["web"]}),
        "operator",
    );
    refused(
        &deployer,
        "PullFile",
        json!({"source": "x", "roles": ["web"]}),
        "operator",
    );
    refused(&deployer, "Retention", json!({}), "operator");
    refused(&deployer, "PackageReindex", json!({}), "operator");
    refused(
        &deployer,
        "EventArchive",
        json!({"older_than_secs": 60}),
        "admin",
    );
    refused(
        &operator,
        "EventArchive",
        json!({"older_than_secs": 60}),
        "admin",
    );
    let (status, check) = post(&deployer, "HealthCheck", json!({}));
    assert_eq!(status, 201, "{check}");
    let (status, sleep) = post(&deployer, "Sleep", json!({"duration_ms": 1}));
    assert_eq!(status, 201, "{sleep}");
    let (status, _) = post(&operator, "Retention", json!({}));
    assert_eq!(status, 201);
    // Nor may a deployer cancel what it could not queue.
    let (_, queued) = n1.post(
        "/api/tasks",
        &json!({"kind": "PackageReindex", "arguments": {}}),
    );
    let cancel = format!("/api/tasks/{}/cancel", queued["id"].as_str().unwrap());
    let (status, err) = n1.request_with_key(&deployer, "POST", &cancel, None);
    assert_eq!(status, 403, "{err}");
}

/// C-1: a node that cannot isolate scripts refuses them with the reason, and runs everything
/// else; `CUTTLE_BUILTIN_WORKER=off` refuses them too.
#[test]
fn c1_a_node_that_cannot_isolate_refuses_scripts_saying_why() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_BUILTIN_WORKER_USER".into(), "no-such-user".into())],
        ..NodeOptions::named("n1", 1)
    });
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo ran"}}));
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    let err = t["error"].as_str().unwrap();
    assert!(
        err.contains("cannot run scripts isolated") && err.contains("no-such-user"),
        "{err}"
    );
    assert!(!n1.task_log(&id).contains("OUT   ran"));
    let sleep = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    assert_eq!(n1.wait_finished(&sleep, MIN)["state"], "Success");
    assert!(
        n1.stderr_text().contains("cannot run scripts isolated"),
        "the node says so at start"
    );

    let other = Cluster::sqlite();
    let n2 = other.start(NodeOptions {
        env: vec![("CUTTLE_BUILTIN_WORKER".into(), "off".into())],
        ..NodeOptions::named("n2", 1)
    });
    let id = n2.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo ran"}}));
    let t = n2.wait_finished(&id, MIN);
    assert_eq!(t["node"], "n2", "{t}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("CUTTLE_BUILTIN_WORKER=off"),
        "{t}"
    );
}

//! What the cluster keeps over time: retention (releases, deployment logs and artifacts,
//! package versions) and the audit archive, run as periodic system tasks exactly once per
//! period across the nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use cuttle_e2e::{
    cli_binary, multipart, run_to_exit, upload, wait_until, Cluster, Database, Generated, Node,
    NodeOptions,
};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

fn upload_package(node: &Node, file_name: &str, seed: u64) {
    let (content_type, body) = multipart(file_name, &Generated::zip(seed, 2000).to_vec());
    let (status, p) = upload(
        node.http(),
        &node.url("/api/spaces/Spaces-1/packages/raw"),
        &node.api_key(),
        &content_type,
        &body[..],
        body.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{p}");
}

fn run_task(node: &Node, kind: &str, arguments: Value) -> (Value, String) {
    let task = node.enqueue(json!({"kind": kind, "arguments": arguments}));
    let t = node.wait_finished(&task, MIN);
    let log = node.task_log(&task);
    assert_eq!(t["state"], "Success", "{log}");
    (t, log)
}

#[test]
fn retention_removes_exactly_what_is_no_longer_kept() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let env = id(&n1
        .post("/api/spaces/default/environments", &json!({"name": "Dev"}))
        .1);
    let (status, shop) = n1.post(
        "/api/spaces/default/projects",
        &json!({"name": "Shop", "retention": {"releases_to_keep": 2, "releases_per_environment": 1}}),
    );
    assert_eq!(status, 201, "{shop}");
    let shop_path = format!("/api/spaces/default/projects/{}", id(&shop));
    let process = json!({"version": 1, "steps": [{"name": "Build", "action": {"type": "script",
        "script": "echo built #{Cuttle.Release.Number} > out.txt\necho \"##cuttle[createArtifact path='out.txt']\""}}]});
    let (status, saved) = n1.request(
        "PUT",
        &format!("{shop_path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let mut tasks = Vec::new();
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        let (status, r) = n1.post(
            &format!("{shop_path}/releases"),
            &json!({"version": version}),
        );
        assert_eq!(status, 201, "{r}");
        let (status, d) = n1.post(
            "/api/spaces/default/deployments",
            &json!({"release_id": r["id"], "environment_id": env}),
        );
        assert_eq!(status, 201, "{d}");
        let task = d["task_id"].as_str().unwrap().to_owned();
        assert_eq!(n1.wait_finished(&task, MIN)["state"], "Success");
        tasks.push(task);
    }
    let artifacts = |task: &str| {
        n1.get(&format!("/api/tasks/{task}/artifacts")).1["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(artifacts(&tasks[0]), 1);

    // The repository: Tool 1.0.0–1.3.0; a release of another project deploys 1.0.0.
    for (i, v) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].iter().enumerate() {
        upload_package(&n1, &format!("Tool.{v}.zip"), i as u64);
    }
    let (_, ops) = n1.post("/api/spaces/default/projects", &json!({"name": "Ops"}));
    let ops_path = format!("/api/spaces/default/projects/{}", id(&ops));
    let step = json!({"version": 1, "steps": [{"name": "Tool", "target_roles": ["tools"],
        "action": {"type": "deploy-package", "package_id": "Tool", "version": "1.0.0"}}]});
    let (status, saved) = n1.request(
        "PUT",
        &format!("{ops_path}/deploymentprocess"),
        Some(&step.to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, r) = n1.post(
        &format!("{ops_path}/releases"),
        &json!({"version": "0.1.0"}),
    );
    assert_eq!(status, 201, "{r}");

    let (_, log) = run_task(&n1, "Retention", json!({"package_versions_to_keep": 2}));
    // Release 1.0.0 went when 1.2.0 was made (keep 2); its deployment's and 1.1.0's logs and
    // artifacts go now (one release per environment); Tool 1.1.0 goes (2 newest + the used one).
    assert!(
        log.contains("retention done: 0 release(s), 2 deployment log(s), 2 artifact(s), 1 package version(s) removed"),
        "{log}"
    );
    assert!(log.contains("package Tool 1.1.0 removed"), "{log}");
    for old in &tasks[..2] {
        let text = n1.task_log(old);
        assert!(
            text.contains("removed by retention") && !text.contains("built"),
            "{text}"
        );
        assert_eq!(artifacts(old), 0);
    }
    assert!(n1.task_log(&tasks[2]).contains("=== step 1: Build"));
    assert_eq!(artifacts(&tasks[2]), 1);
    let (_, left) = n1.get("/api/spaces/Spaces-1/packages?package_id=Tool");
    let versions: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.3.0", "1.2.0", "1.0.0"]);
    let files = std::fs::read_dir(cluster.shared_dir().join("Packages/Spaces-1/Tool"))
        .unwrap()
        .count();
    assert_eq!(files, 3, "the removed version's file went with it");
    let (_, events) = n1.get("/api/events?limit=200");
    assert!(events["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "package.delete"
            && e["actor"].as_str().unwrap().starts_with("Retention (")));

    // Idempotent: nothing more to remove.
    let (_, again) = run_task(&n1, "Retention", json!({"package_versions_to_keep": 2}));
    assert!(
        again.contains("retention done: 0 release(s), 0 deployment log(s), 0 artifact(s), 0 package version(s) removed"),
        "{again}"
    );
}

/// Inserts an event straight into the database, `days_ago` days back at noon.
fn old_event(cluster: &Cluster, seq: i64, days_ago: i64, action: &str) {
    old_events(cluster, &[(seq, days_ago)], action);
}

/// Inserts the events in one statement: a scheduler's archive sees all of them or none.
fn old_events(cluster: &Cluster, events: &[(i64, i64)], action: &str) {
    let pg = cluster.postgres_server().unwrap();
    let rows: Vec<String> = events
        .iter()
        .map(|(seq, days_ago)| {
            format!(
                "({seq}, ((extract(epoch FROM now())::bigint / 86400 - {days_ago}) * 86400 + 43200) * 1000,
                  'ci (ApiKeys-9)', '{action}', 'Projects-{seq}', '203.0.113.9', '{{\"n\": {seq}}}')"
            )
        })
        .collect();
    pg.psql(&format!(
        "INSERT INTO events (seq, occurred_at_ms, actor, action, target, client_address, details)
         VALUES {}",
        rows.join(", ")
    ))
    .unwrap();
}

fn exported(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut cmd = std::process::Command::new(cli_binary());
    cmd.args(["events", "export"])
        .args(args)
        .env("CUTTLE_SERVER", node.url(""))
        .env("CUTTLE_API_KEY", node.api_key());
    let (st, out, err) = run_to_exit(cmd, MIN).unwrap();
    assert!(st.success(), "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn old_audit_events_are_archived_once_per_period_and_exported_across_both() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let with_maintenance = |name: &str| {
        let mut o = NodeOptions::named(name, 2);
        o.env = vec![
            ("CUTTLE_MAINTENANCE_SECS".into(), "10".into()),
            ("CUTTLE_EVENT_ARCHIVE_AFTER_SECS".into(), "86400".into()),
        ];
        o
    };
    let n1 = cluster.start(with_maintenance("n1"));
    let n2 = cluster.start(with_maintenance("n2"));
    // All four at once: an archive that ran between two of them would split them across
    // periods (and the test would wait for a "4 events" archive that never comes).
    old_events(
        &cluster,
        &[
            (1_000_001, 3),
            (1_000_002, 3),
            (1_000_003, 2),
            (1_000_004, 5),
        ],
        "project.create",
    );
    // Something of today, which stays in the database.
    assert_eq!(
        n1.post(
            "/api/spaces/default/environments",
            &json!({"name": "Today"})
        )
        .0,
        201
    );

    // Both nodes' schedulers race for each period; each period gets one archive and one
    // retention task.
    let archived_them = |t: &Value| {
        t["kind"] == "EventArchive"
            && t["state"] == "Success"
            && n1
                .task_log(t["id"].as_str().unwrap())
                .contains("archive done: 4 event(s) of 3 day(s)")
    };
    let tasks = wait_until("a period's archive to take the old events", MIN, || {
        let (_, list) = n2.get("/api/tasks?limit=100");
        let items = list["items"].as_array().unwrap().clone();
        let settled = items
            .iter()
            .all(|t| !matches!(t["state"].as_str(), Some("Queued" | "Executing")));
        (settled && items.iter().any(archived_them)).then_some(items)
    });
    assert_eq!(tasks.iter().filter(|t| archived_them(t)).count(), 1);
    for kind in ["EventArchive", "Retention"] {
        let periods: Vec<String> = tasks
            .iter()
            .filter(|t| t["kind"] == kind)
            .map(|t| t["description"].as_str().unwrap().to_owned())
            .collect();
        let distinct: BTreeSet<&String> = periods.iter().collect();
        assert!(!periods.is_empty(), "{kind} runs by itself");
        assert_eq!(
            distinct.len(),
            periods.len(),
            "one {kind} per period across both nodes: {periods:?}"
        );
    }
    let exports = cluster.shared_dir().join("EventExports");
    let mut files = Vec::new();
    for y in std::fs::read_dir(&exports).unwrap().flatten() {
        if y.file_name() == "InProgress" {
            continue;
        }
        for m in std::fs::read_dir(y.path()).unwrap().flatten() {
            files.extend(
                std::fs::read_dir(m.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.file_name()),
            );
        }
    }
    assert_eq!(files.len(), 3, "one file per day: {files:?}");
    let pg = cluster.postgres_server().unwrap();
    assert_eq!(
        pg.psql("SELECT count(*) FROM events WHERE seq > 1000000")
            .unwrap()
            .trim(),
        "0"
    );

    // An archive that died between writing its file and deleting its events: the events are
    // still in the database; the next run writes the day again and deletes them, never twice.
    old_event(&cluster, 1_000_003, 2, "project.create");
    run_task(&n2, "EventArchive", json!({"older_than_secs": 86400}));

    // The export reads both: the archive's four, then today's from the database, each once.
    let all = exported(&n1, &[]);
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let archived: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|i| i.starts_with("Events-10000"))
        .collect();
    assert_eq!(
        archived,
        [
            "Events-1000004",
            "Events-1000001",
            "Events-1000002",
            "Events-1000003"
        ],
        "{ids:?}"
    );
    assert!(
        all.iter().any(|e| e["action"] == "environment.create"),
        "{ids:?}"
    );
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    assert_eq!(all[0]["actor"], "ci (ApiKeys-9)");
    assert_eq!(all[0]["details"], json!({"n": 1_000_004}));
    // A range: only the day two days ago.
    let day = |back: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let d = (now / 86_400 - back) * 86_400_000;
        cuttle_core::format_rfc3339_ms(d)
    };
    let some = exported(&n1, &["--from", &day(2), "--to", &day(1)]);
    let some_ids: Vec<&str> = some.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(some_ids, ["Events-1000003"]);
    let (status, err) = n1.get("/api/events/export?from=yesterday");
    assert_eq!(status, 400, "{err}");
}

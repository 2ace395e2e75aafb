//! What operations sees (docs/operations.md, "Metrics" and "Logs"): `/metrics` tells the queue,
//! every node, the gateways' sessions, requests by route, task and deployment outcomes, package
//! bytes and database trouble, in a text `promtool check metrics` accepts; JSON log lines carry
//! the task they are about.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use cuttle_e2e::{
    deploy_dir, download, wait_until, Cluster, Database, Generated, Node, NodeOptions, Tentacle,
};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);

cuttle_e2e::on_every_database!(metrics_tell_the_cluster_and_what_this_node_did,);

/// `/metrics` as text.
fn scrape(node: &Node) -> String {
    let mut resp = node
        .http()
        .get(&node.url("/metrics"))
        .header("X-Api-Key", &node.api_key())
        .call()
        .expect("scrape /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    resp.body_mut().read_to_string().unwrap()
}

/// The value of one series (`name{labels in name order}`), if the text has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().expect("a number"))
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

/// `promtool check metrics` (Prometheus' own linter) accepts the text, with nothing to say.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

fn metrics_tell_the_cluster_and_what_this_node_did(db: Database) {
    let pooled = !matches!(db, Database::Sqlite);
    // Each PostgreSQL test has a server of its own to stop; the SQL Server tests share one.
    let own_server = matches!(db, Database::Postgres);
    let cluster = Cluster::new(db).unwrap();
    // n1 claims nothing yet: what is enqueued waits in the queue.
    let mut opts = NodeOptions::named("n1", 0);
    opts.expected_errors
        .push("the cluster's state could not be read".into());
    opts.expected_errors.push("database".into());
    let n1 = cluster.start(opts);

    // The queue by state and kind, and how long its oldest task has waited.
    let sleep = json!({"kind": "Sleep", "arguments": {"duration_ms": 1}});
    let tasks: Vec<String> = (0..3).map(|_| n1.enqueue(sleep.clone())).collect();
    let text = wait_until("the oldest queued task to have waited", MIN, || {
        let text = scrape(&n1);
        (value(&text, "cuttle_queue_oldest_age_seconds") > 0.0).then_some(text)
    });
    assert_eq!(
        value(&text, "cuttle_queue_tasks{kind=\"Sleep\",state=\"Queued\"}"),
        3.0
    );
    for (series, want) in [
        ("cuttle_node_task_cap{node=\"n1\"}", 0.0),
        ("cuttle_node_online{node=\"n1\"}", 1.0),
        ("cuttle_node_draining{node=\"n1\"}", 0.0),
        ("cuttle_node_storage_ok{node=\"n1\"}", 1.0),
        ("cuttle_node_running_tasks{node=\"n1\"}", 0.0),
        ("cuttle_gateway_tentacle_sessions{node=\"n1\"}", 0.0),
        ("cuttle_cluster_state_up", 1.0),
        (
            "cuttle_node_info{node=\"n1\",roles=\"api,scheduler,worker,gateway\",version=\"0.1.0\"}",
            1.0,
        ),
        ("cuttle_build_info{version=\"0.1.0\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    let age = value(&text, "cuttle_node_heartbeat_age_seconds{node=\"n1\"}");
    assert!((0.0..4.0).contains(&age), "heartbeat age {age}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expires = value(
        &text,
        "cuttle_certificate_expiry_timestamp_seconds{certificate=\"cluster\"}",
    );
    assert!(
        expires > now + 86_400.0,
        "the cluster certificate expires at {expires}"
    );
    assert_eq!(
        sample(&text, "cuttle_db_pool_max_connections"),
        pooled.then_some(16.0),
        "a pool on a database server, none on SQLite"
    );
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    promtool_accepts(&text);

    // A polling tentacle holds a session with the gateway.
    let dir = cuttle_e2e::temp_dir("telemetry");
    let mut web = Tentacle::polling(dir.path(), "web1", &n1, "web", &["Development"]);
    web.start();
    wait_until("the tentacle's session to be counted", MIN, || {
        (sample(
            &scrape(&n1),
            "cuttle_gateway_tentacle_sessions{node=\"n1\"}",
        ) == Some(1.0))
        .then_some(())
    });

    // Once the node claims, the tasks run: how long they waited and ran, by kind and outcome.
    let (status, _) = n1.patch("/api/nodes/n1", &json!({"task_cap": 2}));
    assert_eq!(status, 200);
    for t in &tasks {
        assert_eq!(n1.wait_finished(t, MIN)["state"], "Success");
    }
    let text = scrape(&n1);
    assert_eq!(
        value(&text, "cuttle_queue_tasks{kind=\"Sleep\",state=\"Queued\"}"),
        0.0,
        "nothing is queued any more"
    );
    assert_eq!(value(&text, "cuttle_queue_oldest_age_seconds"), 0.0);
    assert_eq!(
        value(
            &text,
            "cuttle_task_queue_wait_seconds_count{kind=\"Sleep\"}"
        ),
        3.0
    );
    assert!(value(&text, "cuttle_task_queue_wait_seconds_sum{kind=\"Sleep\"}") > 0.0);
    assert_eq!(
        value(
            &text,
            "cuttle_task_run_seconds_count{kind=\"Sleep\",outcome=\"Success\"}"
        ),
        3.0
    );

    // Requests by the route they matched, never by their ids; a path nothing serves is
    // `unmatched`.
    let gets = value(
        &text,
        "cuttle_http_requests_total{method=\"GET\",route=\"/api/tasks/{id}\",status=\"200\"}",
    );
    assert!(gets >= 3.0, "{gets} task reads counted");
    assert!(!text.contains(&tasks[0]), "a task id became a label");
    assert_eq!(n1.get("/api/no/such/thing").0, 404);
    assert_eq!(n1.get("/api/no/such/thing/either").0, 404);
    let text = scrape(&n1);
    assert_eq!(
        value(
            &text,
            "cuttle_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        2.0
    );
    assert!(
        value(
            &text,
            "cuttle_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\"}"
        ) >= 1.0
    );

    // Package bytes in and out.
    let package = Generated::zip(11, 123_457);
    n1.upload_package("Shop", "1.0.0", &package);
    let got = download(
        n1.http(),
        &n1.url("/api/spaces/Spaces-1/packages/Shop/1.0.0/raw"),
        &n1.api_key(),
        &[],
    );
    assert_eq!(got.status, 200);
    let text = scrape(&n1);
    assert_eq!(
        value(&text, "cuttle_package_bytes_total{direction=\"in\"}"),
        package.size as f64
    );
    assert_eq!(
        value(&text, "cuttle_package_bytes_total{direction=\"out\"}"),
        package.size as f64
    );

    // Deployments by outcome.
    let dev = n1.environment("Development");
    let project = n1.script_project("Shop", "Say", &["web"], "echo deployed");
    let task = n1.deploy_release(&project, "1.0.0", &dev);
    let t = n1.wait_finished(&task, MIN);
    assert_eq!(t["state"], "Success", "{t}");
    let text = scrape(&n1);
    assert_eq!(
        value(&text, "cuttle_deployments_total{outcome=\"Success\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "cuttle_task_run_seconds_count{kind=\"Deploy\",outcome=\"Success\"}"
        ),
        1.0
    );
    promtool_accepts(&text);
    if pooled {
        // SQLite has no connection pool to report.
        every_metric_the_alerts_and_dashboard_use_is_served(&text);
    }

    // The database away: the node still answers with what it knows of itself, says it could
    // not read the cluster, and counts the failures.
    if own_server {
        let before = value(&text, "cuttle_db_errors_total{kind=\"unavailable\"}");
        cluster.stop_database().unwrap();
        let text = wait_until("a scrape without the database", MIN, || {
            let text = scrape(&n1);
            (sample(&text, "cuttle_cluster_state_up") == Some(0.0)).then_some(text)
        });
        assert!(value(&text, "cuttle_db_errors_total{kind=\"unavailable\"}") > before);
        assert_eq!(sample(&text, "cuttle_queue_oldest_age_seconds"), None);
        assert_eq!(
            value(&text, "cuttle_deployments_total{outcome=\"Success\"}"),
            1.0,
            "what the node counted survives"
        );
        promtool_accepts(&text);
        cluster.start_database().unwrap();
        wait_until("the database back", MIN, || {
            (sample(&scrape(&n1), "cuttle_cluster_state_up") == Some(1.0)).then_some(())
        });
    }
    web.stop();
}

/// "`CUTTLE_LOG_FORMAT=json`: one JSON object per line; a task's lines carry its id and its
/// trace id" (with no collector configured).
#[test]
fn json_log_lines_carry_the_task_they_are_about() {
    let cluster = Cluster::sqlite();
    let mut opts = NodeOptions::named("n1", 1);
    opts.env.push(("CUTTLE_LOG_FORMAT".into(), "json".into()));
    opts.env
        .push(("CUTTLE_LOG".into(), "info,cuttle_task_worker=debug".into()));
    let n1 = cluster.start(opts);
    let task = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    assert_eq!(n1.wait_finished(&task, MIN)["state"], "Success");
    let lines = wait_until("the task's claim in the log", MIN, || {
        let text = n1.stderr_text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "task claimed")
            .then_some(lines)
    });
    let claimed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "task claimed")
        .unwrap();
    assert_eq!(claimed["span"]["name"], "task", "{claimed}");
    assert_eq!(claimed["span"]["id"], task.as_str(), "{claimed}");
    assert_eq!(claimed["span"]["kind"], "Sleep", "{claimed}");
    let trace = claimed["span"]["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32
            && trace.bytes().all(|b| b.is_ascii_hexdigit())
            && trace != "0".repeat(32),
        "a trace id, collector or not: {claimed}"
    );
    assert!(claimed["timestamp"].is_string() && claimed["level"] == "DEBUG");
}

/// The PromQL expressions of the shipped alert rules and Grafana dashboard.
fn shipped_expressions() -> Vec<String> {
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/cuttle-alerts.yml")).unwrap();
    // `expr: QUERY`, or a folded block (`expr: >-` and the more indented lines after it).
    let mut exprs: Vec<String> = Vec::new();
    let lines: Vec<&str> = rules.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim().strip_prefix("expr: ") else {
            continue;
        };
        if value != ">-" && value != ">" {
            exprs.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let folded: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent && !l.trim().is_empty())
            .map(|l| l.trim())
            .collect();
        exprs.push(folded.join(" "));
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/cuttle-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    exprs
}

/// Metrics only a public gRPC call makes appear; `tests/tests/grpc.rs` checks them.
const SERVED_AFTER_A_GRPC_CALL: [&str; 2] = [
    "cuttle_grpc_requests_total",
    "cuttle_grpc_request_duration_seconds",
];

/// Every `cuttle_` metric the alerts and the dashboard query is one a node serves: a renamed
/// metric cannot leave a panel blank or an alert silent.
fn every_metric_the_alerts_and_dashboard_use_is_served(text: &str) {
    let served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for expr in shipped_expressions() {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("cuttle_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| served.contains(f) || SERVED_AFTER_A_GRPC_CALL.contains(f))
                .unwrap_or(&name);
            assert!(
                served.contains(&family) || SERVED_AFTER_A_GRPC_CALL.contains(&family),
                "{name} (in {expr}) is not served"
            );
        }
    }
}

/// The shipped alert rules are valid, pass their unit tests (`promtool test rules`), and the
/// dashboard's queries are valid PromQL.
#[test]
fn the_shipped_alerts_and_dashboard_pass_promtool() {
    let dir = deploy_dir().join("prometheus");
    for args in [
        ["check", "rules", "cuttle-alerts.yml"],
        ["test", "rules", "cuttle-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool (Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each query as a recording rule: promtool parses it.
    let tmp = cuttle_e2e::temp_dir("dashboard");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in shipped_expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let file = tmp.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the dashboard's queries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

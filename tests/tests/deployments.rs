//! Deployments end to end: a release goes through its lifecycle onto real tentacles (two polling,
//! one listening) across two nodes, its steps run by their conditions with variables, output
//! variables and masked secrets.
//!
//! Past 800 lines for a reason: each test is one documented promise, end to end, with the
//! setup it needs in plain sight; splitting them would scatter the promises of one area.

use std::time::Duration;

use cuttle_e2e::{
    cli_binary, run_to_exit, temp_dir, wait_until, Cluster, Database, Node, NodeOptions, Tentacle,
};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);
const SECRET: &str = "Sup3r-S3cret-Db-Pw";

cuttle_e2e::on_every_database!(a_release_goes_through_its_lifecycle_onto_tentacles,);

/// Registers a tentacle in the three environments, with one role.
fn register(t: &Tentacle, node: &Node, role: &str, comms: &str, extra: &[&str]) {
    let envs = ["Development", "Test", "Production"];
    node.make_environments(&envs);
    t.register(&node.url(""), &node.api_key(), role, comms, &envs, extra);
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

fn deploy(node: &Node, release: &str, env: &str) -> (u16, Value) {
    node.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": release, "environment_id": env}),
    )
}

fn task_log(node: &Node, d: &Value) -> (Value, String) {
    let task = d["task_id"].as_str().unwrap();
    let t = node.wait_finished(task, MIN);
    (t, node.task_log(task))
}

fn a_release_goes_through_its_lifecycle_onto_tentacles(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let n2 = cluster.start(NodeOptions::named("n2", 2));
    let dir = temp_dir("deployments");
    let mut w1 = Tentacle::new(dir.path(), "w1");
    let mut w2 = Tentacle::new(dir.path(), "w2");
    let mut d1 = Tentacle::new(dir.path(), "d1");
    register(&w1, &n1, "web", "polling", &[]);
    register(&w2, &n2, "web", "polling", &[]);
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    register(
        &d1,
        &n1,
        "db",
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    for t in [&mut w1, &mut w2, &mut d1] {
        t.start();
    }
    wait_until("d1 to listen", MIN, || {
        d1.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });
    wait_until("w1 and w2 connected to both gateways", MIN, || {
        let (_, targets) = n1.get("/api/targets");
        let connected = targets["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["connected_nodes"] == json!(["n1", "n2"]))
            .count();
        (connected == 2).then_some(())
    });

    // The model: three environments (the default lifecycle: one phase each, in order).
    let dev = n1.environment("Development");
    let test = n1.environment("Test");
    let prod = n1.environment("Production");
    let (_, shop) = n1.post("/api/spaces/default/projects", &json!({"name": "Shop"}));
    let shop_path = format!("/api/spaces/default/projects/{}", id(&shop));
    let script = |s: &str| json!({"type": "script", "script": s});
    let process = json!({"version": 1, "steps": [
        {"name": "Deploy web", "target_roles": ["web"], "max_parallel_targets": 1, "action": script(
            "echo \"deploying #{Cuttle.Release.Number} to $CUTTLE_VAR_CUTTLE_ENVIRONMENT_NAME on #{Cuttle.Target.Name} password=#{DbPassword}\"\n\
             echo \"##cuttle[setVariable name='Build' value='b-#{Cuttle.Target.Name}']\""
        )},
        {"name": "Migrate", "target_roles": ["db"], "action": script(
            "printf '%s (w1 had %s)\\n' \"migrating after $CUTTLE_VAR_OUTPUT_DEPLOY_WEB_BUILD\" #{Output.Deploy web[w1].Build}\n\
             test \"#{FailHere}\" != yes"
        )},
        {"name": "Notify", "condition": "always", "action": script(
            "echo \"notify #{Cuttle.Project.Name} in #{Cuttle.Environment.Name} from $CUTTLE_NODE_NAME\""
        )},
    ]});
    let (status, saved) = n1.request(
        "PUT",
        &format!("{shop_path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, vars) = n1.request(
        "PUT",
        &format!("{shop_path}/variables"),
        Some(
            &json!({"version": 2, "variables": [
                {"name": "DbPassword", "value": SECRET, "sensitive": true},
                {"name": "FailHere", "value": "no"},
                {"name": "FailHere", "value": "yes", "scope": {"environments": [test]}},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{vars}");
    let (status, release) = n2.post(
        &format!("{shop_path}/releases"),
        &json!({"version": "1.0.0"}),
    );
    assert_eq!(status, 201, "{release}");
    let release = id(&release);

    // Production is not open before Development and Test succeeded.
    let (status, err) = deploy(&n1, &release, &prod);
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"Development\""),
        "{err}"
    );

    // Development: every step runs, on its targets, with its variables.
    let (status, d) = deploy(&n2, &release, &dev);
    assert_eq!(status, 201, "{d}");
    assert!(
        ["Queued", "Executing"].contains(&d["state"].as_str().unwrap()),
        "{d}"
    );
    let (t, log) = task_log(&n1, &d);
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    for want in [
        "=== step 1: Deploy web ===",
        "OUT   [w1] deploying 1.0.0 to Development on w1 password=********",
        "OUT   [w2] deploying 1.0.0 to Development on w2 password=********",
        "running on w1",
        "running on w2",
        "=== step 2: Migrate ===",
        "(w1 had b-w1)",
        "=== step 3: Notify ===",
        "OUT   notify Shop in Development from n",
        "[d1] succeeded in",
    ] {
        assert!(log.contains(want), "missing {want:?} in\n{log}");
    }
    assert!(
        log.contains("migrating after b-w1") || log.contains("migrating after b-w2"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");

    // Test: Migrate fails (FailHere is yes there), Notify runs anyway.
    let (status, d) = deploy(&n1, &release, &test);
    assert_eq!(status, 201, "{d}");
    let (t, log) = task_log(&n2, &d);
    assert_eq!(t["state"], "Failed", "{t}\n{log}");
    assert!(t["error"].as_str().unwrap().contains("Migrate"), "{t}");
    assert!(log.contains("notify Shop in Test"), "{log}");
    assert!(log.contains("d1 exited with code 1"), "{log}");
    // So Production stays closed.
    let (status, err) = deploy(&n1, &release, &prod);
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"Test\""),
        "{err}"
    );

    // Only some targets, and a step skipped, for one deployment.
    let (status, d) = n1.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": release, "environment_id": dev, "skip_steps": ["migrate"], "targets": ["w1"]}),
    );
    assert_eq!(status, 201, "{d}");
    let (t, log) = task_log(&n1, &d);
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(
        log.contains("[w1] deploying") && !log.contains("[w2]"),
        "{log}"
    );
    assert!(
        log.contains("Migrate: skipped (skipped for this deployment)"),
        "{log}"
    );
    for (body, says) in [
        (
            json!({"release_id": release, "environment_id": dev, "skip_steps": ["Nope"]}),
            "skip_steps",
        ),
        (
            json!({"release_id": release, "environment_id": dev, "targets": ["nowhere"]}),
            "targets",
        ),
        (
            json!({"release_id": "Releases-999", "environment_id": dev}),
            "release_id",
        ),
        (
            json!({"release_id": release, "environment_id": "Environments-999"}),
            "environment_id",
        ),
    ] {
        let (status, err) = n1.post("/api/spaces/default/deployments", &body);
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {err}"
        );
    }

    // Two deployments of one project to one environment never overlap.
    let (_, a) = deploy(&n1, &release, &dev);
    let (_, b) = deploy(&n2, &release, &dev);
    let (ta, _) = task_log(&n1, &a);
    let (tb, _) = task_log(&n1, &b);
    assert_eq!(
        (ta["state"].as_str(), tb["state"].as_str()),
        (Some("Success"), Some("Success"))
    );
    assert_eq!(ta["concurrency_tag"], format!("{}/{dev}", id(&shop)));
    assert!(
        tb["started_at"].as_str().unwrap() >= ta["completed_at"].as_str().unwrap(),
        "overlapped: {ta} {tb}"
    );

    // The dashboard: each environment's latest deployment.
    let (_, board) = n2.get("/api/spaces/default/dashboard");
    let cell = |env: &str| {
        board["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["environment_id"] == env)
            .cloned()
    };
    assert_eq!(cell(&dev).unwrap()["state"], "Success", "{board}");
    assert_eq!(cell(&dev).unwrap()["release_version"], "1.0.0");
    assert_eq!(cell(&test).unwrap()["state"], "Failed");
    assert!(cell(&prod).is_none());
    let (_, listed) = n1.get(&format!(
        "/api/spaces/default/deployments?project_id={}",
        id(&shop)
    ));
    assert_eq!(listed["items"].as_array().unwrap().len(), 5);
    // Deployments are made only through their own call.
    let (status, _) = n1.post("/api/tasks", &json!({"kind": "Deploy", "arguments": {"space": "Spaces-1", "release": 1, "environment": prod}}));
    assert_eq!(status, 400);

    // Runbooks: a process of the project for operations, run as published, in any environment.
    let runbooks = "/api/spaces/default/runbooks";
    let (status, rb) = n1.post(
        runbooks,
        &json!({"name": "Restart web", "project_id": id(&shop)}),
    );
    assert_eq!(status, 201, "{rb}");
    let rb_path = format!("{runbooks}/{}", id(&rb));
    let restart = |text: &str, version: u64| {
        json!({"version": version, "steps": [{"name": "Restart", "target_roles": ["web"], "action": script(&format!(
            "echo \"{text} #{{Cuttle.Runbook.Name}} on #{{Cuttle.Target.Name}} with #{{DbPassword}}\""
        ))}]})
    };
    let (status, saved) = n1.request(
        "PUT",
        &format!("{rb_path}/process"),
        Some(&restart("restarting", 1).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let runs = format!("{rb_path}/runs");
    let (status, err) = n1.post(&runs, &json!({"environment_id": prod}));
    assert_eq!(status, 409, "not published yet: {err}");
    let (status, published) = n1.post(&format!("{rb_path}/publish"), &json!({}));
    assert_eq!(status, 200, "{published}");
    assert!(
        published["published"]["published_at"].is_string(),
        "{published}"
    );
    // Edited after publishing: runs still run what was published.
    let (status, _) = n1.request(
        "PUT",
        &format!("{rb_path}/process"),
        Some(&restart("EDITED", 3).to_string()),
    );
    assert_eq!(status, 200);
    let (status, run) = n2.post(&runs, &json!({"environment_id": prod}));
    assert_eq!(status, 201, "{run}");
    let task = run["id"].as_str().unwrap();
    let t = n1.wait_finished(task, MIN);
    let log = n1.task_log(task);
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(
        log.contains("OUT   [w2] restarting Restart web on w2 with ********"),
        "{log}"
    );
    assert!(!log.contains("EDITED") && !log.contains(SECRET), "{log}");
    assert_eq!(n1.post("/api/tasks", &json!({"kind": "RunbookRun", "arguments": {"space": "Spaces-1", "runbook": 1, "environment": prod}})).0, 400);

    // A build pipeline: make a release and deploy it, following the log; the exit code says how
    // it went.
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(cli_binary());
        cmd.args(args)
            .env("CUTTLE_SERVER", n2.url(""))
            .env("CUTTLE_API_KEY", n2.api_key());
        run_to_exit(cmd, MIN).unwrap()
    };
    let (st, out, err) = cli(&[
        "release",
        "create",
        "--project",
        "shop",
        "--version",
        "1.0.1",
    ]);
    assert!(st.success(), "{out}{err}");
    let (st, out, err) = cli(&[
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.0.1",
        "--environment",
        "development",
        "--wait",
    ]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("deploying 1.0.1 to Development on w1") && out.contains("deployed"),
        "{out}"
    );
    let (st, out, err) = cli(&[
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.0.1",
        "--environment",
        "Test",
        "--wait",
    ]);
    assert!(!st.success(), "{out}");
    assert!(
        err.contains("ended Failed") && err.contains("Migrate"),
        "{err}"
    );
    let (st, _, err) = cli(&[
        "deploy",
        "--project",
        "Shop",
        "--release",
        "9.9.9",
        "--environment",
        "Test",
    ]);
    assert!(
        !st.success() && err.contains("no release \"9.9.9\""),
        "{err}"
    );
    let (st, out, err) = cli(&[
        "runbook",
        "run",
        "--runbook",
        "restart web",
        "--environment",
        "Production",
        "--wait",
    ]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("restarting Restart web on w1 with ********"),
        "{out}"
    );
    let (st, out, _) = cli(&["--output", "json", "project", "list"]);
    assert!(st.success() && out.contains("\"Shop\""), "{out}");

    // Fixed in the project, a new release goes all the way: Development, Test, Production.
    let (_, vars) = n1.get(&format!("{shop_path}/variables"));
    let password = vars["variables"][0]["id"].clone();
    let (status, saved) = n1.request(
        "PUT",
        &format!("{shop_path}/variables"),
        Some(
            &json!({"version": vars["version"], "variables": [
                {"id": password, "name": "DbPassword", "sensitive": true},
                {"name": "FailHere", "value": "no"},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let (_, fixed) = n2.post(
        &format!("{shop_path}/releases"),
        &json!({"version": "1.1.0"}),
    );
    for env in [&dev, &test, &prod] {
        let (status, d) = deploy(&n1, &id(&fixed), env);
        assert_eq!(status, 201, "{env}: {d}");
        let (t, log) = task_log(&n2, &d);
        assert_eq!(t["state"], "Success", "{env}: {t}\n{log}");
        assert!(!log.contains(SECRET));
    }
    let (_, board) = n2.get("/api/spaces/default/dashboard");
    let prod_cell = board["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["environment_id"] == prod.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (
            prod_cell["state"].as_str(),
            prod_cell["release_version"].as_str()
        ),
        (Some("Success"), Some("1.1.0"))
    );

    // The secret is nowhere: not in any answer, nor anywhere in the shared store.
    let mut seen = String::new();
    for path in [
        "/api/spaces/default/dashboard",
        "/api/events?limit=200",
        "/api/tasks?limit=100",
    ] {
        seen.push_str(&n1.get(path).1.to_string());
    }
    assert!(!seen.contains(SECRET));
    for entry in walk(&cluster.shared_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "the secret is in {}",
            entry.display()
        );
    }
    for n in [&n1, &n2] {
        assert!(
            n.unexpected_errors().is_empty(),
            "{}: {:?}",
            n.name,
            n.unexpected_errors()
        );
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn cancelling_a_deployment_stops_its_scripts_on_every_target_and_skips_the_rest() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = temp_dir("deploy-cancel");
    let mut w1 = Tentacle::new(dir.path(), "w1");
    let mut d1 = Tentacle::new(dir.path(), "d1");
    register(&w1, &n1, "web", "polling", &[]);
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    register(
        &d1,
        &n1,
        "web",
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    w1.start();
    d1.start();
    wait_until("d1 to listen", MIN, || {
        d1.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });
    wait_until("w1 connected", MIN, || {
        let (_, targets) = n1.get("/api/targets");
        targets["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "w1" && t["connected_nodes"] == json!(["n1"]))
            .then_some(())
    });
    let dev = n1.environment("Development");
    let (_, p) = n1.post("/api/spaces/default/projects", &json!({"name": "Slow"}));
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    let pids = dir.path().to_owned();
    let long = format!(
        "echo $$ > {}/#{{Cuttle.Target.Name}}.pid; sleep 300",
        pids.display()
    );
    let process = json!({"version": 1, "steps": [
        {"name": "Long", "target_roles": ["web"], "action": {"type": "script", "script": long}},
        {"name": "After", "condition": "always", "action": {"type": "script", "script": "echo after-ran"}},
    ]});
    assert_eq!(
        n1.request(
            "PUT",
            &format!("{path}/deploymentprocess"),
            Some(&process.to_string())
        )
        .0,
        200
    );
    let (_, r) = n1.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    let (status, d) = deploy(&n1, &id(&r), &dev);
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap().to_owned();
    // Cancel once both scripts provably run (each wrote its pid).
    let pid_of = |name: &str| -> Option<i32> {
        std::fs::read_to_string(pids.join(format!("{name}.pid")))
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse().ok())
    };
    let running: Vec<i32> = wait_until("both scripts to run", MIN, || {
        Some(vec![pid_of("w1")?, pid_of("d1")?])
    });
    let (status, _) = n1.post(&format!("/api/tasks/{task}/cancel"), &json!({}));
    assert_eq!(status, 202);
    let t = n1.wait_finished(&task, MIN);
    assert_eq!(t["state"], "Canceled", "{t}");
    for pid in running {
        wait_until(&format!("script {pid} to be killed"), MIN, || {
            // SAFETY: signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true);
            (!alive || zombie).then_some(())
        });
    }
    let log = n1.task_log(&task);
    assert!(
        !log.contains("after-ran"),
        "the rest is skipped after a cancel:\n{log}"
    );
    let (_, deployment) = n1.get(&format!("/api/spaces/default/deployments/{}", id(&d)));
    assert_eq!(deployment["state"], "Canceled");
}

#[test]
fn a_node_lost_mid_deployment_fails_it_naming_the_node_and_never_runs_it_again() {
    let cluster = Cluster::sqlite();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let dev = n2.environment("Development");
    let (_, p) = n2.post("/api/spaces/default/projects", &json!({"name": "Long"}));
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    let process = json!({"version": 1, "steps": [
        {"name": "Wait", "action": {"type": "script", "script": "echo started; sleep 300"}},
    ]});
    assert_eq!(
        n2.request(
            "PUT",
            &format!("{path}/deploymentprocess"),
            Some(&process.to_string())
        )
        .0,
        200
    );
    let (_, r) = n2.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    let (status, d) = deploy(&n2, &id(&r), &dev);
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap().to_owned();
    wait_until("the step to start on n1", MIN, || {
        let t = n2.task(&task);
        (t["state"] == "Executing" && n2.task_log(&task).contains("OUT   started")).then_some(t)
    });
    n1.kill9();
    // Now n2 may run tasks: it must not run this one again.
    assert_eq!(n2.patch("/api/nodes/n2", &json!({"task_cap": 2})).0, 200);
    let t = n2.wait_finished(&task, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("node n1 was lost"),
        "{t}"
    );
    assert_eq!(t["node"], "n1", "never claimed again: {t}");
    let (_, deployment) = n2.get(&format!("/api/spaces/default/deployments/{}", id(&d)));
    assert_eq!(deployment["state"], "Failed");
}

/// A client of the cluster through haproxy's HTTPS port (what operators and pipelines use).
struct Balanced<'a> {
    lb: &'a cuttle_e2e::Haproxy,
    agent: ureq::Agent,
    key: String,
}

impl Balanced<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = self.lb.url(path);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("X-Api-Key", &self.key).call(),
            (_, b) => {
                let req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req.header("X-Api-Key", &self.key)
                    .header("Content-Type", "application/json")
                    .send(b.map(Value::to_string).unwrap_or_default())
            }
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path} through haproxy: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[test]
fn a_deployment_through_the_load_balancer_reaches_four_tentacles_on_any_node() {
    let cluster = Cluster::sqlite();
    let nodes: Vec<Node> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 2)))
        .collect();
    let lb = cuttle_e2e::Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let api = Balanced {
        lb: &lb,
        agent: lb.agent(),
        key: nodes[0].api_key(),
    };
    let dir = temp_dir("deploy-lb");
    let mut tentacles = Vec::new();
    for (name, role) in [
        ("web-1", "web"),
        ("web-2", "web"),
        ("db-1", "db"),
        ("db-2", "db"),
    ] {
        let t = Tentacle::new(dir.path(), name);
        nodes[0].make_environments(&["Production"]);
        let (server, key) = (nodes[0].url(""), nodes[0].api_key());
        t.register(&server, &key, role, "polling", &["Production"], &[]);
        // Only the balancer's address: each tentacle holds one session, with whichever node.
        let config = std::fs::read_to_string(t.config_path()).unwrap();
        let gateways = config.lines().find(|l| l.starts_with("gateways")).unwrap();
        let balanced = format!("gateways = [\"127.0.0.1:{}\"]", lb.tentacle_port);
        std::fs::write(t.config_path(), config.replace(gateways, &balanced)).unwrap();
        tentacles.push(t);
    }
    for t in &mut tentacles {
        t.start();
    }
    wait_until("four sessions through the balancer", MIN, || {
        let (_, targets) = api.call("GET", "/api/targets", None);
        let connected = targets["items"]
            .as_array()?
            .iter()
            .filter(|t| {
                t["connected_nodes"]
                    .as_array()
                    .is_some_and(|c| c.len() == 1)
            })
            .count();
        (connected == 4).then_some(())
    });
    let env = nodes[0].environment("Production");
    let (_, p) = api.call(
        "POST",
        "/api/spaces/default/projects",
        Some(&json!({"name": "Balanced"})),
    );
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    let step = |name: &str, role: &str| {
        json!({"name": name, "target_roles": [role], "action": {"type": "script",
               "script": "echo \"#{Cuttle.Step.Name} on #{Cuttle.Target.Name}\""}})
    };
    let process = json!({"version": 1, "steps": [step("Web", "web"), step("Db", "db")]});
    let (status, saved) = api.call("PUT", &format!("{path}/deploymentprocess"), Some(&process));
    assert_eq!(status, 200, "{saved}");
    let (_, r) = api.call(
        "POST",
        &format!("{path}/releases"),
        Some(&json!({"version": "2.0.0"})),
    );
    // Several deployments, each made and followed through the balancer (any node may answer,
    // any node may run it, any gateway may hold a target's session).
    for _ in 0..3 {
        let (status, d) = api.call(
            "POST",
            "/api/spaces/default/deployments",
            Some(&json!({"release_id": id(&r), "environment_id": env})),
        );
        assert_eq!(status, 201, "{d}");
        let task = d["task_id"].as_str().unwrap().to_owned();
        let t = wait_until("the deployment to end", MIN, || {
            let (_, t) = api.call("GET", &format!("/api/tasks/{task}"), None);
            matches!(
                t["state"].as_str(),
                Some("Success" | "Failed" | "Canceled" | "TimedOut")
            )
            .then_some(t)
        });
        let (_, log) = api.call("GET", &format!("/api/tasks/{task}/log"), None);
        let log = log.as_str().unwrap_or_default().to_owned();
        assert_eq!(t["state"], "Success", "{t}\n{log}");
        for line in ["Web on web-1", "Web on web-2", "Db on db-1", "Db on db-2"] {
            assert!(log.contains(line), "missing {line:?}:\n{log}");
        }
    }
}

#[test]
fn different_projects_deploy_in_parallel_while_one_project_and_environment_never_overlaps() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 4));
    let env = n1.environment("Development");
    let release_of = |name: &str| {
        let (_, p) = n1.post("/api/spaces/default/projects", &json!({"name": name}));
        let path = format!("/api/spaces/default/projects/{}", id(&p));
        let process = json!({"version": 1, "steps": [
            {"name": "Work", "action": {"type": "script", "script": "sleep 1"}},
        ]});
        assert_eq!(
            n1.request(
                "PUT",
                &format!("{path}/deploymentprocess"),
                Some(&process.to_string())
            )
            .0,
            200
        );
        id(&n1
            .post(&format!("{path}/releases"), &json!({"version": "1.0.0"}))
            .1)
    };
    let (a, b) = (release_of("Alpha"), release_of("Beta"));
    let queue = |release: &str| {
        let (status, d) = deploy(&n1, release, &env);
        assert_eq!(status, 201, "{d}");
        d
    };
    let (a1, b1, a2) = (queue(&a), queue(&b), queue(&a));
    let done = |d: &Value| n1.wait_finished(d["task_id"].as_str().unwrap(), MIN);
    let (ta1, tb1, ta2) = (done(&a1), done(&b1), done(&a2));
    for t in [&ta1, &tb1, &ta2] {
        assert_eq!(t["state"], "Success", "{t}");
    }
    let at = |t: &Value, f: &str| t[f].as_str().unwrap().to_owned();
    // Alpha and Beta ran at the same time; Alpha's second waited for its first.
    assert!(
        at(&tb1, "started_at") < at(&ta1, "completed_at"),
        "{ta1} {tb1}"
    );
    assert!(
        at(&ta2, "started_at") >= at(&ta1, "completed_at"),
        "{ta1} {ta2}"
    );
}

/// "A target that fails fails the step, and the batches after it are not started": rolling one
/// target at a time, the first fails and the second never runs.
#[test]
fn a_failed_target_stops_the_rolling_batches_after_it() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = temp_dir("deploy-rolling");
    let mut tentacles: Vec<Tentacle> = ["w1", "w2"]
        .iter()
        .map(|name| Tentacle::new(dir.path(), name))
        .collect();
    for t in &mut tentacles {
        register(t, &n1, "web", "polling", &[]);
        t.start();
    }
    wait_until("w1 and w2 connected", MIN, || {
        let (_, targets) = n1.get("/api/targets");
        let connected = targets["items"]
            .as_array()?
            .iter()
            .filter(|t| t["connected_nodes"] == json!(["n1"]))
            .count();
        (connected == 2).then_some(())
    });
    let dev = n1.environment("Development");
    let (_, p) = n1.post("/api/spaces/default/projects", &json!({"name": "Rolling"}));
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    // Targets go in name order: w1 first, alone.
    let script = "echo \"on #{Cuttle.Target.Name}\"; test \"#{Cuttle.Target.Name}\" != w1";
    let process = json!({"version": 1, "steps": [
        {"name": "Roll", "target_roles": ["web"], "max_parallel_targets": 1,
         "action": {"type": "script", "script": script}},
    ]});
    let (status, body) = n1.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    assert_eq!(status, 200, "{body}");
    let (_, r) = n1.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    let (status, d) = deploy(&n1, &id(&r), &dev);
    assert_eq!(status, 201, "{d}");
    let (t, log) = task_log(&n1, &d);
    assert_eq!(t["state"], "Failed", "{t}\n{log}");
    assert!(log.contains("OUT   [w1] on w1"), "{log}");
    assert!(!log.contains("[w2]"), "the next batch was started: {log}");
}

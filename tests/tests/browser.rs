//! The web UI in a real browser: Debian's headless Chromium over WebDriver, against three nodes
//! on PostgreSQL behind the shipped haproxy configuration (HTTPS), with a polling tentacle.
//! Everything is done from the pages as a person would: sign in, run the cluster from
//! Configuration → Nodes, watch a task's log arrive live on a page another node serves, make and
//! deploy a release (the lifecycle's refusal shown as a message), watch the dashboard change by
//! itself. Screenshots go to `target/ui-screenshots/`. A second test reads the pages with
//! JavaScript off.

use std::path::PathBuf;
use std::time::Duration;

use cuttle_e2e::{wait_until, Browser, Cluster, Haproxy, Node, NodeOptions, Tentacle};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn shot(b: &Browser, name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ui-screenshots")
        .join(format!("{name}.png"));
    b.screenshot(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 10_000, "{} is only {size} bytes", path.display());
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// Loads `path` through the balancer until a node other than `not` serves it. A page load is
/// several requests (page, stylesheet, script…); an extra one after each miss moves haproxy's
/// round robin along, so the page does not keep landing on the same node.
fn served_by_other(b: &Browser, lb: &Haproxy, path: &str, not: &str) -> String {
    wait_until(
        &format!("{path} served by a node other than {not}"),
        WAIT,
        || {
            b.goto(&lb.url(path)).ok()?;
            let by = b.text_of("#served-by").ok()?;
            if by == not {
                let step =
                    "const x = new XMLHttpRequest(); x.open('GET', '/api/nodes/ping', false);
                        x.send(); return x.status;";
                let _ = b.run(step, json!([]));
            }
            (by != not).then_some(by)
        },
    )
}

/// On a phone's width the page folds instead of scrolling sideways (screenshot `{name}-phone`).
fn fits_a_phone(b: &Browser, name: &str) {
    b.resize(390, 844).unwrap();
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth;";
    wait_until(&format!("the {name} page to fit a phone"), WAIT, || {
        (b.run(fits, json!([])).ok()? == json!(true)).then_some(())
    });
    shot(b, &format!("{name}-phone"));
    b.resize(1280, 900).unwrap();
}

/// What a keyboard or screen-reader user needs from a page: the skip link comes first, every
/// field has a label, every button a name, and there is one main landmark and one h1.
fn accessible(b: &Browser, name: &str) {
    let problems = b
        .run(
            "const out = [];
             const first = document.querySelector('a[href], button, input, select, textarea');
             if (!first || first.getAttribute('href') !== '#main') out.push('skip link not first');
             document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(f => {
               if (f.labels.length === 0 && !f.getAttribute('aria-label')) out.push('unlabelled ' + (f.id || f.name));
             });
             document.querySelectorAll('button').forEach(x => {
               if (!x.textContent.trim() && !x.getAttribute('aria-label')) out.push('unnamed button');
             });
             if (document.querySelectorAll('main').length !== 1) out.push('main landmarks');
             if (document.querySelectorAll('h1').length !== 1) out.push('h1 count');
             return out;",
            json!([]),
        )
        .unwrap();
    assert_eq!(problems, json!([]), "the {name} page");
}

/// A node's row on the nodes page: (task cap, state) as shown.
fn node_row(b: &Browser, name: &str) -> (String, String) {
    let cap = b
        .text_of(&format!("tr[data-node='{name}'] .node-cap"))
        .unwrap();
    let state = b
        .text_of(&format!("tr[data-node='{name}'] .node-state"))
        .unwrap();
    (cap, state)
}

/// The model the deployment part uses: Test then Production in a lifecycle, a project with a
/// step on the node and one on the tentacle (which waits for `gate`, then for `gate.2`), a plain
/// and a sensitive variable.
fn model(n: &Node, gate: &std::path::Path) -> (String, String) {
    let envs = "/api/spaces/default/environments";
    let test = id(&n.post(envs, &json!({"name": "Test"})).1);
    let prod = id(&n.post(envs, &json!({"name": "Production"})).1);
    let (status, lc) = n.post(
        "/api/spaces/default/lifecycles",
        &json!({"name": "Test first", "phases": [
            {"name": "Testing", "environments": [test]},
            {"name": "Live", "environments": [prod]},
        ]}),
    );
    assert_eq!(status, 201, "{lc}");
    let (status, p) = n.post(
        "/api/spaces/default/projects",
        &json!({"name": "Shop <b>web</b>", "lifecycle_id": id(&lc)}),
    );
    assert_eq!(status, 201, "{p}");
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    let script = |s: &str| json!({"type": "script", "script": s});
    let (status, saved) = n.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(
            &json!({"version": 1, "steps": [
                {"name": "Prepare", "action": script("echo preparing #{Cuttle.Release.Number}")},
                {"name": "Web", "target_roles": ["web"], "action": script(&format!(
                    "echo \"on #{{Cuttle.Target.Name}} in #{{Cuttle.Environment.Name}} greeting=#{{Greeting}}\"\n\
                     while [ ! -e {g} ]; do sleep 0.1; done\necho 'web <i>done</i>'\n\
                     while [ ! -e {g}.2 ]; do sleep 0.1; done",
                    g = gate.display()
                ))},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, vars) = n.request(
        "PUT",
        &format!("{path}/variables"),
        Some(
            &json!({"version": 2, "variables": [
                {"name": "Greeting", "value": "hello"},
                {"name": "ApiToken", "value": "s3cr3t-t0ken", "sensitive": true},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{vars}");
    (id(&p), prod)
}

#[test]
fn the_web_ui_runs_the_cluster_and_a_deployment_in_a_real_browser() {
    let cluster = Cluster::postgres();
    let n1 = cluster.start(NodeOptions::named("node-1", 2));
    let n2 = cluster.start(NodeOptions::named("node-2", 2));
    let n3 = cluster.start(NodeOptions::named("node-3", 2));
    let lb = Haproxy::start([&n1, &n2, &n3]).unwrap();
    let key = n1.api_key();
    let b = Browser::start(1280, 900).unwrap();

    // An admin made with `cuttle-server admin create` signs in through the balancer: the
    // nodes page shows three live nodes.
    let (ok, out) = cluster.run_server(
        &[
            "admin",
            "create",
            "--username",
            "ops-lead",
            "--password-stdin",
        ],
        "a long admin password\n",
    );
    assert!(ok, "{out}");
    b.goto(&lb.url("/")).unwrap();
    assert!(b.current_url().unwrap().ends_with("/ui/sign-in"));
    b.fill(&b.find("#username").unwrap(), "ops-lead").unwrap();
    b.fill(&b.find("#password").unwrap(), "a long admin password")
        .unwrap();
    b.click(&b.find("#sign-in-user").unwrap()).unwrap();
    b.wait_text("h1", "Configuration → Nodes", WAIT);
    assert!(b
        .text_of("header")
        .unwrap()
        .contains("Signed in as ops-lead (admin)"));
    for n in ["node-1", "node-2", "node-3"] {
        let (cap, state) = node_row(&b, n);
        assert_eq!((cap.as_str(), state.as_str()), ("2", "online"), "{n}");
    }
    assert_eq!(
        b.find_all("tbody tr[data-node]").unwrap().len(),
        3,
        "three nodes listed"
    );
    // The session cookie cannot be read by a script (HttpOnly).
    let cookies = b.run("return document.cookie;", json!([])).unwrap();
    assert!(!cookies.to_string().contains("cuttle_session"), "{cookies}");
    // "Last seen" is kept up to date by the page itself.
    b.wait_text("tr[data-node='node-1'] time", "s ago", WAIT);

    // node-3 becomes a UI-only node (cap 0) and node-2 drains, from the page.
    b.fill(&b.find("#cap-node-3").unwrap(), "0").unwrap();
    b.click(&b.find("#set-cap-node-3").unwrap()).unwrap();
    b.wait_text("#message", "node-3 now runs at most 0 task(s)", WAIT);
    b.click(&b.find("#drain-node-2").unwrap()).unwrap();
    b.wait_text("#message", "node-2 is draining", WAIT);
    let (_, state) = node_row(&b, "node-2");
    assert!(state.contains("draining"), "{state}");
    let (status, nodes) = n1.get("/api/nodes");
    assert_eq!(status, 200);
    let node = |name: &str| {
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("node-3")["task_cap"], 0, "{nodes}");
    assert_eq!(node("node-2")["draining"], true, "{nodes}");
    let rows = cluster
        .postgres_server()
        .unwrap()
        .psql("SELECT name, task_cap, draining FROM nodes ORDER BY name")
        .unwrap();
    assert!(
        rows.contains("node-2|2|t") && rows.contains("node-3|0|f"),
        "{rows}"
    );
    assert_eq!(n2.ping(), 418, "a draining node's ping says so");
    assert_eq!(n3.ping(), 200);
    wait_until("haproxy to leave node-2 out", WAIT, || {
        (0..6)
            .all(|_| {
                let r = lb.agent().get(&lb.url("/api/nodes/ping")).call().unwrap();
                r.headers()["x-cuttle-node"] != "node-2"
            })
            .then_some(())
    });
    shot(&b, "nodes");
    fits_a_phone(&b, "nodes");
    accessible(&b, "nodes");
    // From the keyboard: the first Tab shows the skip link, Enter goes to the content. (A
    // page just loaded may not have the keyboard yet: its first Tab then goes nowhere, so the
    // page is loaded again until it does.)
    wait_until(
        "the first Tab to show the skip link with an outline",
        WAIT,
        || {
            b.goto(&lb.url("/ui/nodes")).unwrap();
            b.press("\u{E004}").unwrap();
            let focused = b
                .run(
                    "const e = document.activeElement; const r = e.getBoundingClientRect();
                     return [e.className, r.left >= 0 && r.top >= 0,
                             getComputedStyle(e).outlineStyle];",
                    json!([]),
                )
                .unwrap();
            (focused == json!(["skip", true, "solid"])).then_some(())
        },
    );
    b.press("\u{E007}").unwrap();
    assert!(b.current_url().unwrap().ends_with("#main"));

    // A task (only node-1 may run one now) whose log arrives in a page node-3 serves.
    let gate = cluster.scripts_dir().join("gate");
    let task = n1.enqueue(json!({
        "kind": "AdHocScript",
        "description": "<script>window.pwned = 1</script> nightly check",
        "arguments": {"script": format!(
            "echo first-line; while [ ! -e {g} ]; do sleep 0.1; done; echo 'second-line <b>bold</b>'; \
             while [ ! -e {g}.2 ]; do sleep 0.1; done",
            g = gate.display()
        )},
    }));
    wait_until("the script to start", WAIT, || {
        let log = n1.task_log(&task);
        assert!(
            !n1.task(&task)["state"].as_str().unwrap().contains("Failed"),
            "{log}"
        );
        log.contains("first-line").then_some(())
    });
    let by = served_by_other(&b, &lb, &format!("/ui/tasks/{task}"), "node-1");
    assert_eq!(by, "node-3", "node-2 drains: the balancer leaves it out");
    assert_eq!(b.text_of("#task-node").unwrap(), "node-1");
    assert_eq!(
        b.text_of("#task-description").unwrap(),
        "<script>window.pwned = 1</script> nightly check"
    );
    assert_eq!(
        b.run("return window.pwned === undefined;", json!([]))
            .unwrap(),
        json!(true)
    );
    b.wait_text("#log", "first-line", WAIT);
    b.run("window.samePage = true;", json!([])).unwrap();
    std::fs::write(&gate, "").unwrap();
    let log = b.wait_text("#log", "second-line", WAIT);
    assert!(
        log.contains("<b>bold</b>"),
        "the log line shown as text: {log}"
    );
    assert_eq!(
        b.run("return window.samePage === true;", json!([]))
            .unwrap(),
        json!(true),
        "the line arrived without a reload"
    );
    // At the end the page shows how the task ended.
    std::fs::write(gate.with_extension("2"), "").unwrap();
    b.wait_text("#task-state", "Success", WAIT);
    shot(&b, "task");

    // A polling tentacle for the deployment's target step.
    let web_gate = cluster.dir().join("web-gate");
    let (project, prod) = model(&n1, &web_gate);
    let home = cluster.dir().join("tentacles");
    std::fs::create_dir_all(&home).unwrap();
    let mut web = Tentacle::new(&home, "web-1");
    web.register(
        &n1.url(""),
        &key,
        "web",
        "polling",
        &["Test", "Production"],
        &[],
    );
    web.start();
    wait_until("web-1 connected to every node", WAIT, || {
        let (_, t) = n1.get("/api/targets");
        (t["items"][0]["connected_nodes"].as_array()?.len() == 3).then_some(())
    });
    b.goto(&lb.url("/ui/targets")).unwrap();
    let row = b.wait_text("tbody tr", "web-1", WAIT);
    assert!(
        row.contains("node-1, node-2, node-3") && row.contains("polling"),
        "{row}"
    );

    // The project page: masked sensitive value, a release made from the page.
    b.goto(&lb.url(&format!("/ui/projects/{project}"))).unwrap();
    b.wait_text("h1", "Shop <b>web</b>", WAIT);
    let vars = b.text_of("table[aria-labelledby='variables-h']").unwrap();
    assert!(
        vars.contains("hello") && vars.contains("(sensitive)"),
        "{vars}"
    );
    let source = b
        .run("return document.documentElement.outerHTML;", json!([]))
        .unwrap();
    assert!(!source.to_string().contains("s3cr3t-t0ken"));
    assert_eq!(
        b.run(
            "return document.getElementById('version').value;",
            json!([])
        )
        .unwrap(),
        json!("1.0.0")
    );
    b.fill(&b.find("#notes").unwrap(), "first from the browser")
        .unwrap();
    b.click(&b.find("#create-release").unwrap()).unwrap();
    b.wait_text("#message", "Release 1.0.0 was made.", WAIT);
    let made = b.text_of("table[aria-labelledby='releases-h']").unwrap();
    assert!(
        made.contains("by ops-lead (Users-"),
        "made under the user's name: {made}"
    );

    // Production first: the lifecycle refuses, and the page says why.
    let pick = |env: &str| {
        let options = b.find_all("select[name=environment_id] option").unwrap();
        let option = options
            .iter()
            .find(|o| b.text(o).unwrap().starts_with(env))
            .unwrap_or_else(|| panic!("no option {env}"));
        b.click(option).unwrap();
        b.click(&b.find("form.deploy button").unwrap()).unwrap();
    };
    let option_texts = b.text_of("select[name=environment_id]").unwrap();
    assert!(
        option_texts.contains("Production (not yet:"),
        "the page says Production is not open yet: {option_texts}"
    );
    pick("Production");
    let refused = b.wait_text("#message", "Not deployed", WAIT);
    assert!(
        refused.contains("cannot go to \"Production\" yet") && refused.contains("Testing"),
        "{refused}"
    );
    assert!(b.current_url().unwrap().contains("/ui/projects/"));
    shot(&b, "project");
    fits_a_phone(&b, "project");
    accessible(&b, "project");

    // Test: the browser follows the deployment; lines arriving live go to their step's and
    // target's sections.
    pick("Test");
    b.wait_text("h1", "Deploy", WAIT);
    let live = b.wait_text(
        "details.section[data-step='2'] details.target[data-target='web-1']",
        "greeting=hello",
        WAIT,
    );
    assert!(live.contains("in Test"), "{live}");
    assert!(b.text_of("#task-state").unwrap().contains("Executing"));
    b.run("window.samePage = true;", json!([])).unwrap();
    std::fs::write(&web_gate, "").unwrap();
    b.wait_text(
        "details.section[data-step='2'] details.target[data-target='web-1']",
        "web <i>done</i>",
        WAIT,
    );
    assert_eq!(
        b.run("return window.samePage === true;", json!([]))
            .unwrap(),
        json!(true),
        "the line arrived without a reload"
    );
    std::fs::write(web_gate.with_extension("2"), "").unwrap();
    b.wait_text("#task-state", "Success", Duration::from_secs(60));
    let after = b.wait_text("details.section", "After the steps", WAIT);
    assert!(after.contains("Success"), "{after}");
    let web_section = b.wait_text("details.section", "Step 2: Web", WAIT);
    assert!(web_section.contains("succeeded"), "{web_section}");
    // A succeeded step is folded; opening it shows its target's own section.
    b.click(&b.find("details.section[data-step='2'] > summary").unwrap())
        .unwrap();
    let target = b.wait_text(
        "details.section[data-step='2'] details.target",
        "greeting=hello",
        WAIT,
    );
    assert!(
        target.contains("web-1") && target.contains("in Test"),
        "{target}"
    );
    shot(&b, "deployment");
    accessible(&b, "deployment");

    // Back on the project page, Production is open now and offered first.
    b.goto(&lb.url(&format!("/ui/projects/{project}"))).unwrap();
    let offered = b
        .run(
            "return document.querySelector('select[name=environment_id]').selectedOptions[0].textContent;",
            json!([]),
        )
        .unwrap();
    assert_eq!(offered, json!("Production"));

    // The dashboard, left open, changes in place when Production gets the release.
    b.goto(&lb.url("/ui/dashboard")).unwrap();
    let grid = b.wait_text("#dashboard", "1.0.0", WAIT);
    assert!(grid.contains("Shop <b>web</b>"), "{grid}");
    assert_eq!(grid.matches("1.0.0").count(), 1, "{grid}");
    b.run("window.samePage = true;", json!([])).unwrap();
    let (_, releases) = n2.get(&format!("/api/spaces/default/projects/{project}/releases"));
    let (status, d) = n2.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": id(&releases["items"][0]), "environment_id": prod}),
    );
    assert_eq!(status, 201, "{d}");
    wait_until(
        "the dashboard to show 1.0.0 in Production",
        Duration::from_secs(60),
        || {
            let grid = b.text_of("#dashboard").ok()?;
            (grid.matches("1.0.0").count() == 2 && grid.matches("Success").count() == 2)
                .then_some(())
        },
    );
    assert_eq!(
        b.run("return window.samePage === true;", json!([]))
            .unwrap(),
        json!(true),
        "the cells changed without a reload"
    );
    shot(&b, "dashboard");
    accessible(&b, "dashboard");
    // Library → Packages lists what the repository holds.
    let pkg = cluster.dir().join("web.tar.gz");
    let made = std::process::Command::new("tar")
        .args([
            "czf",
            pkg.to_str().unwrap(),
            "-C",
            cluster.scripts_dir().to_str().unwrap(),
            "gate",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&pkg).unwrap();
    let (status, uploaded) = cuttle_e2e::upload(
        n1.http(),
        &n1.url("/api/spaces/default/packages/raw?package_id=Shop.Web&version=1.2.3&format=tar.gz"),
        &key,
        "application/octet-stream",
        &bytes[..],
        bytes.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{uploaded}");
    b.goto(&lb.url("/ui/packages")).unwrap();
    let row = b.wait_text("tbody tr", "Shop.Web", WAIT);
    assert!(row.contains("1.2.3") && row.contains("tar.gz"), "{row}");
    // Each environment lists the targets in it (targets name their environments).
    b.goto(&lb.url("/ui/environments")).unwrap();
    let row = b.wait_text("tbody tr", "Production", WAIT);
    assert!(row.contains("web-1"), "{row}");
    for page in [
        "/ui/packages",
        "/ui/tasks",
        "/ui/targets",
        "/ui/environments",
        "/ui/lifecycles",
        "/ui/events",
    ] {
        b.goto(&lb.url(page)).unwrap();
        accessible(&b, page);
    }
}

#[test]
fn the_web_ui_reads_with_javascript_off() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions::named("node-1", 1));
    let task = node.enqueue(json!({
        "kind": "AdHocScript",
        "description": "a script <em>to read</em>",
        "arguments": {"script": "echo read-me"},
    }));
    node.wait_finished(&task, WAIT);
    let b = Browser::start_with(1280, 900, false).unwrap();
    // Signing in is a plain form post.
    b.goto(&node.url("/ui/sign-in")).unwrap();
    b.fill(&b.find("#api_key").unwrap(), &node.api_key())
        .unwrap();
    b.click(&b.find("#sign-in-key").unwrap()).unwrap();
    b.wait_text("h1", "Configuration → Nodes", WAIT);
    let row = b.text_of("tr[data-node='node-1']").unwrap();
    assert!(row.contains("online"), "{row}");
    // Times show as written when no script turns them into "… ago" (this proves scripts are
    // off: with them, the page's own script rewrites them at once).
    assert!(
        !row.contains(" ago") && row.contains('T') && row.contains('Z'),
        "{row}"
    );
    b.goto(&node.url(&format!("/ui/tasks/{task}"))).unwrap();
    assert_eq!(
        b.text_of("#task-description").unwrap(),
        "a script <em>to read</em>"
    );
    assert!(b.text_of("#log").unwrap().contains("read-me"));
    b.goto(&node.url("/ui/tasks")).unwrap();
    b.wait_text("tbody", &task, WAIT);
    // The calculator answers a plain GET form.
    b.goto(&node.url("/ui/nodes?projects=50&minutes=30&window=120&nodes=2"))
        .unwrap();
    let calc = b.text_of("section[aria-labelledby='calc-h']").unwrap();
    assert!(calc.contains("50") && calc.contains("per node"), "{calc}");
}

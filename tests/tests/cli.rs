//! The `cuttle` CLI's configuration commands as a person uses them: everything by name, the
//! process edited as YAML in an editor (here a script standing in for one) or from a file and
//! saved at the version read, every listing as a table, JSON or YAML.

use std::process::Command;
use std::time::Duration;

use cuttle_e2e::{cli_binary, run_to_exit, Cluster, Node, NodeOptions};
use serde_json::{json, Value};

struct Cli<'a> {
    cluster: &'a Cluster,
    node: &'a Node,
}

impl Cli<'_> {
    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut cmd = Command::new(cli_binary());
        cmd.args(args)
            .env("CUTTLE_SERVER", self.node.url(""))
            .env("CUTTLE_API_KEY", &self.cluster.api_key)
            .env_remove("EDITOR")
            .env_remove("VISUAL")
            .envs(env.iter().copied());
        let (st, out, err) = run_to_exit(cmd, Duration::from_secs(120)).unwrap();
        (st.success(), out, err)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run_with(args, &[]);
        assert!(ok, "cuttle {args:?}:\n{out}{err}");
        out
    }

    fn refused(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run_with(args, &[]);
        assert!(!ok, "cuttle {args:?} was taken:\n{out}");
        err
    }
}

#[test]
fn the_cli_configures_lifecycles_processes_runbooks_and_targets_by_name() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions::named("n1", 2));
    let cli = Cli {
        cluster: &cluster,
        node: &node,
    };
    for e in ["Development", "Test", "Production"] {
        cli.ok(&["environment", "create", e]);
    }
    let made = cli.ok(&[
        "lifecycle",
        "create",
        "Standard",
        "--phase",
        "Early=Development,Test",
        "--phase",
        "Production",
    ]);
    assert!(made.contains("Early → Production"), "{made}");
    let lifecycles: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "lifecycle", "list"])).unwrap();
    let phases = &lifecycles["items"][0]["phases"];
    assert_eq!(phases[0]["environments"].as_array().unwrap().len(), 2);
    assert_eq!(phases[1]["name"], "Production");
    cli.ok(&[
        "lifecycle",
        "create",
        "Relaxed",
        "--phase",
        "Early=Development,Test;min=1",
        "--phase",
        "Production;optional",
    ]);
    let (_, relaxed) = node.get("/api/spaces/default/lifecycles");
    let relaxed = &relaxed["items"][1]["phases"];
    assert_eq!(
        relaxed[0]["minimum_environments_before_promotion"], 1,
        "{relaxed}"
    );
    assert_eq!(relaxed[1]["optional"], true, "{relaxed}");
    cli.ok(&["lifecycle", "delete", "Relaxed"]);
    let err = cli.refused(&["lifecycle", "create", "Bad", "--phase", "Nowhere"]);
    assert!(err.contains("no environment named \"Nowhere\""), "{err}");
    cli.ok(&["project", "create", "Shop", "--lifecycle", "standard"]);

    // The process from a file, then in an "editor" that changes the step's script.
    let dir = cluster.dir();
    let file = dir.join("process.yaml");
    std::fs::write(
        &file,
        "steps:\n  - name: Greet\n    action:\n      type: script\n      script: |\n        echo 'hello from #{Cuttle.Environment.Name}'\n",
    )
    .unwrap();
    let saved = cli.ok(&[
        "process",
        "edit",
        "--project",
        "Shop",
        "--file",
        path(&file),
    ]);
    assert!(saved.contains("1 step(s), version 2"), "{saved}");
    let shown = cli.ok(&["process", "show", "--project", "shop"]);
    assert!(
        shown.contains("version: 2") && shown.contains("name: Greet"),
        "{shown}"
    );
    let editor = editor_script(dir, "editor.sh", "s/hello from/good day from/");
    let (ok, out, err) = cli.run_with(
        &["process", "edit", "--project", "Shop"],
        &[("EDITOR", path(&editor))],
    );
    assert!(ok && out.contains("version 3"), "{out}{err}");
    let (_, process) = node.get(&format!(
        "/api/spaces/default/projects/{}/deploymentprocess",
        project_id(&node, "Shop")
    ));
    assert!(
        process["steps"][0]["action"]["script"]
            .as_str()
            .unwrap()
            .contains("good day from"),
        "{process}"
    );
    // An editor that leaves the file as it was changes nothing.
    let (ok, out, _) = cli.run_with(
        &["process", "edit", "--project", "Shop"],
        &[("EDITOR", "true")],
    );
    assert!(ok && out.contains("unchanged"), "{out}");
    // A file read at an old version is refused, not saved over the newer one.
    let stale_file = dir.join("stale.yaml");
    let stale_args = [
        "process",
        "edit",
        "--project",
        "Shop",
        "--file",
        path(&stale_file),
    ];
    let stale = cli.refused(&stale_args);
    assert!(stale.contains("read"), "a missing file is named: {stale}");
    std::fs::write(
        dir.join("stale.yaml"),
        format!("version: 2\n{}", std::fs::read_to_string(&file).unwrap()),
    )
    .unwrap();
    let stale = cli.refused(&stale_args);
    assert!(
        stale.contains("409") && stale.contains("hint: someone changed it meanwhile"),
        "{stale}"
    );
    // An edit the server refuses is kept, and the message says how to try again.
    let breaker = editor_script(dir, "breaker.sh", "s/name: Greet/name: \"\"/");
    let (ok, _, err) = cli.run_with(
        &["process", "edit", "--project", "Shop"],
        &[("EDITOR", path(&breaker))],
    );
    assert!(!ok && err.contains("400"), "{err}");
    let kept = err
        .split("your edit is kept in ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("the kept edit is named: {err}"));
    assert!(
        std::fs::read_to_string(kept)
            .unwrap()
            .contains("name: \"\""),
        "{kept} holds the edit"
    );
    std::fs::remove_file(kept).unwrap();

    // A runbook: made, given steps, published, run.
    cli.ok(&["runbook", "create", "Restart", "--project", "Shop"]);
    let runbook_steps = dir.join("runbook.yaml");
    std::fs::write(
        &runbook_steps,
        "- name: Restart\n  action: {type: script, script: echo restarted}\n",
    )
    .unwrap();
    cli.ok(&[
        "process",
        "edit",
        "--runbook",
        "Restart",
        "--file",
        path(&runbook_steps),
    ]);
    assert!(cli
        .ok(&["runbook", "publish", "restart"])
        .contains("published runbook"));
    let ran = cli.ok(&[
        "runbook",
        "run",
        "--runbook",
        "Restart",
        "--environment",
        "Development",
        "--wait",
    ]);
    assert!(
        ran.contains("restarted") && ran.contains("ran runbook"),
        "{ran}"
    );
    let listed = cli.ok(&["-o", "yaml", "runbook", "list"]);
    assert!(
        listed.contains("name: Restart") && listed.contains("published_at:"),
        "{listed}"
    );
    cli.ok(&["runbook", "delete", "Restart"]);

    // A target placed and removed by name.
    let (status, t) = node.post(
        "/api/targets",
        &json!({"name": "web-1", "environments": [], "roles": ["web"], "new_roles": true,
                "comms": "listening", "endpoint": "192.0.2.10:10933",
                "thumbprint": "B".repeat(64)}),
    );
    assert_eq!(status, 201, "{t}");
    let placed = cli.ok(&[
        "target",
        "update",
        "web-1",
        "--environment",
        "Production",
        "--role",
        "web",
    ]);
    assert!(placed.contains("Production"), "{placed}");
    cli.ok(&[
        "target",
        "update",
        "web-1",
        "--rename",
        "web-01",
        "--endpoint",
        "192.0.2.11:10933",
    ]);
    let shown: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "target", "show", "web-01"])).unwrap();
    assert_eq!(shown["endpoint"], "192.0.2.11:10933", "{shown}");
    cli.ok(&["target", "delete", "web-01"]);
    assert!(!cli.ok(&["target", "list"]).contains("web-0"));

    // A key revoked by its name; a lifecycle a project goes through stays.
    let made = cli.ok(&["api-key", "create", "--name", "ci", "--scope", "deployer"]);
    assert!(made.contains("created deployer API key"), "{made}");
    assert!(cli
        .ok(&["api-key", "revoke", "ci"])
        .contains("revoked API key"));
    let err = cli.refused(&["lifecycle", "delete", "Standard"]);
    assert!(err.contains("409") && err.contains("Shop"), "{err}");
    // Spaces, as YAML.
    cli.ok(&["space", "create", "Platform"]);
    let spaces = cli.ok(&["--output", "yaml", "space", "list"]);
    assert!(
        spaces.contains("name: Default") && spaces.contains("name: Platform"),
        "{spaces}"
    );
}

#[test]
fn the_cli_says_what_to_try_when_it_cannot_reach_or_is_refused() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions::named("n1", 0));
    let cli = Cli {
        cluster: &cluster,
        node: &node,
    };
    let (ok, _, err) = cli.run_with(&["node", "list"], &[("CUTTLE_API_KEY", "API-NOTAKEY")]);
    assert!(!ok, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line of error, one of hint: {err}");
    assert!(lines[0].starts_with("cuttle: 401"), "{err}");
    assert!(lines[1].starts_with("hint: set CUTTLE_API_KEY"), "{err}");
    let (ok, _, err) = cli.run_with(
        &["node", "list"],
        &[("CUTTLE_SERVER", "http://127.0.0.1:1")],
    );
    assert!(
        !ok && err.contains("hint: is a node running there?"),
        "{err}"
    );
    // Completion scripts for the three shells.
    for shell in ["bash", "zsh", "fish"] {
        // Read as it is written: a script is larger than a pipe holds.
        let done = Command::new(cli_binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(done.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&done.stdout);
        assert!(
            script.contains("cuttle") && script.contains("lifecycle"),
            "{shell}"
        );
    }
}

#[test]
fn the_cli_changes_and_reorders_what_it_made_and_lists_releases_and_deployments() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions::named("n1", 2));
    let cli = Cli {
        cluster: &cluster,
        node: &node,
    };
    for e in ["Dev", "Test", "Prod"] {
        cli.ok(&["environment", "create", e]);
    }
    cli.ok(&[
        "environment",
        "update",
        "Dev",
        "--rename",
        "Development",
        "--description",
        "first",
    ]);
    cli.ok(&["environment", "reorder", "Prod", "Development", "Test"]);
    let (_, envs) = node.get("/api/spaces/default/environments");
    let names: Vec<&str> = envs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Prod", "Development", "Test"]);
    assert_eq!(envs["items"][1]["description"], "first");
    let err = cli.refused(&["environment", "reorder", "Prod", "Test"]);
    assert!(
        err.contains("400"),
        "every environment must be named: {err}"
    );
    let err = cli.refused(&["environment", "update", "Test"]);
    assert!(err.contains("nothing to change"), "{err}");

    cli.ok(&["lifecycle", "create", "Standard"]);
    cli.ok(&[
        "lifecycle",
        "update",
        "Standard",
        "--phase",
        "Development",
        "--phase",
        "Prod",
    ]);
    let (_, lifecycles) = node.get("/api/spaces/default/lifecycles");
    assert_eq!(
        lifecycles["items"][0]["phases"].as_array().unwrap().len(),
        2
    );
    cli.ok(&["project", "create", "Shop"]);
    cli.ok(&[
        "project",
        "update",
        "Shop",
        "--lifecycle",
        "Standard",
        "--releases-to-keep",
        "5",
        "--description",
        "the shop",
    ]);
    let (_, projects) = node.get("/api/spaces/default/projects");
    let shop = &projects["items"][0];
    assert_eq!(shop["description"], "the shop");
    assert_eq!(shop["retention"]["releases_to_keep"], 5);
    assert_eq!(shop["lifecycle_id"], lifecycles["items"][0]["id"]);

    cli.ok(&["variable", "set", "Shop", "Greeting", "hi"]);
    cli.ok(&[
        "variable",
        "set",
        "Shop",
        "Greeting",
        "hello",
        "--environment",
        "Prod",
    ]);
    cli.ok(&["variable", "delete", "Shop", "Greeting"]);
    let left: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "variable", "list", "Shop"])).unwrap();
    let left = left["items"].as_array().unwrap();
    assert_eq!(left.len(), 1, "only the Prod one stays: {left:?}");
    assert_eq!(left[0]["value"], "hello");
    let err = cli.refused(&["variable", "delete", "Shop", "Greeting"]);
    assert!(err.contains("no variable Greeting"), "{err}");
    // A scope by role is its own: set and removed without touching the one for Prod.
    cli.ok(&[
        "variable", "set", "Shop", "Greeting", "hey", "--role", "web",
    ]);
    cli.ok(&["variable", "set", "Shop", "Greeting", "yo", "--role", "web"]);
    let (_, vars) = node.get(&format!(
        "/api/spaces/default/projects/{}/variables",
        project_id(&node, "Shop")
    ));
    let greetings: Vec<&Value> = vars["variables"].as_array().unwrap().iter().collect();
    assert_eq!(
        greetings.len(),
        2,
        "replaced in its scope, not added: {vars}"
    );
    assert!(greetings
        .iter()
        .any(|v| v["value"] == "yo" && v["scope"]["roles"] == json!(["web"])));
    cli.ok(&["variable", "delete", "Shop", "Greeting", "--role", "web"]);
    let (_, vars) = node.get(&format!(
        "/api/spaces/default/projects/{}/variables",
        project_id(&node, "Shop")
    ));
    assert_eq!(vars["variables"][0]["value"], "hello", "{vars}");

    cli.ok(&["runbook", "create", "Restart", "--project", "Shop"]);
    cli.ok(&["runbook", "update", "Restart", "--rename", "Restart web"]);
    assert!(cli.ok(&["runbook", "list"]).contains("Restart web"));
    let shown: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "runbook", "show", "restart web"])).unwrap();
    assert_eq!(shown["published"], Value::Null, "{shown}");
    let shown = cli.ok(&["lifecycle", "show", "Standard"]);
    assert!(
        shown.contains("Development") && shown.contains("Prod"),
        "phase names: {shown}"
    );

    let file = cluster.dir().join("p.yaml");
    std::fs::write(
        &file,
        "- name: Hi\n  action: {type: script, script: echo hi}\n",
    )
    .unwrap();
    cli.ok(&[
        "process",
        "edit",
        "--project",
        "Shop",
        "--file",
        file.to_str().unwrap(),
    ]);
    cli.ok(&[
        "release",
        "create",
        "--project",
        "Shop",
        "--version",
        "1.0.0",
    ]);
    cli.ok(&[
        "release",
        "create",
        "--project",
        "Shop",
        "--version",
        "1.1.0",
    ]);
    let releases = cli.ok(&["release", "list", "--project", "Shop"]);
    let first = releases.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with("1.1.0"), "newest first:\n{releases}");
    cli.ok(&[
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.1.0",
        "--environment",
        "Development",
        "--wait",
    ]);
    let listed: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "deployment", "list", "--project", "Shop"]))
            .unwrap();
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["state"], "Success");
    // Only some targets, some steps skipped: what the API takes, by name.
    let err = cli.refused(&[
        "deploy",
        "--project",
        "Shop",
        "--release",
        "1.0.0",
        "--environment",
        "Development",
        "--skip-step",
        "No such step",
    ]);
    assert!(err.contains("No such step"), "{err}");
    let shown = cli.ok(&["-o", "yaml", "deployment", "show", &id]);
    assert!(shown.contains("state: Success"), "{shown}");

    // What a command makes, as JSON for a script; a sensitive value is not made plain by a set
    // that forgets --sensitive; two keys of one name are revoked by id, never by a guess.
    let made: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "environment", "create", "Staging"])).unwrap();
    assert!(
        made["id"].as_str().unwrap().starts_with("Environments-"),
        "{made}"
    );
    let mut set = Command::new(cli_binary());
    set.args(["variable", "set", "Shop", "Token", "--sensitive"])
        .env("CUTTLE_SERVER", node.url(""))
        .env("CUTTLE_API_KEY", &cluster.api_key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let err = cli.refused(&["variable", "set", "Shop", "Token", "plain-now"]);
    assert!(err.contains("Token is sensitive here"), "{err}");
    for _ in 0..2 {
        cli.ok(&["api-key", "create", "--name", "twin", "--scope", "reader"]);
    }
    let err = cli.refused(&["api-key", "revoke", "twin"]);
    assert!(err.contains("2 keys are named \"twin\""), "{err}");
    // A task followed to a failed end is a failed command.
    let failing =
        node.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo nope; exit 3"}}));
    let (ok, out, err) = cli.run_with(&["task", "log", "--follow", &failing], &[]);
    assert!(
        !ok && out.contains("nope") && err.contains("ended Failed"),
        "{out}{err}"
    );

    // The manual: one page, or one per command.
    let page = cli.ok(&["man"]);
    assert!(page.contains(".TH cuttle 1"), "{page}");
    let dir = cluster.dir().join("man");
    cli.ok(&["man", "--dir", dir.to_str().unwrap()]);
    let edit_page = std::fs::read_to_string(dir.join("cuttle-process-edit.1")).unwrap();
    assert!(edit_page.contains(r"\-\-file"), "{edit_page}");
}

fn project_id(node: &Node, name: &str) -> String {
    let (_, projects) = node.get("/api/spaces/default/projects");
    projects["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["id"].as_str())
        .unwrap()
        .to_owned()
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// An "editor" that changes the file it is given with one `sed` expression, as a person would
/// in an editor.
fn editor_script(dir: &std::path::Path, name: &str, sed: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join(name);
    let quoted = sed.replace('\'', "'\\''");
    std::fs::write(&script, format!("#!/bin/sh\nsed -i '{quoted}' \"$1\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

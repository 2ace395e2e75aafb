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
    let saved = cli.ok(&["process", "edit", "--project", "Shop", "--file"]
        .into_iter()
        .chain([file.to_str().unwrap()])
        .collect::<Vec<_>>());
    assert!(saved.contains("1 step(s), version 2"), "{saved}");
    let shown = cli.ok(&["process", "show", "--project", "shop"]);
    assert!(
        shown.contains("version: 2") && shown.contains("name: Greet"),
        "{shown}"
    );
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/hello from/good day from/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&editor);
    let (ok, out, err) = cli.run_with(
        &["process", "edit", "--project", "Shop"],
        &[("EDITOR", editor.to_str().unwrap())],
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
    let stale = cli.refused(
        &["process", "edit", "--project", "Shop", "--file"]
            .into_iter()
            .chain([dir.join("stale.yaml").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(stale.contains("read"), "a missing file is named: {stale}");
    std::fs::write(
        dir.join("stale.yaml"),
        format!("version: 2\n{}", std::fs::read_to_string(&file).unwrap()),
    )
    .unwrap();
    let stale = cli.refused(
        &["process", "edit", "--project", "Shop", "--file"]
            .into_iter()
            .chain([dir.join("stale.yaml").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(
        stale.contains("409") && stale.contains("hint: someone changed it meanwhile"),
        "{stale}"
    );
    // An edit the server refuses is kept, and the message says how to try again.
    let breaker = dir.join("breaker.sh");
    std::fs::write(
        &breaker,
        "#!/bin/sh\nsed -i 's/name: Greet/name: \"\"/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&breaker);
    let (ok, _, err) = cli.run_with(
        &["process", "edit", "--project", "Shop"],
        &[("EDITOR", breaker.to_str().unwrap())],
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
    cli.ok(&["process", "edit", "--runbook", "Restart", "--file"]
        .into_iter()
        .chain([runbook_steps.to_str().unwrap()])
        .collect::<Vec<_>>());
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
    assert!(cli.ok(&["target", "list"]).contains("web-1"));
    cli.ok(&["target", "delete", "web-1"]);
    assert!(!cli.ok(&["target", "list"]).contains("web-1"));

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

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

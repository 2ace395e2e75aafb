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

/// Starts `t` as a polling tentacle of `n` in Production with the role `web`, and waits until a
/// gateway holds its session.
fn web_tentacle(n: &cuttle_e2e::Node, t: &mut cuttle_e2e::Tentacle, api_key: &str) {
    production(n);
    let out = t.register(&n.url(""), api_key, "web", "polling", &["Production"], &[]);
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("Machines-"))
        .unwrap_or_else(|| panic!("no target id in {out:?}"))
        .to_owned();
    t.start();
    cuttle_e2e::wait_until("the tentacle's session", MIN, || {
        let (_, target) = n.get(&format!("/api/targets/{id}"));
        (!target["connected_nodes"].as_array()?.is_empty()).then_some(())
    });
}

/// The id of the environment "Production", made if it is not there yet.
fn production(n: &cuttle_e2e::Node) -> String {
    let envs = "/api/spaces/default/environments";
    let (_, list) = n.get(envs);
    if let Some(e) = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "Production"))
    {
        return e["id"].as_str().unwrap().to_owned();
    }
    let (status, made) = n.post(envs, &json!({"name": "Production"}));
    assert_eq!(status, 201, "{made}");
    made["id"].as_str().unwrap().to_owned()
}

/// A project "Shop" with one environment, `steps` as its process and `variables`, released as
/// 1.0.0 and deployed: the deployment's task, once finished, and its log.
fn deploy_once(
    n: &cuttle_e2e::Node,
    steps: serde_json::Value,
    variables: serde_json::Value,
) -> (serde_json::Value, String) {
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let env = production(n);
    let (_, project) = n.post("/api/spaces/default/projects", &json!({"name": "Shop"}));
    let path = format!("/api/spaces/default/projects/{}", id(&project));
    let (status, saved) = n.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&json!({"version": 1, "steps": steps}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, saved) = n.request(
        "PUT",
        &format!("{path}/variables"),
        Some(&json!({"version": 2, "variables": variables}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, release) = n.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    assert_eq!(status, 201, "{release}");
    let (status, d) = n.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": id(&release), "environment_id": env}),
    );
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap();
    (n.wait_finished(task, MIN), n.task_log(task))
}

/// H-1 (output variables): what one script prints as an output variable reaches a later script
/// as data — quoted for its shell, never run, never searched for another variable to reveal.
#[test]
fn h1_an_output_variable_cannot_add_code_to_a_later_script() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let script = |s: &str| json!({"type": "script", "script": s});
    let (t, log) = deploy_once(
        &n1,
        json!([
            {"name": "Build", "action": script(
                "echo \"##cuttle[setVariable name='V' value='1.0; echo INJECTED-\\$(id -u)']\"\n\
                 echo \"##cuttle[setVariable name='Q' value='x\\\\' ; echo QUOTED-ESCAPE ; echo \\\\'']\"\n\
                 echo \"##cuttle[setVariable name='Ref' value='##{Internal}']\""
            )},
            {"name": "Use", "action": script(
                "echo got #{Output.Build.V}\necho q #{Output.Build.Q}\necho ref #{Output.Build.Ref}"
            )},
        ]),
        json!([{"name": "Internal", "value": "internal-value-42"}]),
    );
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(
        log.contains("OUT   got 1.0; echo INJECTED-$(id -u)"),
        "the value arrives whole, as text:\n{log}"
    );
    assert!(
        log.contains("OUT   q x' ; echo QUOTED-ESCAPE ; echo '"),
        "{log}"
    );
    assert!(log.contains("OUT   ref #{Internal}"), "{log}");
    for injected in [
        "OUT   INJECTED-",
        "OUT   QUOTED-ESCAPE",
        "internal-value-42",
    ] {
        assert!(!log.contains(injected), "{injected:?} in\n{log}");
    }
}

/// H-2: `createArtifact` publishes only a regular file inside the script's working directory —
/// not `/proc/self/environ`, not a link to a file elsewhere — on a node and on a tentacle.
#[test]
fn h2_artifacts_cannot_publish_files_outside_the_script_s_folder() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-artifacts");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let key_file = web.home.join("tentacle.key");
    let attempts = |secret: &str| {
        format!(
            "echo ok > legit.txt\n\
             ln -s {secret} link\n\
             ln {secret} hard 2>/dev/null\n\
             mkfifo fifo\n\
             echo \"##cuttle[createArtifact path='/proc/self/environ']\"\n\
             echo \"##cuttle[createArtifact path='{secret}']\"\n\
             echo \"##cuttle[createArtifact path='../../{base}']\"\n\
             echo \"##cuttle[createArtifact path='link']\"\n\
             echo \"##cuttle[createArtifact path='hard']\"\n\
             echo \"##cuttle[createArtifact path='fifo']\"\n\
             echo \"##cuttle[createArtifact path='legit.txt']\"",
            base = std::path::Path::new(secret)
                .file_name()
                .unwrap()
                .to_string_lossy()
        )
    };
    // On the node: its master key is what a link would reach for.
    let on_node = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {
        "script": attempts(&cluster.dir().join("n1").join("cuttle.db").display().to_string())}}));
    let on_target = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {
        "script": attempts(&key_file.display().to_string()), "roles": ["web"]}}));
    for id in [&on_node, &on_target] {
        let t = n1.wait_finished(id, MIN);
        let log = n1.task_log(id);
        let (_, arts) = n1.get(&format!("/api/tasks/{id}/artifacts"));
        let names: Vec<&str> = arts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["legit.txt"], "{t}\n{log}");
        assert!(
            log.contains("not taken") && log.contains("not collected"),
            "{log}"
        );
    }
    assert!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .contains("PRIVATE KEY"),
        "the tentacle's key is still where it was"
    );
}

/// H-3: a sensitive value is masked whole wherever output carries it — each line of a PEM
/// key, a value cut in two where a long line is split — on a node and on a target.
#[test]
fn h3_multi_line_and_split_secrets_are_masked_whole() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-masking");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n\
               VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu\n-----END PRIVATE KEY-----";
    let password = "long-Secret-Value-0123456789";
    // Lines are split every 65,536 bytes: the password starts 10 bytes before the split.
    let pad = 64 * 1024 - 10;
    let script =
        format!("cat <<'EOF'\n#{{Pem}}\nEOF\nprintf '%{pad}s#{{Password}}tail\\n' x | tr ' ' p");
    let step = |name: &str, roles: serde_json::Value| {
        json!({"name": name, "target_roles": roles, "condition": "always",
               "action": {"type": "script", "script": script}})
    };
    let (t, log) = deploy_once(
        &n1,
        json!([
            step("On the node", json!([])),
            step("On the target", json!(["web"]))
        ]),
        json!([
            {"name": "Pem", "value": pem, "sensitive": true},
            {"name": "Password", "value": password, "sensitive": true},
        ]),
    );
    assert_eq!(t["state"], "Success", "{t}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "a line of the key is in the log");
    }
    assert!(
        log.contains("OUT   ********") && log.contains("OUT   [web-1] ********"),
        "the key's lines are there, masked, from the node and the target"
    );
    for half in [&password[..10], &password[10..]] {
        assert!(
            !log.contains(half),
            "part of the password ({half}) is in the log"
        );
    }
    assert_eq!(
        log.matches("********tail").count(),
        2,
        "masked where it was split"
    );
}

/// H-3: a script's text (with the secrets substituted into it) is never on a command line,
/// where `ps` shows it to every local user: not on the node, not on a target.
#[test]
fn h3_a_script_s_text_is_never_on_a_command_line() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-ps");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let script = "secret=marker-in-the-script-text; sleep 600.62";
    let on_node = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": script}}));
    let on_target = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {
        "script": script, "roles": ["web"]}}));
    cuttle_e2e::wait_until("both scripts to run", MIN, || {
        (cuttle_e2e::processes_running(&["sleep", "600.62"]).len() == 2).then_some(())
    });
    let mut seen = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains("marker-in-the-script-text") {
                seen.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
    }
    for id in [&on_node, &on_target] {
        n1.post(&format!("/api/tasks/{id}/cancel"), &json!({}));
        n1.wait_finished(id, MIN);
    }
    assert!(seen.is_empty(), "on a command line: {seen:?}");
}

/// H-4: released bytes never change. A deployer cannot replace a version; nobody can replace
/// one a release names; and bytes that changed under a release anyway (deleted and uploaded
/// again) are not deployed.
#[test]
fn h4_a_released_package_version_is_never_replaced_under_its_release() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-packages");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let deployer = n1.key_with_scope("ci", "deployer");
    let operator = n1.key_with_scope("ops", "operator");
    let upload = |key: &str, bytes: &[u8], replace: bool| {
        let q = if replace { "&replace=true" } else { "" };
        cuttle_e2e::upload(
            n1.http(),
            &n1.url(&format!(
                "/api/spaces/default/packages/raw?package_id=Shop.Web&version=1.0.0&format=tar.gz{q}"
            )),
            key,
            "application/octet-stream",
            bytes,
            bytes.len() as u64,
            &[],
        )
    };
    let tarball = |text: &str| {
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("version.txt"), text).unwrap();
        let out = dir.path().join("pkg.tar.gz");
        let ok = std::process::Command::new("tar")
            .args([
                "czf",
                out.to_str().unwrap(),
                "-C",
                src.to_str().unwrap(),
                "version.txt",
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::read(out).unwrap()
    };
    let (good, evil) = (tarball("good build"), tarball("evil build"));
    let (status, body) = upload(&deployer, &good, false);
    assert_eq!(status, 201, "{body}");
    // Released: the release records what it deploys, SHA-256 included.
    let step = json!([{"name": "Web", "target_roles": ["web"], "action": {
        "type": "deploy-package", "package_id": "Shop.Web",
        "script": "cat version.txt"}}]);
    let (t, log) = deploy_once(&n1, step, json!([]));
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(log.contains("OUT   [web-1] good build"), "{log}");

    // The deployer's attack: replace the released version.
    let (status, err) = upload(&deployer, &evil, true);
    assert_eq!(status, 403, "{err}");
    // Not even an operator replaces a version a release names.
    let (status, err) = upload(&operator, &evil, true);
    assert_eq!(status, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("release 1.0.0 of Shop"), "{msg}");

    // Deleted and uploaded again with other bytes: the release refuses to deploy them.
    let (status, _) = n1.request_with_key(
        &operator,
        "DELETE",
        "/api/spaces/default/packages/Shop.Web/1.0.0",
        None,
    );
    assert_eq!(status, 200);
    let (status, body) = upload(&operator, &evil, false);
    assert_eq!(status, 201, "{body}");
    let (_, releases) = n1.get("/api/spaces/default/deployments");
    let first = &releases["items"][0];
    let (status, d) = n1.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": first["release_id"], "environment_id": first["environment_id"]}),
    );
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap();
    let t = n1.wait_finished(task, MIN);
    let log = n1.task_log(task);
    assert_eq!(t["state"], "Failed", "{t}\n{log}");
    assert!(
        log.contains("is not the one the release was made with"),
        "{log}"
    );
    assert!(!log.contains("evil build"), "{log}");
}

/// H-1: a register-target key puts its target only where it was made to, registers once, and
/// never changes a target afterwards — its own or another's.
#[test]
fn h1_a_register_target_key_claims_only_what_it_was_granted() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    for env in ["Test", "Production"] {
        n1.post("/api/spaces/default/environments", &json!({"name": env}));
    }
    let thumb = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let (_, prod_web) = n1.post(
        "/api/targets",
        &json!({"name": "prod-web", "environments": ["Production"], "roles": ["web"],
                "comms": "polling", "thumbprint": thumb('A')}),
    );
    let prod_path = format!("/api/targets/{}", prod_web["id"].as_str().unwrap());
    let (_, key) = n1.create_key(
        &json!({"name": "web-9 bootstrap", "scope": "register-target",
        "target": "web-9", "environments": ["Test"], "roles": ["web"]}),
    );
    let dir = cuttle_e2e::temp_dir("attack-register");
    let t = cuttle_e2e::Tentacle::new(dir.path(), "web-9");
    let server = n1.url("");
    let register = |envs: &[&str], role: &str| {
        let mut args = vec![
            "register",
            "--server",
            &server,
            "--api-key",
            &key,
            "--name",
            "web-9",
            "--role",
            role,
            "--comms",
            "polling",
        ];
        for e in envs {
            args.extend(["--environment", e]);
        }
        t.try_command(&args)
    };
    // The attack: Production, to receive its deployments and their secrets; or another role.
    let (ok, out, err) = register(&["Production"], "web");
    assert!(!ok && err.contains("[Production]"), "{out}{err}");
    let (ok, out, err) = register(&["Test"], "db");
    assert!(!ok && err.contains("the roles [db]"), "{out}{err}");
    // What it was made for works, once.
    let (ok, out, err) = register(&["Test"], "web");
    assert!(ok, "{out}{err}");
    let (ok, _, err) = register(&["Test"], "web");
    assert!(!ok && err.contains("401"), "the key is used up: {err}");
    // Nor does a key that may register again change anything afterwards.
    let (_, again) = n1.create_key(
        &json!({"name": "api-1 bootstrap", "scope": "register-target",
        "target": "api-1", "environments": ["Test"], "roles": ["api"], "reusable": true}),
    );
    let (status, own) = n1.request_with_key(
        &again,
        "POST",
        "/api/targets",
        Some(
            &json!({"name": "api-1", "environments": ["Test"], "roles": ["api"],
                    "comms": "polling", "thumbprint": thumb('B')})
            .to_string(),
        ),
    );
    assert_eq!(status, 201, "{own}");
    let own_path = format!("/api/targets/{}", own["id"].as_str().unwrap());
    for (path, change) in [
        (&own_path, json!({"environments": ["Production"]})),
        (
            &own_path,
            json!({"endpoint": "10.0.0.1:22", "comms": "listening"}),
        ),
        (&prod_path, json!({"thumbprint": thumb('C')})),
        (&prod_path, json!({"environments": ["Test"]})),
    ] {
        let (status, err) = n1.request_with_key(&again, "PATCH", path, Some(&change.to_string()));
        assert_eq!(status, 403, "{path} {change}: {err}");
    }
    let (_, prod) = n1.get(&prod_path);
    assert_eq!(
        (&prod["thumbprint"], &prod["environments"]),
        (&json!(thumb('A')), &json!(["Production"]))
    );
}

/// Makes the web UI user `alice` (scope admin) with `password`.
fn make_user(cluster: &Cluster, password: &str) {
    let (ok, out) = cluster.run_server(
        &[
            "admin",
            "create",
            "--username",
            "alice",
            "--scope",
            "admin",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert!(ok, "{out}");
}

/// M-3: a web session is the cluster's: the cookie names it and holds nothing else (no key, no
/// data sealed with a key an operator can make encrypt things for them), signing out ends it on
/// every node, and it ends at most 12 hours after it began whatever the cookie says.
#[test]
fn m3_sign_out_ends_the_session_everywhere_and_no_cookie_can_be_forged() {
    use cuttle_e2e::web::{form_token, send, session_of};
    let cluster = Cluster::postgres();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 1));
    let password = "correct horse battery staple";
    make_user(&cluster, password);
    let form = format!("username=alice&password={}", password.replace(' ', "+"));
    let signed = send(&n1, "POST", "/ui/sign-in", None, Some(&form), &[]);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = session_of(&signed.set_cookie);
    assert_eq!(cookie.len(), 43, "a random id, nothing more: {cookie}");
    // Signed in with an API key, the cookie holds no trace of the key either.
    let with_key = send(
        &n1,
        "POST",
        "/ui/sign-in",
        None,
        Some(&format!("api_key={}", cluster.api_key)),
        &[],
    );
    let key_cookie = session_of(&with_key.set_cookie);
    assert_eq!(key_cookie.len(), 43);
    assert!(!key_cookie.contains(&cluster.api_key[4..12]));
    // The session's end was fixed when it began: 12 hours.
    let pg = cluster.postgres_server().unwrap();
    let lifetimes = pg
        .psql("SELECT DISTINCT expires_at_ms - created_at_ms FROM ui_sessions")
        .unwrap();
    assert_eq!(lifetimes.trim(), "43200000", "{lifetimes}");

    // The forgery of the review: an operator makes the cluster encrypt a session of their
    // choosing (a sensitive variable's value) and presents its ciphertext as a cookie.
    let (_, project) = n1.post("/api/spaces/default/projects", &json!({"name": "Forge"}));
    let forged_value = r#"{"u":[1,1],"e":99999999999999}"#;
    let (status, saved) = n1.request(
        "PUT",
        &format!(
            "/api/spaces/default/projects/{}/variables",
            project["id"].as_str().unwrap()
        ),
        Some(
            &json!({"version": 1, "variables": [
                {"name": "S", "value": forged_value, "sensitive": true}]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let sealed = pg
        .psql("SELECT body::jsonb -> 'variables' -> 0 ->> 'ciphertext' FROM documents WHERE kind = 'Project'")
        .unwrap();
    let sealed = sealed.trim();
    assert!(
        sealed.len() > 40,
        "the ciphertext is in the database: {sealed}"
    );
    for forged in [sealed, "A".repeat(43).as_str()] {
        let page = send(&n2, "GET", "/ui/nodes", Some(forged), None, &[]);
        assert_eq!(page.status, 303, "a forged cookie opens nothing");
    }

    // Sign-out ends the session: the copied cookie opens nothing, on any node.
    let page = send(&n2, "GET", "/ui/nodes", Some(&cookie), None, &[]);
    assert_eq!(page.status, 200);
    let token = form_token(&page.body);
    let out = send(
        &n2,
        "POST",
        "/ui/sign-out",
        Some(&cookie),
        Some(&format!("csrf={token}")),
        &[],
    );
    assert_eq!(out.status, 303);
    cuttle_e2e::wait_until("the session to end on n1 too", MIN, || {
        (send(&n1, "GET", "/ui/nodes", Some(&cookie), None, &[]).status == 303).then_some(())
    });
    assert_eq!(
        send(&n2, "GET", "/ui/nodes", Some(&cookie), None, &[]).status,
        303
    );
    let (_, events) = n1.get("/api/events?limit=50");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("ui."))
        .collect();
    assert!(
        actions.contains(&"ui.sign_in") && actions.contains(&"ui.sign_out"),
        "{actions:?}"
    );
}

/// M-4: a live-log stream ends once its session no longer opens pages (the key revoked), and a
/// person holds only a few at once on a node.
#[test]
fn m4_live_log_streams_end_with_their_session_and_are_capped_per_person() {
    use cuttle_e2e::web::{send, session_of};
    use std::io::Read;
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let (key_id, key) = n1.create_key(&json!({"name": "viewer", "scope": "reader"}));
    let signed = send(
        &n1,
        "POST",
        "/ui/sign-in",
        None,
        Some(&format!("api_key={key}")),
        &[],
    );
    let cookie = session_of(&signed.set_cookie);
    let long = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 300_000}}));
    n1.wait_task(&long, "executing", MIN, |t| t["state"] == "Executing");
    let open = || {
        cuttle_e2e::agent(None)
            .get(&n1.url(&format!("/ui/tasks/{long}/log/events")))
            .header("Cookie", &format!("cuttle_session={cookie}"))
            .call()
            .unwrap()
    };
    let mut streams: Vec<_> = (0..8).map(|_| open()).collect();
    assert!(streams.iter().all(|r| r.status() == 200));
    assert_eq!(open().status(), 429, "a ninth stream of one person");
    // Revoked: the open streams end by themselves, saying so.
    let (status, _) = n1.request("DELETE", &format!("/api/keys/{key_id}"), None);
    assert_eq!(status, 204);
    let started = std::time::Instant::now();
    let mut body = String::new();
    streams[0]
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    assert!(
        body.contains("event: end") && body.contains("data: signed-out"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    n1.post(&format!("/api/tasks/{long}/cancel"), &json!({}));
}

/// H-5: a password is counted before it is checked — forty at once from one address: ten are
/// checked, the rest refused — and a thousand sign-ins at once from a thousand addresses cost
/// the node a bounded amount of memory while it keeps answering.
#[test]
fn h5_password_sign_ins_are_limited_before_they_are_checked_and_bounded_in_memory() {
    // A thousand connections at once from this process.
    cuttle_e2e::raise_open_file_limit();
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_TRUSTED_PROXIES".into(), "127.0.0.1".into())],
        ..NodeOptions::named("n1", 1)
    });
    make_user(&cluster, "correct horse battery staple");
    let url = n1.url("/ui/sign-in");
    // A connection the kernel's accept queue dropped (a thousand arrive in the same instant) is
    // tried again, as any client would: what is measured is what the node does with them.
    let attempt = |from: &str, name: &str| -> u16 {
        for _ in 0..50 {
            let sent = cuttle_e2e::web::no_redirects()
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("X-Forwarded-For", from)
                .send(format!("username={name}&password=wrong+password+guess"));
            match sent {
                Ok(r) => return r.status().as_u16(),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        0
    };
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let all: Vec<_> = (0..40)
            .map(|_| s.spawn(|| attempt("198.51.100.7", "alice")))
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (1..=10).contains(&checked),
        "{checked} of 40 were checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429 | 503)),
        "{statuses:?}"
    );
    // A thousand addresses, a thousand names, at once.
    let rss = || cuttle_e2e::peak_rss_kib(n1.pid().unwrap());
    let before = rss();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let all: Vec<_> = (0..1000u32)
            .map(|i| {
                let from = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                let attempt = &attempt;
                s.spawn(move || attempt(&from, &format!("user{i}")))
            })
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429 | 503)),
        "{:?}",
        statuses
            .iter()
            .filter(|s| !matches!(s, 401 | 429 | 503))
            .collect::<Vec<_>>()
    );
    let grown_mib = rss().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "the node grew by {grown_mib} MiB");
    assert_eq!(n1.ping(), 200, "and keeps answering");
}

/// M-6: a request without a valid key is answered from its headers: none of its body is read
/// (the review's 200 keyless connections each sending 1 MiB took 200 MiB).
#[test]
fn m6_a_keyless_request_is_refused_before_its_body_is_read() {
    use std::io::{Read, Write};
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let addr = n1.url("").trim_start_matches("http://").to_owned();
    let rss = || cuttle_e2e::peak_rss_kib(n1.pid().unwrap());
    let before = rss();
    // Headers announcing a 1 MiB body that never comes: answered at once, not after the body
    // deadline (30 s).
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1048000\r\n\r\n"
        )
        .unwrap();
        // Half of them send the body anyway.
        if conns.len() % 2 == 0 {
            let _ = c.write_all(&vec![b' '; 1_048_000]);
        }
        conns.push(c);
    }
    for c in &mut conns {
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 401", "refused from its headers");
    }
    let grown_mib = rss().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "the node grew by {grown_mib} MiB");
}

/// M-5: idle connections from many addresses to the internal gRPC port and the tentacle
/// gateway do not exhaust a node's descriptors: handshakes are bounded (the oldest ends to make
/// room), and the node goes on working — its API, its tasks, a tentacle's session.
#[test]
fn m5_idle_connections_to_every_listener_do_not_exhaust_a_node() {
    cuttle_e2e::raise_open_file_limit();
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        open_files: Some(1024),
        ..NodeOptions::named("n1", 2)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 1,100 to each port, eight per address (127.0.x.y: every loopback address is this host).
    let held: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut held = Vec::new();
        for port in [n1.grpc_port, n1.gateway_port] {
            for i in 0..1100u32 {
                let from =
                    std::net::Ipv4Addr::new(127, 1, (i / 8 / 250) as u8, (i / 8 % 250 + 1) as u8);
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((from, 0).into()).unwrap();
                let connect = socket.connect(([127, 0, 0, 1], port).into());
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(c)) => held.push(c),
                    Ok(Err(_)) => {}
                    Err(_) => break,
                }
            }
        }
        held
    });
    assert!(held.len() > 1000, "only {} connections opened", held.len());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", n1.pid().unwrap()))
        .unwrap()
        .count();
    assert!(fds < 900, "the node holds {fds} descriptors");
    // It works while they are all held: the API, a task, a tentacle's session.
    assert_eq!(n1.ping(), 200);
    let task = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}}));
    assert_eq!(n1.wait_finished(&task, MIN)["state"], "Success");
    let dir = cuttle_e2e::temp_dir("attack-fds");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    drop(held);
}

/// An HTTPS server with a certificate of its own that answers every request as if it were the
/// cluster `thumbprint` (echoing it in `/api/cluster/identity`, accepting any registration);
/// what it was sent, once it is stopped.
struct FakeCluster {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeCluster {
    fn start(thumbprint: &str) -> FakeCluster {
        use std::io::{Read, Write};
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let identity = json!({"thumbprint": thumbprint, "gateways": ["127.0.0.1:1"]}).to_string();
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 16384];
                let Ok(n) = tls.read(&mut buf) else { continue };
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let body = if request.starts_with("GET /api/cluster/identity") {
                    identity.clone()
                } else {
                    json!({"id": "Machines-1"}).to_string()
                };
                let status = if request.starts_with("POST") {
                    "201 Created"
                } else {
                    "200 OK"
                };
                seen2.lock().unwrap().push(request);
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
            }
        });
        FakeCluster { port, seen, stop }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// M-1: `cuttle-tentacle register` and `cuttle` pin the certificate the TLS handshake proves,
/// not a thumbprint a server writes in its answer: a server that echoes the real cluster's
/// thumbprint gets no API key, and a cluster serving its own certificate is reached without
/// `--insecure`.
#[test]
fn m1_a_server_that_echoes_the_cluster_thumbprint_never_gets_the_key() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HTTP_TLS".into(), "cluster".into())],
        https: Some(cuttle_e2e::HttpsTrust::Any),
        ..NodeOptions::named("n1", 1)
    });
    let (_, identity) = n1.get("/api/cluster/identity");
    let thumbprint = identity["thumbprint"].as_str().unwrap().to_owned();
    let fake = FakeCluster::start(&thumbprint);
    let (_, key) = n1.create_key(&json!({"name": "t1 bootstrap", "scope": "register-target",
        "target": "t1", "reusable": true}));
    let dir = cuttle_e2e::temp_dir("attack-pinning");
    let t = cuttle_e2e::Tentacle::new(dir.path(), "t1");
    let register = |server: &str, pin: &[&str]| {
        let mut args = vec![
            "register",
            "--server",
            server,
            "--api-key",
            &key,
            "--name",
            "t1",
            "--comms",
            "polling",
        ];
        args.extend_from_slice(pin);
        t.try_command(&args)
    };
    // The fake echoes the right thumbprint; its certificate is not the cluster's.
    for pin in [
        ["--cluster-thumbprint", thumbprint.as_str()],
        ["--server-thumbprint", thumbprint.as_str()],
    ] {
        let (ok, out, err) = register(&fake.url(), &pin);
        assert!(!ok, "{out}{err}");
    }
    // The CLI, pinned the same way.
    let cli = |server: &str| {
        std::process::Command::new(cuttle_e2e::cli_binary())
            .args([
                "--server",
                server,
                "--server-thumbprint",
                &thumbprint,
                "node",
                "list",
            ])
            .env("CUTTLE_API_KEY", &cluster.api_key)
            .output()
            .unwrap()
    };
    assert!(!cli(&fake.url()).status.success());
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.contains(&key) && !r.contains(&cluster.api_key)),
        "the fake got a key: {requests:?}"
    );
    // The real cluster, serving its own certificate: no --insecure needed, by either pin.
    let node = n1.url("");
    let (ok, out, err) = register(&node, &["--cluster-thumbprint", &thumbprint]);
    assert!(ok, "{out}{err}");
    let listed = cli(&node);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("n1"));
}

/// M-7: a package that unpacks to far more than its size stops early on the target and leaves
/// nothing; one key holds at most four uploads at once.
#[test]
fn m7_a_zip_bomb_stops_early_and_one_key_holds_few_uploads() {
    use std::io::Write;
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-bomb");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let deployer = n1.key_with_scope("ci", "deployer");
    // 300 MiB of zeros in a few hundred KiB.
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg("truncate -s 300M big.bin && tar czf bomb.tar.gz big.bin && rm big.bin")
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(made.success());
    let bomb = std::fs::read(dir.path().join("bomb.tar.gz")).unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let url =
        n1.url("/api/spaces/default/packages/raw?package_id=Bomb&version=1.0.0&format=tar.gz");
    let (status, body) = cuttle_e2e::upload(
        n1.http(),
        &url,
        &deployer,
        "application/octet-stream",
        &bomb[..],
        bomb.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    let step = json!([{"name": "Unpack", "target_roles": ["web"], "action": {
        "type": "deploy-package", "package_id": "Bomb"}}]);
    let (t, log) = deploy_once(&n1, step, json!([]));
    assert_eq!(t["state"], "Failed", "{t}");
    assert!(log.contains("unpacks to more than"), "{log}");
    let apps = web.home.join("Applications");
    let unpacked: u64 = walk_size(&apps);
    assert!(
        unpacked < 256 << 20,
        "{unpacked} bytes were left on the target"
    );

    // Four uploads of one key hold their places; a fifth is told to wait.
    let addr = n1.url("").trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /api/spaces/default/packages/raw?package_id=Slow{i}&version=1.0.0&format=tar.gz HTTP/1.1\r\n\
             Host: x\r\nX-Api-Key: {deployer}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        c.write_all(&bomb[..1000]).unwrap();
        held.push(c);
    }
    let slow = |i: u32| {
        cuttle_e2e::upload(
            n1.http(),
            &n1.url(&format!(
                "/api/spaces/default/packages/raw?package_id=Fifth{i}&version=1.0.0&format=tar.gz"
            )),
            &deployer,
            "application/octet-stream",
            &bomb[..],
            bomb.len() as u64,
            &[],
        )
    };
    cuttle_e2e::wait_until("the fifth upload to be refused", MIN, || {
        let (status, body) = slow(0);
        (status == 429).then_some(body)
    });
    // Another key is not affected.
    let (status, body) = cuttle_e2e::upload(
        n1.http(),
        &n1.url("/api/spaces/default/packages/raw?package_id=Other&version=1.0.0&format=tar.gz"),
        &cluster.api_key,
        "application/octet-stream",
        &bomb[..],
        bomb.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    drop(held);
}

/// Bytes of every file under `dir`.
fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Low: `--dump-config` shows the database URL without its password, whatever its form.
#[test]
fn low_dump_config_never_prints_the_database_password() {
    let cluster = Cluster::sqlite();
    for url in [
        "postgres://cuttle:Pa55w0rd-dump@db.internal:5432/cuttle",
        "host=db.internal user=cuttle password=Pa55w0rd-dump dbname=cuttle",
        "Server=tcp:sql.internal,1433;Database=cuttle;User Id=cuttle;Password=Pa55w0rd-dump;Encrypt=true",
    ] {
        let out = cluster
            .server_command(&["--dump-config", "run"])
            .env("CUTTLE_DATABASE_URL", url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("database_url"), "{text}");
        assert!(!text.contains("Pa55w0rd-dump"), "{text}");
    }
}

/// Low: `/api/cluster/identity` tells a caller without a key the cluster's thumbprint (which
/// every gateway handshake presents anyway) and nothing else — no gateway address, and never a
/// database error naming its host.
#[test]
fn low_the_identity_shows_gateways_only_to_a_key_and_never_the_database() {
    let cluster = Cluster::postgres();
    let n1 = cluster.start(NodeOptions {
        expected_errors: vec!["heartbeat".into()],
        ..NodeOptions::named("n1", 1)
    });
    let anonymous = || {
        let mut r = cuttle_e2e::agent(None)
            .get(&n1.url("/api/cluster/identity"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    let (status, body) = anonymous();
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        shown["thumbprint"].is_string() && shown.get("gateways").is_none(),
        "{body}"
    );
    let (_, with_key) = n1.get("/api/cluster/identity");
    assert_eq!(
        with_key["gateways"].as_array().map(Vec::len),
        Some(1),
        "{with_key}"
    );
    // The database away: the thumbprint still, and no word of where the database is.
    cluster.stop_database().unwrap();
    let host_port = cluster
        .db_url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, body) = anonymous();
    assert_eq!(status, 200, "{body}");
    let (status, body) = n1.get("/api/cluster/identity");
    assert!(!body.to_string().contains(&host_port), "{status} {body}");
    cluster.start_database().unwrap();
}

/// Low: a page shows the message a form sent it back with only when the cluster sealed it — a
/// link cannot put words of its own in the UI.
#[test]
fn low_pages_show_only_messages_the_cluster_sealed() {
    use cuttle_e2e::web::{form_token, send, session_of};
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 1));
    let signed = send(
        &n1,
        "POST",
        "/ui/sign-in",
        None,
        Some(&format!("api_key={}", cluster.api_key)),
        &[],
    );
    let cookie = session_of(&signed.set_cookie);
    let page = send(&n1, "GET", "/ui/nodes", Some(&cookie), None, &[]);
    let token = form_token(&page.body);
    let done = send(
        &n1,
        "POST",
        "/ui/nodes/n2",
        Some(&cookie),
        Some(&format!("csrf={token}&action=cap&task_cap=3")),
        &[],
    );
    assert_eq!(done.status, 303);
    assert!(done.location.contains("&seal="), "{}", done.location);
    // Followed on another node: shown.
    let shown = send(&n2, "GET", &done.location, Some(&cookie), None, &[]);
    let text = "task cap";
    assert!(shown.body.to_lowercase().contains(text), "{}", shown.body);
    // Someone else's words, with or without a seal of their own making: not shown.
    let forged = "Your+cluster+was+compromised%3A+call+555-0100";
    for link in [
        format!("/ui/nodes?message={forged}"),
        format!("/ui/nodes?message={forged}&seal=00000000000000000000000000000000"),
    ] {
        let page = send(&n2, "GET", &link, Some(&cookie), None, &[]);
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("555-0100"), "{}", page.body);
    }
}

/// Low (data keys): a master-key rotation re-sealed the variable key and the HMAC secret without
/// changing them, so whoever had read them once (with the old master key and the database)
/// still opened every sensitive value and signed what nodes trust. `variable-key rotate` and
/// `api-key-secret rotate` / `finish` replace them while the cluster runs: the stolen keys open
/// no value the database holds and sign nothing a node shows, while every value, release,
/// published runbook and API key in use keeps working.
#[test]
fn low_rotated_data_keys_leave_stolen_ones_opening_and_signing_nothing() {
    use cuttle_e2e::web::{send, session_of};
    use cuttle_storage::{ApiKeyHasher, MasterKey};
    use sha2::Digest;
    let cluster = Cluster::new(cuttle_e2e::Database::Postgres).unwrap();
    let pg = cluster.postgres_server().unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    let secret = "correct-horse-battery-staple";
    let digest: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let steps = json!([{"name": "Use", "action": {"type": "script",
        "script": "printf %s '#{Password}' | sha256sum"}}]);
    let (t, log) = deploy_once(
        &n1,
        steps.clone(),
        json!([{"name": "Password", "value": secret, "sensitive": true}]),
    );
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(log.contains(&digest), "{log}");
    let (_, projects) = n1.get("/api/spaces/default/projects");
    let project = projects["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, runbook) = n1.post(
        "/api/spaces/default/runbooks",
        &json!({"name": "Check", "project_id": project}),
    );
    assert_eq!(status, 201, "{runbook}");
    let runbook = format!(
        "/api/spaces/default/runbooks/{}",
        runbook["id"].as_str().unwrap()
    );
    let (status, saved) = n1.request(
        "PUT",
        &format!("{runbook}/process"),
        Some(&json!({"version": 1, "steps": steps}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, published) = n1.post(&format!("{runbook}/publish"), &json!({}));
    assert_eq!(status, 200, "{published}");
    let ci = n1.key_with_scope("ci", "deployer");
    let idle = n1.key_with_scope("idle", "reader");

    // The attacker read the database and the master key once: the data keys are theirs.
    let setting = |name: &str| {
        pg.psql(&format!("SELECT value FROM settings WHERE key = '{name}'"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let old_master = MasterKey::parse(&cluster.master_key).unwrap();
    let stolen_variable_key = MasterKey::parse(
        &String::from_utf8(
            old_master
                .decrypt(&setting("variable_encryption_key"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let stolen_secret = old_master.decrypt(&setting("api_key_hmac_key")).unwrap();
    let stolen_hasher = ApiKeyHasher::from_secrets(&stolen_secret, None).unwrap();
    let ciphertexts = || -> Vec<String> {
        let rows = pg
            .psql(
                "SELECT body FROM documents WHERE kind IN ('Project', 'Runbook') \
                 UNION ALL SELECT snapshot FROM releases",
            )
            .unwrap();
        let mut found = Vec::new();
        for row in rows.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(row).unwrap();
            collect_ciphertexts(&v, &mut found);
        }
        found
    };
    let before = ciphertexts();
    assert_eq!(
        before.len(),
        3,
        "the project, its release, the published runbook: {before:?}"
    );
    assert!(
        before
            .iter()
            .all(|c| stolen_variable_key.decrypt(c).is_ok()),
        "the stolen key opens every value"
    );
    let forged = "Your cluster was compromised: call 555-0100";
    let forged_seal = &stolen_hasher.hash(&format!("ui-message {forged}"))[..32];
    let forged_link = format!(
        "/ui/nodes?message={}&seal={forged_seal}",
        forged.replace(' ', "+").replace(':', "%3A")
    );
    let page_of = |n: &cuttle_e2e::Node, link: &str| {
        let signed = send(
            n,
            "POST",
            "/ui/sign-in",
            None,
            Some(&format!("api_key={}", cluster.api_key)),
            &[],
        );
        let cookie = session_of(&signed.set_cookie);
        send(n, "GET", link, Some(&cookie), None, &[]).body
    };
    assert!(
        page_of(&n1, &forged_link).contains("555-0100"),
        "the stolen secret signs"
    );

    // The operator rotates the master key; that alone changes neither data key.
    let new_key = cluster.dir().join("new-master.key");
    let (ok, out) = cluster.run_server(
        &[
            "master-key",
            "rotate",
            "--generate",
            new_key.to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    let new_master = std::fs::read_to_string(&new_key).unwrap().trim().to_owned();
    let with_new_key = |args: &[&str]| {
        let mut cmd = cluster.server_command(args);
        cmd.env("CUTTLE_MASTER_KEY", &new_master);
        cuttle_e2e::run_to_exit(cmd, MIN).unwrap()
    };
    // Not while a node holds the old master key: it could not read the new data keys.
    let (st, _, err) = with_new_key(&["variable-key", "rotate"]);
    assert!(!st.success() && err.contains("n1"), "{err}");
    n1.terminate();
    n1.wait_exit(MIN).unwrap();
    n1.opts
        .env
        .push(("CUTTLE_MASTER_KEY".into(), new_master.clone()));
    cluster.restart(&mut n1);
    assert!(
        ciphertexts()
            .iter()
            .all(|c| stolen_variable_key.decrypt(c).is_ok()),
        "a master-key rotation alone leaves every value open to the stolen key"
    );

    let (st, out, err) = with_new_key(&["variable-key", "rotate"]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("3 sensitive value(s) re-sealed"), "{out}");
    let (st, out, err) = with_new_key(&["api-key-secret", "rotate"]);
    assert!(st.success(), "{out}{err}");

    let after = ciphertexts();
    assert_eq!(after.len(), 3);
    for c in &after {
        assert!(
            stolen_variable_key.decrypt(c).is_err(),
            "the stolen key opens {c}"
        );
    }
    assert_eq!(
        setting("variable_encryption_key_previous"),
        "",
        "the old key is gone"
    );
    // A value written now, by the running node, is sealed with the new key too.
    let (_, vars) = n1.get(&format!("/api/spaces/default/projects/{project}/variables"));
    let kept = vars["variables"][0]["id"].as_str().unwrap().to_owned();
    let (status, saved) = n1.request(
        "PUT",
        &format!("/api/spaces/default/projects/{project}/variables"),
        Some(
            &json!({"version": vars["version"], "variables": [
                {"id": kept, "name": "Password", "sensitive": true},
                {"name": "Token", "value": "tok-after-rotation", "sensitive": true}]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let now = ciphertexts();
    assert_eq!(now.len(), 4);
    assert!(now.iter().all(|c| stolen_variable_key.decrypt(c).is_err()));
    // The old release and the published runbook still deploy the right value.
    let env = production(&n1);
    let (_, releases) = n1.get(&format!("/api/spaces/default/projects/{project}/releases"));
    let release = releases["items"][0]["id"].as_str().unwrap();
    let (status, d) = n1.request_with_key(
        &ci,
        "POST",
        "/api/spaces/default/deployments",
        Some(&json!({"release_id": release, "environment_id": env}).to_string()),
    );
    assert_eq!(status, 201, "the ci key still works: {d}");
    let task = d["task_id"].as_str().unwrap();
    let t = n1.wait_finished(task, MIN);
    let log = n1.task_log(task);
    assert!(
        t["state"] == "Success" && log.contains(&digest),
        "{t}\n{log}"
    );
    let (status, run) = n1.post(&format!("{runbook}/runs"), &json!({"environment_id": env}));
    assert_eq!(status, 201, "{run}");
    let task = run["id"].as_str().unwrap().to_owned();
    let t = n1.wait_finished(&task, MIN);
    let log = n1.task_log(&task);
    assert!(
        t["state"] == "Success" && log.contains(&digest),
        "{t}\n{log}"
    );

    // The stolen secret signs nothing a node shows, and no key is stored under it.
    assert!(!page_of(&n1, &forged_link).contains("555-0100"));
    for key in [&ci, &cluster.api_key] {
        let stale = stolen_hasher.hash(key);
        let n = pg
            .psql(&format!(
                "SELECT COUNT(*) FROM api_keys WHERE key_hash = '{stale}'"
            ))
            .unwrap();
        assert_eq!(
            n.trim(),
            "0",
            "a key in use is re-hashed under the new secret"
        );
    }
    // A key not used since waits: `finish` says which, and revokes it only when told to.
    let (st, out, _) = with_new_key(&["api-key-secret", "status"]);
    assert!(
        st.success() && out.contains("idle") && !out.contains("(ci,"),
        "{out}"
    );
    let (st, _, err) = with_new_key(&["api-key-secret", "finish"]);
    assert!(!st.success() && err.contains("idle"), "{err}");
    let (st, out, err) = with_new_key(&["api-key-secret", "finish", "--force"]);
    assert!(st.success() && out.contains("1 key(s)"), "{out}{err}");
    assert_eq!(setting("api_key_hmac_key_previous"), "");
    cuttle_e2e::wait_until("the idle key to stop working", MIN, || {
        (n1.request_with_key(&idle, "GET", "/api/tasks", None).0 == 401).then_some(())
    });
    assert_eq!(n1.request_with_key(&ci, "GET", "/api/tasks", None).0, 200);
}

/// Every `ciphertext` of a sensitive variable in a stored document or snapshot.
fn collect_ciphertexts(v: &serde_json::Value, found: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(true), Some(c)) = (
                m.get("sensitive").and_then(|s| s.as_bool()),
                m.get("ciphertext").and_then(|c| c.as_str()),
            ) {
                found.push(c.to_owned());
            }
            m.values().for_each(|c| collect_ciphertexts(c, found));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_ciphertexts(c, found)),
        _ => {}
    }
}

/// C-1, as a node is installed: run as a user of its own (not root) with exactly the
/// capabilities the shipped systemd unit gives it, a node still runs scripts isolated — as the
/// script user, with no capability left — stops every process of theirs, and cleans up after
/// them.
#[test]
fn c1_a_node_with_the_unit_s_capabilities_isolates_scripts_without_root() {
    let unit =
        std::fs::read_to_string(cuttle_e2e::deploy_dir().join("systemd/cuttle-server.service"))
            .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit gives the node capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let dir = cuttle_e2e::temp_dir("unprivileged-node");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // `nobody` plays the unit's service user: it owns the data directory and nothing else.
    let ok = std::process::Command::new("chown")
        .args(["nobody:nogroup", data.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    let key = format!("API-{}", "Unpriv1legedNodeKey0123456789abcdefXYZ");
    let http = cuttle_e2e::free_port();
    let mut node = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            "--no-new-privs",
        ])
        .arg(cuttle_e2e::server_binary())
        .arg("run")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CUTTLE_DATA_DIR", &data)
        .env("CUTTLE_NODE_NAME", "unprivileged")
        .env("CUTTLE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env(
            "CUTTLE_GRPC_LISTEN",
            format!("127.0.0.1:{}", cuttle_e2e::free_port()),
        )
        .env(
            "CUTTLE_GATEWAY_LISTEN",
            format!("127.0.0.1:{}", cuttle_e2e::free_port()),
        )
        .env("CUTTLE_ADMIN_API_KEY", &key)
        .env("CUTTLE_MAINTENANCE_SECS", "0")
        .env("CUTTLE_HEALTH_CHECK_SECS", "0")
        .env("CUTTLE_POLL_MS", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let _stop = scopeguard(move || {
        let _ = node.kill();
        let _ = node.wait();
    });
    let agent = cuttle_e2e::agent(None);
    let url = |p: &str| format!("http://127.0.0.1:{http}{p}");
    cuttle_e2e::wait_until("the node to answer", MIN, || {
        agent
            .get(&url("/api/nodes/ping"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    });
    cuttle_e2e::wait_until("the node to say its scripts run isolated", MIN, || {
        let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
        assert!(!log.contains("cannot run scripts isolated"), "{log}");
        log.contains("scripts on this node run isolated")
            .then_some(())
    });
    let script =
        "id; grep Cap /proc/self/status; sleep 600.71 & setsid sleep 600.72 & echo started";
    let mut r = agent
        .post(&url("/api/tasks"))
        .header("X-Api-Key", &key)
        .header("Content-Type", "application/json")
        .send(json!({"kind": "AdHocScript", "arguments": {"script": script}}).to_string())
        .unwrap();
    assert_eq!(r.status(), 201);
    let task: serde_json::Value = r.body_mut().read_json().unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let finished = cuttle_e2e::wait_until("the script to end", MIN, || {
        let mut r = agent
            .get(&url(&format!("/api/tasks/{id}")))
            .header("X-Api-Key", &key)
            .call()
            .ok()?;
        let t: serde_json::Value = r.body_mut().read_json().ok()?;
        (t["completed_at"].is_string()).then_some(t)
    });
    assert_eq!(finished["state"], "Success", "{finished}");
    let text = agent
        .get(&url(&format!("/api/tasks/{id}/log")))
        .header("X-Api-Key", &key)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(text.contains("(cuttle-script)"), "{text}");
    for cap in ["CapPrm", "CapEff", "CapAmb"] {
        assert!(
            text.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {text}"
        );
    }
    // Every process of the script ended with it; its work directory is gone.
    for marker in ["600.71", "600.72"] {
        cuttle_e2e::wait_until("the script's processes to end", MIN, || {
            cuttle_e2e::processes_running(&["sleep", marker])
                .is_empty()
                .then_some(())
        });
    }
    let left: Vec<String> = std::fs::read_dir(data.join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "work directories left: {left:?}");
}

/// Runs `f` when dropped (a panic included).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

//! Attacks of the second security review: C-1 (scripts on a node read nothing of it; the scopes of
//! task kinds), H-1 (output variables), H-2 (artifacts), H-3 (masking; the script's text).

use super::*;

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
        .env("CUTTLE_PUBLIC_GRPC_LISTEN", "")
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

//! Tentacles end to end: two nodes, two polling tentacles (each with a session to both
//! gateways) and one listening tentacle, all real processes over mutual TLS.
//!
//! Past 800 lines for a reason: each test is one documented promise, end to end, with the
//! setup it needs in plain sight; splitting them would scatter the promises of one area.

use std::time::Duration;

use cuttle_e2e::{
    process_gone, report, temp_dir, wait_until, Cluster, Database, Node, NodeOptions, Tentacle,
};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);

cuttle_e2e::on_every_database!(
    scripts_reach_polling_and_listening_tentacles_through_any_node,
    health_checks_run_once_per_period_and_record_each_target,
);

fn register(t: &Tentacle, node: &Node, api_key: &str, comms: &str, extra: &[&str]) -> String {
    node.make_environments(&["Test"]);
    let server = node.url("");
    let mut args = vec![
        "register",
        "--server",
        &server,
        "--api-key",
        api_key,
        "--name",
        &t.name,
        "--environment",
        "Test",
        "--role",
        "web",
        "--new-role",
        "--comms",
        comms,
    ];
    args.extend_from_slice(extra);
    let out = t.command(&args);
    out.split_whitespace()
        .find(|w| w.starts_with("Machines-"))
        .unwrap_or_else(|| panic!("no target id in {out:?}"))
        .to_owned()
}

fn target(node: &Node, id: &str) -> Value {
    let (status, t) = node.get(&format!("/api/targets/{id}"));
    assert_eq!(status, 200, "{t}");
    t
}

fn script_on(node: &Node, script: &str, on: Value) -> String {
    let mut args = json!({ "script": script });
    for (k, v) in on.as_object().unwrap() {
        args[k] = v.clone();
    }
    node.enqueue(json!({"kind": "AdHocScript", "arguments": args}))
}

fn scripts_reach_polling_and_listening_tentacles_through_any_node(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 2));
    let n2 = cluster.start(NodeOptions::named("n2", 2));
    let dir = temp_dir("tentacles");
    let key = cluster.api_key.clone();

    let mut p1 = Tentacle::new(dir.path(), "p1");
    let mut p2 = Tentacle::new(dir.path(), "p2");
    let mut l1 = Tentacle::new(dir.path(), "l1");
    let p1_id = register(&p1, &n1, &key, "polling", &[]);
    let p2_id = register(&p2, &n2, &key, "polling", &[]);
    let port = cuttle_e2e::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let l1_id = register(
        &l1,
        &n1,
        &key,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    assert_eq!(target(&n2, &l1_id)["endpoint"], listen);
    assert_eq!(target(&n2, &p1_id)["thumbprint"], p1.thumbprint());
    for t in [&mut p1, &mut p2, &mut l1] {
        t.start();
    }
    wait_until("l1 to listen", MIN, || {
        l1.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });
    // Each polling tentacle holds a session with both gateways.
    for id in [&p1_id, &p2_id] {
        wait_until(&format!("{id} connected to both nodes"), MIN, || {
            (target(&n1, id)["connected_nodes"] == json!(["n1", "n2"])).then_some(())
        });
    }

    // One script, every target: output of each lands in the log, prefixed by its name.
    let id = script_on(
        &n1,
        "echo \"hello from $CUTTLE_TARGET_NAME\"; echo oops >&2",
        json!({"roles": ["web"]}),
    );
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}\n{}", n1.task_log(&id));
    let log = n1.task_log(&id);
    for name in ["p1", "p2", "l1"] {
        assert!(
            log.contains(&format!("OUT   [{name}] hello from {name}")),
            "{log}"
        );
        assert!(log.contains(&format!("ERR   [{name}] oops")), "{log}");
    }

    // Scripts on targets start with a clean environment: the task's variables and the basics,
    // never the agent's own settings.
    let id = script_on(&n1, "env", json!({"targets": [p1_id]}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
    let log = n1.task_log(&id);
    assert!(log.contains("OUT   [p1] CUTTLE_TARGET_NAME=p1"), "{log}");
    assert!(log.contains("OUT   [p1] PATH="), "{log}");
    assert!(!log.contains("CUTTLE_TENTACLE_HOME"), "{log}");

    // Another shell, chosen per task.
    let id = n1.enqueue(json!({"kind": "AdHocScript", "arguments": {
        "script": "echo \"shell=${BASH_VERSION:+bash}\"", "shell": "bash", "targets": [l1_id]}}));
    assert_eq!(n1.wait_finished(&id, MIN)["state"], "Success");
    assert!(
        n1.task_log(&id).contains("OUT   [l1] shell=bash"),
        "{}",
        n1.task_log(&id)
    );
    let (status, _) = n1.post(
        "/api/tasks",
        &json!({"kind": "AdHocScript", "arguments": {
        "script": "x", "shell": "cmd.exe", "targets": [l1_id]}}),
    );
    assert_eq!(status, 400);

    // A failing script on one target fails the task and says where.
    let id = script_on(&n2, "exit 3", json!({"targets": [p2_id]}));
    let t = n2.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("p2 exited with code 3"),
        "{t}"
    );

    // n1 dies: the polling tentacles are still reached, through n2's gateway.
    n1.kill9();
    let id = script_on(
        &n2,
        "echo still here",
        json!({"targets": [p1_id, p2_id, l1_id]}),
    );
    let t = n2.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}\n{}", n2.task_log(&id));
    let log = n2.task_log(&id);
    for name in ["p1", "p2", "l1"] {
        assert!(log.contains(&format!("OUT   [{name}] still here")), "{log}");
    }

    // Cancel ends the remote process tree — SIGTERM first, so the script's trap cleans up.
    let pidfile = dir.path().join("remote.pid");
    let cleaned = dir.path().join("cleaned-up");
    let script = format!(
        "trap 'echo trapped > {}; exit 1' TERM; sleep 600 & echo $! > {}; echo started; wait",
        cleaned.display(),
        pidfile.display()
    );
    let id = script_on(&n2, &script, json!({"targets": [p1_id]}));
    wait_until("the remote script to start", MIN, || {
        n2.task_log(&id)
            .contains("OUT   [p1] started")
            .then_some(())
    });
    let pid = cuttle_e2e::read_pid(&pidfile);
    let (status, _) = n2.post(&format!("/api/tasks/{id}/cancel"), &json!({}));
    assert_eq!(status, 202);
    assert_eq!(n2.wait_finished(&id, MIN)["state"], "Canceled");
    wait_until("the remote sleep to be killed", MIN, || {
        process_gone(pid).then_some(())
    });
    // The script's TERM trap ran before anything was killed.
    wait_until("the script's TERM trap to have run", MIN, || {
        (std::fs::read_to_string(&cleaned).ok()?.trim() == "trapped").then_some(())
    });

    // "No process outlives its task", on a tentacle too: a script that ends Success while a
    // `setsid` child of its own still runs takes that child with it.
    let script = "setsid sleep 600.31 < /dev/null > /dev/null 2>&1 & echo left behind";
    let id = script_on(&n2, script, json!({"targets": [p1_id, l1_id]}));
    let t = n2.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}\n{}", n2.task_log(&id));
    assert!(
        cuttle_e2e::processes_running(&["sleep", "600.31"]).is_empty(),
        "a setsid child outlived its script on a tentacle"
    );
}

#[test]
fn unknown_tentacles_and_forged_servers_are_refused() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let dir = temp_dir("refused");
    let key = cluster.api_key.clone();
    let good = Tentacle::new(dir.path(), "good");
    let good_id = register(&good, &n1, &key, "polling", &[]);
    let config = std::fs::read_to_string(good.config_path()).unwrap();

    // A tentacle the cluster never registered, configured to poll the same gateway.
    let mut stranger = Tentacle::new(dir.path(), "stranger");
    std::fs::write(stranger.config_path(), &config).unwrap();
    stranger.start();
    wait_until("the stranger to be refused", MIN, || {
        n1.stderr_text()
            .contains("refused a tentacle connection")
            .then_some(())
    });
    wait_until("the stranger to learn it was refused", MIN, || {
        let log = stranger.log_text();
        (log.contains("session with gateway lost") && log.contains("AccessDenied")).then_some(())
    });
    let marker = dir.path().join("ran");
    // Registered, the real tentacle connects; the stranger never held a session.
    let mut good = good;
    good.start();
    wait_until("the registered tentacle to connect", MIN, || {
        (target(&n1, &good_id)["connected_nodes"] == json!(["n1"])).then_some(())
    });
    let sessions = n1.stderr_text().matches("tentacle connected").count();
    assert_eq!(
        sessions, 1,
        "only the registered tentacle ever held a session"
    );
    let (_, targets) = n1.get("/api/targets");
    assert_eq!(targets["items"].as_array().unwrap().len(), 1, "{targets}");

    // A tentacle expecting another cluster certificate refuses the real gateway: to it, the
    // node is a forgery. Nothing runs on it.
    let mut wary = Tentacle::new(dir.path(), "wary");
    let forged = config.replace(
        &config
            .lines()
            .find(|l| l.starts_with("cluster_thumbprint"))
            .unwrap()
            .to_owned(),
        &format!("cluster_thumbprint = \"{}\"", "AB".repeat(32)),
    );
    std::fs::write(wary.config_path(), forged).unwrap();
    // Same thumbprint registered as a target, so only the tentacle's own check can refuse.
    let (status, body) = n1.post(
        "/api/targets",
        &json!({"name": "wary", "comms": "polling", "thumbprint": wary.thumbprint()}),
    );
    assert_eq!(status, 201, "{body}");
    wary.start();
    wait_until("the wary tentacle to refuse the gateway", MIN, || {
        wary.log_text()
            .contains("invalid peer certificate")
            .then_some(())
    });
    let id = script_on(
        &n1,
        &format!("touch {}", marker.display()),
        json!({"targets": [body["id"]]}),
    );
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("no gateway holds a session"),
        "{t}"
    );
    assert!(
        !marker.exists(),
        "nothing ran on a tentacle that refused the cluster"
    );
}

fn health_checks_run_once_per_period_and_record_each_target(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let opts = |name: &str| NodeOptions {
        env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "2".into())],
        ..NodeOptions::named(name, 2)
    };
    let n1 = cluster.start(opts("n1"));
    let _n2 = cluster.start(opts("n2"));
    let dir = temp_dir("health");
    let key = cluster.api_key.clone();
    let mut up = Tentacle::new(dir.path(), "up");
    let up_id = register(&up, &n1, &key, "polling", &[]);
    let down = Tentacle::new(dir.path(), "down");
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    let down_id = register(
        &down,
        &n1,
        &key,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    up.start(); // `down` is never started
    let health = |id: &str| target(&n1, id)["health"].as_str().unwrap().to_owned();
    wait_until("the running tentacle to be Healthy", MIN, || {
        (health(&up_id) == "Healthy").then_some(())
    });
    wait_until("the stopped one to be Unavailable", MIN, || {
        (health(&down_id) == "Unavailable").then_some(())
    });
    let t = target(&n1, &down_id);
    assert!(
        t["health_reason"]
            .as_str()
            .unwrap()
            .contains("connect to 127.0.0.1"),
        "{t}"
    );
    assert!(t["last_health_check"].is_string(), "{t}");
    let t = target(&n1, &up_id);
    assert!(
        t["health_reason"].as_str().unwrap().contains("GiB free"),
        "{t}"
    );

    // Two schedulers, several periods: one check per period.
    let periodic = || -> Vec<String> {
        let (_, list) = n1.get("/api/tasks?limit=200");
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "HealthCheck")
            .map(|t| t["description"].as_str().unwrap().to_owned())
            .collect()
    };
    let checks = wait_until("three periodic checks", MIN, || {
        let c = periodic();
        (c.len() >= 3).then_some(c)
    });
    let mut unique = checks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        checks.len(),
        "a period was checked twice: {checks:?}"
    );
    assert!(checks
        .iter()
        .all(|d| d.starts_with("Periodic health check (period ")));

    // On demand, for one target.
    let id = n1.enqueue(json!({"kind": "HealthCheck", "arguments": {"targets": [up_id]}}));
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}");
    assert!(n1.task_log(&id).contains("[up] Healthy"));
}

/// Peak resident memory of a process, from `/proc/PID/status` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_large_file_goes_to_tentacles_and_back_intact_in_constant_memory() {
    const SIZE_MIB: usize = 200;
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let dir = temp_dir("push");
    let key = cluster.api_key.clone();
    let mut polling = Tentacle::new(dir.path(), "polling");
    let polling_id = register(&polling, &n1, &key, "polling", &[]);
    let mut listening = Tentacle::new(dir.path(), "listening");
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    let listening_id = register(
        &listening,
        &n1,
        &key,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    polling.start();
    listening.start();
    wait_until("the polling tentacle to connect", MIN, || {
        (target(&n1, &polling_id)["connected_nodes"] == json!(["n1"])).then_some(())
    });

    // A 200 MiB package in the shared store (varied bytes, so a mix-up cannot hash the same).
    let packages = cluster.shared_dir().join("Packages");
    std::fs::create_dir_all(&packages).unwrap();
    let source = packages.join("app-1.0.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for i in 0..SIZE_MIB {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i * 31 + j * 7 + j / 251) as u8;
            }
            f.write_all(&block).unwrap();
        }
    }
    let expected = sha256sum(&source);
    let before: Vec<u64> = [&polling, &listening]
        .iter()
        .map(|t| peak_rss_kib(t.pid().unwrap()))
        .collect();

    let id = n1.enqueue(json!({"kind": "PushFile", "arguments": {
        "source": "Packages/app-1.0.bin", "destination": "apps/app-1.0.bin",
        "targets": [polling_id, listening_id]}}));
    let t = n1.wait_finished(&id, Duration::from_secs(300));
    assert_eq!(t["state"], "Success", "{t}\n{}", n1.task_log(&id));
    let log = n1.task_log(&id);
    for (tentacle, rss_before) in [&polling, &listening].into_iter().zip(before) {
        let file = tentacle.home.join("files/apps/app-1.0.bin");
        assert_eq!(sha256sum(&file), expected, "{}", tentacle.name);
        assert!(
            log.contains(&format!(
                "[{}] received {} bytes",
                tentacle.name,
                SIZE_MIB << 20
            )),
            "{log}"
        );
        let peak = peak_rss_kib(tentacle.pid().unwrap());
        // Streamed: the tentacle never holds more than a few chunks of the file.
        assert!(
            peak < rss_before + 48 * 1024,
            "{}: peak memory grew from {rss_before} KiB to {peak} KiB for a {SIZE_MIB} MiB file",
            tentacle.name
        );
        cuttle_e2e::report(format!(
            "{}: peak RSS {rss_before} KiB before, {peak} KiB after receiving {SIZE_MIB} MiB",
            tentacle.name
        ));
    }
    // Nothing half-written is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(polling.home.join("files/apps"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // And back: each target's copy collected as an artifact of a PullFile task.
    let id = n1.enqueue(json!({"kind": "PullFile", "arguments": {
        "source": "apps/app-1.0.bin", "targets": [polling_id, listening_id]}}));
    let t = n1.wait_finished(&id, Duration::from_secs(300));
    assert_eq!(t["state"], "Success", "{t}\n{}", n1.task_log(&id));
    for name in ["polling", "listening"] {
        let artifact = cluster
            .shared_dir()
            .join(format!("Artifacts/{id}/{name}/app-1.0.bin"));
        assert_eq!(sha256sum(&artifact), expected, "{name}");
    }
    let in_progress = cluster.shared_dir().join("Artifacts/InProgress/n1");
    assert_eq!(std::fs::read_dir(in_progress).unwrap().count(), 0);
    // A file that is not there fails the task and says so.
    let id = n1.enqueue(json!({"kind": "PullFile", "arguments": {
        "source": "apps/missing.bin", "targets": [listening_id]}}));
    let t = n1.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Failed");
    assert!(t["error"].as_str().unwrap().contains("no file"), "{t}");

    // A path that would leave the files directory is refused before anything is queued.
    let (status, err) = n1.post(
        "/api/tasks",
        &json!({"kind": "PushFile", "arguments": {
        "source": "Packages/app-1.0.bin", "destination": "../escape", "targets": [polling_id]}}),
    );
    assert_eq!(status, 400, "{err}");
}

#[test]
fn one_load_balanced_address_is_enough_for_every_node() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let nodes: Vec<Node> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 1)))
        .collect();
    let lb = cuttle_e2e::Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let dir = temp_dir("balanced");
    let mut solo = Tentacle::new(dir.path(), "solo");
    let id = register(&solo, &nodes[0], &cluster.api_key, "polling", &[]);
    // Only the balancer's address: the tentacle holds one session, with whichever node.
    let config = std::fs::read_to_string(solo.config_path()).unwrap();
    let gateways = config.lines().find(|l| l.starts_with("gateways")).unwrap();
    let balanced = format!("gateways = [\"127.0.0.1:{}\"]", lb.tentacle_port);
    std::fs::write(solo.config_path(), config.replace(gateways, &balanced)).unwrap();
    solo.start();
    let holder = wait_until("one session through the balancer", MIN, || {
        let connected = target(&nodes[0], &id)["connected_nodes"].clone();
        (connected.as_array()?.len() == 1).then_some(connected[0].as_str()?.to_owned())
    });
    // Every node's worker reaches it: scripts spread over the three (cap 1 each).
    let tasks: Vec<String> = (0..6)
        .map(|i| {
            script_on(
                &nodes[i % 3],
                "sleep 1; echo done",
                json!({"targets": [id]}),
            )
        })
        .collect();
    let mut ran_on = std::collections::HashSet::new();
    for task in &tasks {
        let t = nodes[0].wait_finished(task, MIN);
        assert_eq!(t["state"], "Success", "{t}");
        ran_on.insert(t["node"].as_str().unwrap().to_owned());
    }
    assert!(
        ran_on.iter().any(|n| *n != holder),
        "a node without the session ran a script through {holder}'s gateway: {ran_on:?}"
    );
}

#[test]
fn a_tentacle_with_an_expired_certificate_is_refused_even_when_registered() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let dir = temp_dir("expired");
    let mut old = Tentacle::new(dir.path(), "old");
    let id = register(&old, &n1, &cluster.api_key, "polling", &[]);
    // Its certificate is replaced by one that expired yesterday, and registered as such.
    let now = time::OffsetDateTime::now_utc();
    let expired = cuttle_tls::Identity::generate_valid_between(
        "old",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let (cert, key) = expired.to_pem();
    std::fs::write(old.home.join("tentacle.crt"), cert).unwrap();
    std::fs::write(old.home.join("tentacle.key"), key).unwrap();
    let (status, t) = n1.patch(
        &format!("/api/targets/{id}"),
        &json!({"thumbprint": expired.thumbprint().to_string()}),
    );
    assert_eq!(status, 200, "{t}");
    old.start();
    wait_until("the gateway to refuse the expired certificate", MIN, || {
        n1.stderr_text()
            .lines()
            .any(|l| l.contains("refused a tentacle connection") && l.contains("Expired"))
            .then_some(())
    });
    assert!(!n1.stderr_text().contains("tentacle connected"));
    assert_eq!(target(&n1, &id)["connected_nodes"], json!([]));
}

#[test]
fn register_pins_the_cluster_and_never_sends_the_key_to_another() {
    let dir = temp_dir("pinning");
    let t = Tentacle::new(dir.path(), "t1");
    let pinned = "CD".repeat(32);
    let args = |server: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "register",
            "--server",
            server,
            "--api-key",
            "API-SECRET-KEY-1234",
            "--name",
            "t1",
            "--comms",
            "polling",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let run = |a: Vec<String>| t.try_command(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // A server presenting another cluster: refused, and it never sees the key.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fake.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let mut requests = Vec::new();
        fake.set_nonblocking(false).unwrap();
        // One connection is all a client that stops at the identity makes.
        if let Ok((mut conn, _)) = fake.accept() {
            use std::io::{Read, Write};
            conn.set_read_timeout(Some(MIN)).unwrap();
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body =
                json!({"thumbprint": "AB".repeat(32), "gateways": ["127.0.0.1:1"]}).to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        requests
    });
    let (ok, _, err) = run(args(
        &format!("http://127.0.0.1:{port}"),
        &["--cluster-thumbprint", &pinned],
    ));
    assert!(!ok);
    assert!(err.contains("not the pinned"), "{err}");
    let requests = seen.join().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /api/cluster/identity"),
        "{requests:?}"
    );
    assert!(!requests[0].contains("API-SECRET-KEY-1234"), "{requests:?}");
    assert!(!t.config_path().exists(), "nothing was saved");

    // Plain HTTP to another host: refused before any request is made.
    let (ok, _, err) = run(args("http://cuttle.invalid:8080", &[]));
    assert!(!ok);
    assert!(err.contains("--insecure"), "{err}");

    // The real cluster, pinned: registered; unpinned, the thumbprint trusted is printed.
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let (_, identity) = n1.get("/api/cluster/identity");
    let thumb = identity["thumbprint"].as_str().unwrap().to_owned();
    let id = register(
        &t,
        &n1,
        &cluster.api_key,
        "polling",
        &["--cluster-thumbprint", &thumb],
    );
    assert_eq!(target(&n1, &id)["name"], "t1");
    let t2 = Tentacle::new(dir.path(), "t2");
    let (ok, _, err) = t2.try_command(&[
        "register",
        "--server",
        &n1.url(""),
        "--api-key",
        &cluster.api_key,
        "--name",
        "t2",
        "--comms",
        "polling",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("--cluster-thumbprint {thumb}")),
        "{err}"
    );
}

#[test]
fn a_thousand_idle_connections_do_not_keep_the_cluster_from_a_listening_tentacle() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = temp_dir("idle");
    let mut l1 = Tentacle::new(dir.path(), "l1");
    let port = cuttle_e2e::free_port();
    let listen = format!("127.0.0.1:{port}");
    let id = register(
        &l1,
        &n1,
        &cluster.api_key,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    // A small host's open-file limit: 1,000 held connections would exhaust it.
    l1.start_with_open_file_limit(256);
    wait_until("l1 to listen", MIN, || {
        l1.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });
    let run = |what: &str| {
        let task = script_on(&n1, &format!("echo {what}"), json!({"targets": [id]}));
        let t = n1.wait_finished(&task, MIN);
        assert_eq!(t["state"], "Success", "{what}: {t}\n{}", n1.task_log(&task));
    };
    run("before");
    // 1,000 connections from another address that never start a handshake.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let idle: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..1000 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            // A tentacle that stopped accepting leaves the kernel's backlog full, and a
            // connect then waits: bounded, so that shows as a failure below, not a hang here.
            let connect = socket.connect(listen.parse().unwrap());
            match tokio::time::timeout(Duration::from_secs(2), connect).await {
                Ok(Ok(c)) => idle.push(c),
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
        idle
    });
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    report(format!("{} idle connections held", idle.len()));
    // The cluster still reaches it, while they are all held open.
    run("during");
    drop(idle);
    assert!(
        l1.pid().is_some_and(|p| !process_gone(p as i32)),
        "the tentacle survived"
    );
}

#[test]
fn a_replaced_thumbprint_cuts_the_old_certificates_sessions_on_every_gateway() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 1));
    let dir = temp_dir("cut");
    let mut p1 = Tentacle::new(dir.path(), "p1");
    let id = register(&p1, &n1, &cluster.api_key, "polling", &[]);
    p1.start();
    wait_until("p1 to hold a session with both gateways", MIN, || {
        (target(&n1, &id)["connected_nodes"] == json!(["n1", "n2"])).then_some(())
    });
    // The operator replaces the certificate (say, the old key leaked).
    let (status, body) = n2.patch(
        &format!("/api/targets/{id}"),
        &json!({"thumbprint": "EF".repeat(32)}),
    );
    assert_eq!(status, 200, "{body}");
    // At once: work is no longer relayed to the old certificate...
    let marker = dir.path().join("ran");
    let task = script_on(
        &n1,
        &format!("touch {}", marker.display()),
        json!({"targets": [id]}),
    );
    let t = n1.wait_finished(&task, MIN);
    assert_eq!(t["state"], "Failed", "{t}");
    assert!(
        !marker.exists(),
        "nothing ran with the replaced certificate"
    );
    // ...and every gateway drops its session within its trust refresh.
    wait_until("both sessions to be cut", MIN, || {
        (target(&n1, &id)["connected_nodes"] == json!([])).then_some(())
    });
    wait_until("the tentacle to see them end", MIN, || {
        (p1.log_text().matches("session with gateway lost").count()
            + p1.log_text().matches("gateway closed the session").count()
            >= 2)
            .then_some(())
    });
}

/// Runs a `cuttle-server` command that must succeed; returns its stdout.
fn server_ok(cluster: &Cluster, args: &[&str]) -> String {
    let (st, out, err) = cuttle_e2e::run_to_exit(cluster.server_command(args), MIN).unwrap();
    assert!(st.success(), "{args:?}: exit {st}\n{out}\n{err}");
    out
}

/// Runs a `cuttle-server` command that must fail; returns its stderr.
fn server_refused(cluster: &Cluster, args: &[&str]) -> String {
    let (st, out, err) = cuttle_e2e::run_to_exit(cluster.server_command(args), MIN).unwrap();
    assert!(!st.success(), "{args:?} should fail:\n{out}");
    err
}

fn presented(node: &Node) -> String {
    node.get("/api/cluster/identity").1["thumbprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A script on every target through `node`, which must run it (the other node's cap is 0).
fn script_everywhere_through(node: &Node, other: &Node, expect: usize) {
    assert_eq!(
        other
            .patch(
                &format!("/api/nodes/{}", other.name),
                &json!({"task_cap": 0})
            )
            .0,
        200
    );
    assert_eq!(
        node.patch(
            &format!("/api/nodes/{}", node.name),
            &json!({"task_cap": 2})
        )
        .0,
        200
    );
    let id = script_on(
        node,
        "echo \"at $CUTTLE_TARGET_NAME\"",
        json!({"roles": ["web"]}),
    );
    let t = node.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}\n{}", node.task_log(&id));
    assert_eq!(t["node"], node.name.as_str());
    let log = node.task_log(&id);
    assert_eq!(log.matches("OUT   [").count(), expect, "{log}");
}

fn health_check(node: &Node) {
    let id = node.enqueue(json!({"kind": "HealthCheck", "arguments": {}}));
    let t = node.wait_finished(&id, MIN);
    assert_eq!(t["state"], "Success", "{t}\n{}", node.task_log(&id));
}

fn restart(cluster: &Cluster, node: &mut Node) {
    node.terminate();
    assert!(node.wait_exit(MIN).unwrap().success());
    cluster.restart(node);
}

#[test]
fn the_cluster_certificate_is_rotated_without_losing_a_tentacle() {
    let cluster = Cluster::sqlite();
    let mut n1 = cluster.start(NodeOptions::named("n1", 2));
    let mut n2 = cluster.start(NodeOptions::named("n2", 2));
    let dir = temp_dir("rotation");
    let key = cluster.api_key.clone();
    let mut p1 = Tentacle::new(dir.path(), "p1");
    let mut l1 = Tentacle::new(dir.path(), "l1");
    let p1_id = register(&p1, &n1, &key, "polling", &[]);
    // l1 registers with a key good for its own registration and nothing else.
    let (status, made) = n1.post(
        "/api/keys",
        &json!({"name": "l1 bootstrap", "scope": "register-target", "target": "l1", "expires_in": "1h", "environments": ["Test"], "roles": ["web"]}),
    );
    assert_eq!(status, 201, "{made}");
    let l1_key = made["key"].as_str().unwrap().to_owned();
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    let l1_id = register(
        &l1,
        &n1,
        &l1_key,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    // Used up by the registration: it opens nothing afterwards.
    assert_eq!(
        n1.request_with_key(&l1_key, "GET", "/api/tasks", None).0,
        401
    );
    p1.start();
    l1.start();
    let connected_to_both = |node: &Node| {
        wait_until("p1 connected to both gateways", MIN, || {
            (target(node, &p1_id)["connected_nodes"] == json!(["n1", "n2"])).then_some(())
        });
    };
    connected_to_both(&n1);
    wait_until("l1 to listen", MIN, || {
        l1.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });
    let old = presented(&n1);
    script_everywhere_through(&n1, &n2, 2);

    // Stage: the nodes accept the new certificate; tentacles trust it from their next check.
    let out = server_ok(&cluster, &["cluster-certificate", "stage"]);
    let new = out
        .split_whitespace()
        .find(|w| w.len() == 64 + 1 && w.ends_with(':'))
        .map(|w| w.trim_end_matches(':').to_owned())
        .unwrap_or_else(|| panic!("no thumbprint in {out}"));
    assert_ne!(new, old);
    let err = server_refused(&cluster, &["cluster-certificate", "activate"]);
    assert!(
        err.contains("p1") && err.contains("l1"),
        "refused naming the targets: {err}"
    );
    // Nodes re-read the staged certificate every 2 s; a check after that tells the tentacles.
    wait_until("the tentacles to trust both certificates", MIN, || {
        health_check(&n1);
        let mut both = vec![old.clone(), new.clone()];
        both.sort();
        [&p1_id, &l1_id]
            .iter()
            .all(|id| target(&n1, id)["cluster_trust"] == json!(both))
            .then_some(())
    });
    let kept = std::fs::read_to_string(p1.config_path()).unwrap();
    assert!(kept.contains(&new), "kept across restarts: {kept}");
    let status = server_ok(&cluster, &["cluster-certificate", "status"]);
    assert!(
        status.contains("every target trusts the staged certificate"),
        "{status}"
    );

    // Activate: nodes present the new certificate from their restart, one at a time.
    server_ok(&cluster, &["cluster-certificate", "activate"]);
    let err = server_refused(&cluster, &["cluster-certificate", "finish"]);
    assert!(
        err.contains("n1") && err.contains("n2") && err.contains("restart"),
        "{err}"
    );
    restart(&cluster, &mut n1);
    assert_eq!(presented(&n1), new);
    assert_eq!(presented(&n2), old, "n2 still runs with the old one");
    connected_to_both(&n2);
    // Both kinds of tentacle, and the nodes with each other, work across the two certificates.
    script_everywhere_through(&n1, &n2, 2);
    script_everywhere_through(&n2, &n1, 2);
    restart(&cluster, &mut n2);
    assert_eq!(presented(&n2), new);
    connected_to_both(&n1);

    // Finish: the old certificate is accepted nowhere, and tentacles drop it at their next check.
    server_ok(&cluster, &["cluster-certificate", "finish"]);
    wait_until(
        "the tentacles to trust only the new certificate",
        MIN,
        || {
            health_check(&n2);
            [&p1_id, &l1_id]
                .iter()
                .all(|id| target(&n2, id)["cluster_trust"] == json!([new]))
                .then_some(())
        },
    );
    let kept = std::fs::read_to_string(l1.config_path()).unwrap();
    assert!(
        kept.contains(&new) && !kept.contains(&format!("\"{old}\"]")),
        "{kept}"
    );
    script_everywhere_through(&n2, &n1, 2);
    // A tentacle restarted now trusts what it was last told.
    p1.stop();
    p1.start();
    connected_to_both(&n1);
    script_everywhere_through(&n1, &n2, 2);
    let status = server_ok(&cluster, &["cluster-certificate", "status"]);
    assert!(
        status.contains(&format!("current:  {new}")) && status.contains("retired:  none"),
        "{status}"
    );
    for n in [&n1, &n2] {
        assert!(
            n.unexpected_errors().is_empty(),
            "{}: {:?}",
            n.name,
            n.unexpected_errors()
        );
    }
}

//! The public gRPC API (`cuttle.v1`) through a client written apart from the server:
//! `tests/grpc/client.py`, Python's grpcio with stubs generated from `proto/` at test time. It
//! finds the services by reflection, checks health, makes an environment, a project with a
//! one-step process and variables, a release and a deployment, follows `Deployments.Watch` and
//! `Tasks.WatchLog` to the end, queues a task, and gets the right status code (and `google.rpc`
//! details) for a bad key, a missing scope, an unknown id, a stale version, a name taken and bad
//! arguments; uploads a package by streaming and downloads it whole and by range (200 MiB
//! against one node, whose memory stays flat). Over the node's own TLS, and through the shipped
//! haproxy and nginx configurations.
//!
//! The Python environment is `scripts/test.sh`'s (`CUTTLE_TEST_PYTHON`, from
//! `tests/requirements.txt`).

use std::path::{Path, PathBuf};
use std::process::Command;

use cuttle_e2e::{
    peak_rss_kib, Cluster, Haproxy, HttpsTrust, Nginx, NodeOptions, TestCertificates,
};
use serde_json::json;

fn python() -> PathBuf {
    cuttle_e2e::test_python()
}

/// Runs the client against `target`, trusting the CA in `ca_pem`; panics with its output
/// unless every check passed. The stream limit is per node: checked only against one node.
fn run_client(dir: &Path, target: &str, ca_pem: &str, admin: &str, reader: &str, suffix: &str) {
    run_client_with(dir, target, ca_pem, (admin, reader), suffix, &[]);
}

fn run_client_with(
    dir: &Path,
    target: &str,
    ca_pem: &str,
    (admin, reader): (&str, &str),
    suffix: &str,
    env: &[(&str, &str)],
) {
    let ca = dir.join(format!("grpc-ca-{suffix}.pem"));
    std::fs::write(&ca, ca_pem).unwrap();
    let proto = root().join("proto");
    let mut settings = vec![
        ("CUTTLE_GRPC_TARGET", target),
        ("CUTTLE_KEY", admin),
        ("CUTTLE_READER_KEY", reader),
        ("CUTTLE_SUFFIX", suffix),
    ];
    settings.extend(env.iter().copied());
    let mut cmd = Command::new(python());
    cmd.env("CUTTLE_GRPC_CA", &ca)
        .env("CUTTLE_PROTO_DIR", proto);
    run_script(cmd, "client.py", &settings);
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `tests/grpc/{script}` with `settings`; panics with its output unless it passed every
/// check.
fn run_script(mut cmd: Command, script: &str, settings: &[(&str, &str)]) {
    let out = cmd
        .arg(root().join("tests/grpc").join(script))
        .envs(settings.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run tests/grpc/{script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("all checks passed"),
        "tests/grpc/{script} failed:\n{text}"
    );
}

#[test]
fn a_python_client_drives_the_public_grpc_api_over_the_nodes_tls() {
    let cluster = Cluster::sqlite();
    let dir = cluster.dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let certs = TestCertificates::new(&["127.0.0.1"]).unwrap();
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&cert, &certs.cert_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    let node = cluster.start(NodeOptions {
        env: vec![
            ("CUTTLE_HTTP_TLS_CERT".into(), cert.display().to_string()),
            ("CUTTLE_HTTP_TLS_KEY".into(), key.display().to_string()),
        ],
        https: Some(HttpsTrust::Ca(certs.ca_pem.clone())),
        ..NodeOptions::named("n1", 2)
    });
    let (_, reader) = node.create_key(&json!({"name": "grpc-reader", "scope": "reader"}));
    let target = format!("127.0.0.1:{}", node.public_grpc_port);
    let keys = (cluster.api_key.as_str(), reader.as_str());
    // A target an operator registers over REST, for the client to place and remove.
    let (status, registered) = node.post(
        "/api/targets",
        &json!({"name": "registered-over-rest", "environments": [], "roles": ["web"],
                "new_roles": true, "comms": "listening", "endpoint": "192.0.2.10:10933",
                "thumbprint": "A".repeat(64)}),
    );
    assert_eq!(status, 201, "{registered}");
    let target_id = registered["id"].as_str().unwrap().to_owned();
    // 200 MiB up and down: the node's memory stays flat.
    let env = [
        ("CUTTLE_CHECK_STREAM_LIMIT", "1"),
        ("CUTTLE_PACKAGE_MIB", "200"),
        ("CUTTLE_CHECK_DRAIN", "1"),
        ("CUTTLE_TARGET_ID", target_id.as_str()),
    ];
    let before = peak_rss_kib(node.pid().unwrap());
    run_client_with(&dir, &target, &certs.ca_pem, keys, "tls", &env);
    let grew = peak_rss_kib(node.pid().unwrap()).saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "the node's peak RSS grew by {grew} KiB while 200 MiB went up and down"
    );
    // `/metrics` counted the calls by method and status, a stream's status too (it comes in
    // its trailers), and the package's bytes both ways.
    let (_, text) = node.get("/metrics");
    let text = text.as_str().expect("metrics text");
    let sample = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    for (series, want) in [
        (
            "cuttle_grpc_requests_total{code=\"PermissionDenied\",method=\"cuttle.v1.Nodes/Delete\"}",
            1.0,
        ),
        (
            "cuttle_grpc_requests_total{code=\"NotFound\",method=\"cuttle.v1.Nodes/Delete\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(series), want, "{series}");
    }
    assert!(
        sample("cuttle_grpc_requests_total{code=\"OK\",method=\"cuttle.v1.Packages/Download\"}")
            >= 1.0
    );
    assert!(
        sample("cuttle_grpc_request_duration_seconds_count{method=\"cuttle.v1.Packages/Upload\"}")
            >= 1.0
    );
    let mib200 = 200.0 * 1024.0 * 1024.0;
    assert!(sample("cuttle_package_bytes_total{direction=\"in\"}") >= mib200);
    assert!(sample("cuttle_package_bytes_total{direction=\"out\"}") >= mib200);
    let https = sample("cuttle_certificate_expiry_timestamp_seconds{certificate=\"https\"}");
    assert!(https > 1.7e9, "the HTTPS certificate's expiry: {https}");
}

/// Through the shipped haproxy and nginx configurations in turn, in front of one cluster of
/// three nodes on PostgreSQL: each call may land on any node.
#[test]
fn a_python_client_drives_the_public_grpc_api_through_haproxy_and_nginx() {
    let cluster = Cluster::postgres();
    let nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 2)))
        .collect();
    let three = [&nodes[0], &nodes[1], &nodes[2]];
    let (_, reader) = nodes[0].create_key(&json!({"name": "grpc-reader", "scope": "reader"}));
    let haproxy = Haproxy::start(three).unwrap();
    let target = format!("127.0.0.1:{}", haproxy.grpc_port);
    run_client(
        cluster.dir(),
        &target,
        &haproxy.ca_pem,
        &cluster.api_key,
        &reader,
        "haproxy",
    );
    drop(haproxy);
    let nginx = Nginx::start(three).unwrap();
    let target = format!("127.0.0.1:{}", nginx.grpc_port);
    run_client(
        cluster.dir(),
        &target,
        &nginx.ca_pem,
        &cluster.api_key,
        &reader,
        "nginx",
    );
}

/// A node that starts shutting down says so on gRPC health at once (before its running tasks
/// have finished, while it still answers): a load balancer checking health stops sending it
/// calls, as it does on the REST ping's 418.
#[test]
fn grpc_health_turns_not_serving_when_the_node_starts_shutting_down() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions {
        shutdown_grace_secs: 60,
        ..NodeOptions::named("n1", 2)
    });
    let id = node.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 300_000}}));
    node.wait_task(&id, "to run", std::time::Duration::from_secs(30), |t| {
        t["state"] == "Executing"
    });
    let ready = cluster.dir().join("health-ready");
    let watcher = Command::new(python())
        .arg(root().join("tests/grpc/health.py"))
        .env(
            "CUTTLE_GRPC_TARGET",
            format!("127.0.0.1:{}", node.public_grpc_port),
        )
        .env("CUTTLE_WAIT_SECS", "60")
        .env("CUTTLE_READY_FILE", &ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the Python health watcher");
    cuttle_e2e::wait_until(
        "the watcher to hear SERVING",
        std::time::Duration::from_secs(30),
        || ready.exists().then_some(()),
    );
    node.terminate();
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "health never said NOT_SERVING:\n{text}"
    );
    // The node is still draining its task: the watch did not just see it go away.
    assert_eq!(node.task(&id)["state"], "Executing", "{text}");
    assert_eq!(node.get("/api/nodes/ping").0, 418);
}

/// Clients that misbehave on purpose (`tests/grpc/slow.py`, HTTP/2 frame by frame): a silent
/// connection, an HTTP/2 connection that never calls, a call whose message never arrives
/// whole — each cut off within the node's deadlines (1 s here), and the node keeps serving.
#[test]
fn the_grpc_listener_cuts_off_idle_and_stalled_clients() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions {
        env: vec![
            ("CUTTLE_HTTP_HEADER_TIMEOUT_SECS".into(), "1".into()),
            ("CUTTLE_HTTP_BODY_TIMEOUT_SECS".into(), "1".into()),
        ],
        ..NodeOptions::named("n1", 1)
    });
    let port = node.public_grpc_port.to_string();
    let settings = [
        ("CUTTLE_GRPC_HOST", "127.0.0.1"),
        ("CUTTLE_GRPC_PORT", port.as_str()),
        ("CUTTLE_KEY", cluster.api_key.as_str()),
        ("CUTTLE_LIMIT_SECS", "5"),
    ];
    run_script(Command::new(python()), "slow.py", &settings);
    assert_eq!(node.get("/api/nodes/ping").0, 200, "the node still serves");
}

/// While its database is down, a node answers gRPC calls UNAVAILABLE (within the database call
/// deadline, so a client tries another node), and answers them again once it is back.
#[test]
fn grpc_calls_are_unavailable_while_the_database_is_down() {
    let cluster = Cluster::postgres();
    let node = cluster.start(NodeOptions {
        env: vec![("CUTTLE_DB_COMMAND_TIMEOUT_SECS".into(), "2".into())],
        expected_errors: vec!["database".into()],
        ..NodeOptions::named("n1", 1)
    });
    let target = format!("127.0.0.1:{}", node.public_grpc_port);
    let proto = root().join("proto");
    let proto = proto.to_str().unwrap();
    let ask = |expect: &str| {
        let settings = [
            ("CUTTLE_GRPC_TARGET", target.as_str()),
            ("CUTTLE_KEY", cluster.api_key.as_str()),
            ("CUTTLE_PROTO_DIR", proto),
            ("CUTTLE_EXPECT", expect),
            ("CUTTLE_WAIT_SECS", "60"),
        ];
        run_script(Command::new(python()), "status.py", &settings);
    };
    ask("OK");
    cluster.stop_database().unwrap();
    ask("UNAVAILABLE");
    cluster.start_database().unwrap();
    ask("OK");
}

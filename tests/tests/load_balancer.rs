//! The shipped load-balancer configurations, checked by the real tools and, for haproxy, run
//! in front of three real nodes.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use cuttle_e2e::{
    deploy_dir, temp_dir, wait_until, Cluster, Haproxy, NodeOptions, TestCertificates,
};
use serde_json::json;

#[test]
fn shipped_configs_pass_haproxy_and_nginx_checks() {
    // The certificate paths point at a test certificate; everything else is as shipped.
    let dir = temp_dir("lb-configs");
    let certs = TestCertificates::new(&["cuttle.example.com"]).unwrap();
    let (crt, key, pem) = (
        dir.path().join("cuttle.crt"),
        dir.path().join("cuttle.key"),
        dir.path().join("cuttle.pem"),
    );
    std::fs::write(&crt, &certs.cert_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    std::fs::write(&pem, format!("{}{}", certs.cert_pem, certs.key_pem)).unwrap();
    let shipped = |name: &str, from: &[&str], to: &[&std::path::Path]| {
        let mut text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
        for (f, t) in from.iter().zip(to) {
            assert!(text.contains(f), "{name} no longer names {f}");
            text = text.replace(f, &t.display().to_string());
        }
        let out = dir.path().join(name.replace('/', "-"));
        std::fs::write(&out, text).unwrap();
        out
    };
    let haproxy_cfg = shipped(
        "haproxy/haproxy.cfg",
        &["/etc/haproxy/certs/cuttle.pem"],
        &[&pem],
    );
    let out = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&haproxy_cfg)
        .output()
        .expect("run haproxy (install Debian's haproxy package)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("WARNING"),
        "haproxy warns about the shipped config:\n{text}"
    );

    // nginx: the http part and the stream part, included where they belong.
    let http = shipped(
        "nginx/cuttle.conf",
        &["/etc/nginx/certs/cuttle.crt", "/etc/nginx/certs/cuttle.key"],
        &[&crt, &key],
    );
    let main = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\npid {pid};\nerror_log stderr;\n\
         events {{}}\nhttp {{ include {http}; }}\nstream {{ include {stream}; }}\n",
        pid = dir.path().join("nginx.pid").display(),
        http = http.display(),
        stream = deploy_dir().join("nginx/cuttle-stream.conf").display(),
    );
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, main).unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run nginx (install Debian's nginx and libnginx-mod-stream packages)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn haproxy_ends_tls_and_plain_http_only_redirects() {
    let cluster = Cluster::sqlite();
    let nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 0)))
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    // HTTPS: served, with HSTS.
    let r = lb
        .agent()
        .get(&lb.url("/api/nodes"))
        .header("X-Api-Key", &cluster.api_key)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    // Plain HTTP: a redirect to HTTPS and nothing else, the key never forwarded to a node.
    let plain: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let r = plain
        .get(&format!("http://127.0.0.1:{}/api/nodes", lb.http_port))
        .header("X-Api-Key", &cluster.api_key)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("https://127.0.0.1:{}/api/nodes", lb.http_port)
    );
    assert!(r.headers().get("x-cuttle-node").is_none(), "no node saw it");
}

#[test]
fn haproxy_spreads_requests_and_takes_a_draining_node_out_of_rotation() {
    let cluster = Cluster::sqlite();
    let nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 1)))
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let agent: ureq::Agent = lb.agent();
    // Every request through the balancer must succeed, whatever the nodes are doing; the
    // X-Cuttle-Node header says which node served it.
    let served_by = || -> String {
        let r = agent
            .get(&lb.url("/api/tasks?limit=1"))
            .header("X-Api-Key", &cluster.api_key)
            .call()
            .expect("request through haproxy");
        assert_eq!(r.status().as_u16(), 200, "a request through haproxy failed");
        r.headers()["x-cuttle-node"].to_str().unwrap().to_owned()
    };
    let seen: HashSet<String> = (0..12).map(|_| served_by()).collect();
    assert_eq!(seen.len(), 3, "round robin reaches every node: {seen:?}");

    // Drain n2: its ping answers 418, so haproxy stops sending it traffic.
    let (status, _) = nodes[0].patch("/api/nodes/n2", &json!({"draining": true}));
    assert_eq!(status, 200);
    wait_until(
        "haproxy to take n2 out of rotation",
        Duration::from_secs(30),
        || (0..9).all(|_| served_by() != "n2").then_some(()),
    );
    // The API still works through the balancer, with a key.
    let r = agent
        .get(&lb.url("/api/nodes"))
        .header("X-Api-Key", &cluster.api_key)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Undrain: n2 comes back.
    let (status, _) = nodes[0].patch("/api/nodes/n2", &json!({"draining": false}));
    assert_eq!(status, 200);
    wait_until("haproxy to put n2 back", Duration::from_secs(30), || {
        (0..9).any(|_| served_by() == "n2").then_some(())
    });
}

/// Drain, restart and undrain each node in turn while a client keeps calling the API and
/// enqueuing tasks through haproxy: no request fails, and every task runs exactly once.
#[test]
fn rolling_restart_behind_haproxy_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    let cluster = Cluster::new(cuttle_e2e::Database::Postgres).unwrap();
    let mut nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 2)))
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let agent: ureq::Agent = lb.agent();
    let served_by = |agent: &ureq::Agent| -> Option<String> {
        let r = agent
            .get(&lb.url("/api/tasks?limit=1"))
            .header("X-Api-Key", &cluster.api_key)
            .call()
            .ok()?;
        (r.status().as_u16() == 200)
            .then(|| r.headers()["x-cuttle-node"].to_str().unwrap().to_owned())
    };

    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let ids: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // A panic below stops the client too, so the scope can end and the test fail.
        let _stop_client = cuttle_e2e::SetOnDrop(&stop);
        s.spawn(|| {
            let client: ureq::Agent = lb.agent();
            while !stop.load(Ordering::Relaxed) {
                let task = json!({"kind": "Sleep", "arguments": {"duration_ms": 100}});
                match client
                    .post(&lb.url("/api/tasks"))
                    .header("X-Api-Key", &cluster.api_key)
                    .send_json(&task)
                {
                    Ok(mut r) if r.status().as_u16() == 201 => {
                        let body: serde_json::Value =
                            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                        ids.lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("POST: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("POST: {e}")),
                }
                match client
                    .get(&lb.url("/api/nodes"))
                    .header("X-Api-Key", &cluster.api_key)
                    .call()
                {
                    Ok(r) if r.status().as_u16() == 200 => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("GET: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("GET: {e}")),
                }
                std::thread::sleep(Duration::from_millis(20)); // a steady client, not a flood
            }
        });
        for node in nodes.iter_mut() {
            let name = node.name.clone();
            // The operator's path: everything through the balancer.
            let node_via_lb = |body: Option<serde_json::Value>| -> serde_json::Value {
                let url = lb.url(&format!("/api/nodes/{name}"));
                let mut r = match body {
                    Some(b) => agent
                        .patch(&url)
                        .header("X-Api-Key", &cluster.api_key)
                        .send_json(&b),
                    None => agent.get(&url).header("X-Api-Key", &cluster.api_key).call(),
                }
                .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
            };
            node_via_lb(Some(json!({"draining": true})));
            wait_until(
                &format!("{name} to run nothing"),
                Duration::from_secs(60),
                || (node_via_lb(None)["running_tasks"] == 0).then_some(()),
            );
            wait_until(
                &format!("haproxy to stop routing to {name}"),
                Duration::from_secs(30),
                || {
                    (0..6)
                        .all(|_| served_by(&agent).is_some_and(|n| n != name))
                        .then_some(())
                },
            );
            node.terminate();
            assert!(node.wait_exit(Duration::from_secs(60)).unwrap().success());
            cluster.restart(node);
            node_via_lb(Some(json!({"draining": false})));
            wait_until(
                &format!("haproxy to route to {name} again"),
                Duration::from_secs(30),
                || {
                    (0..6)
                        .any(|_| served_by(&agent).as_deref() == Some(name.as_str()))
                        .then_some(())
                },
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "client requests failed during the rolling restart: {failures:?}"
    );
    let ids = ids.into_inner().unwrap();
    assert!(
        ids.len() > 20,
        "the client kept working: {} tasks",
        ids.len()
    );
    for id in &ids {
        let t = nodes[0].wait_finished(id, Duration::from_secs(60));
        assert_eq!(t["state"], "Success", "{t}");
        let log = nodes[0].task_log(id);
        assert_eq!(
            log.matches(" started on node ").count(),
            1,
            "{id} ran more than once: {log}"
        );
    }
}

/// Mutating calls leave audit events naming the key and the client. `X-Forwarded-For` is
/// believed only from a trusted proxy: haproxy (connecting from 127.0.0.2) is trusted, a client
/// sending the header directly is not.
#[test]
fn audit_events_believe_forwarded_for_only_from_trusted_proxies() {
    let cluster = Cluster::sqlite();
    let opts = |name: &str| NodeOptions {
        env: vec![("CUTTLE_TRUSTED_PROXIES".into(), "127.0.0.2".into())],
        ..NodeOptions::named(name, 0)
    };
    let nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(opts(&format!("n{i}"))))
        .collect();
    let lb = Haproxy::start_from([&nodes[0], &nodes[1], &nodes[2]], Some("127.0.0.2")).unwrap();
    let agent: ureq::Agent = lb.agent();
    let task = json!({"kind": "Sleep", "arguments": {"duration_ms": 1}});
    let create = |url: String| -> String {
        let mut r = agent
            .post(&url)
            .header("X-Api-Key", &cluster.api_key)
            .header("X-Forwarded-For", "203.0.113.9")
            .send_json(&task)
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        body["id"].as_str().unwrap().to_owned()
    };
    // Through haproxy: it appends the real client (127.0.0.1) after the forged entry; the node
    // sees peer 127.0.0.2 (trusted) and takes the right-most untrusted hop.
    let via_lb = create(lb.url("/api/tasks"));
    // Directly: the peer 127.0.0.1 is not trusted, so the forged header is ignored.
    let direct = create(nodes[0].url("/api/tasks"));
    let (status, _) = nodes[1].patch("/api/nodes/n3", &json!({"task_cap": 1}));
    assert_eq!(status, 200);

    let (status, body) = nodes[2].get("/api/events?limit=10");
    assert_eq!(status, 200);
    let events = body["items"].as_array().unwrap();
    let find = |action: &str, target: &str| -> serde_json::Value {
        events
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} event for {target}: {body}"))
            .clone()
    };
    for id in [&via_lb, &direct] {
        let e = find("task.create", id);
        assert_eq!(e["actor"], "admin (ApiKeys-1)", "the key by name and id");
        assert_eq!(e["client_address"], "127.0.0.1", "{e}");
        assert_eq!(e["details"]["kind"], "Sleep");
    }
    let e = find("node.update", "n3");
    assert_eq!(e["details"]["task_cap"], 1);
    assert!(e["occurred_at"].as_str().unwrap().ends_with('Z'));
    // Reads are not audited.
    assert!(events.iter().all(|e| e["action"] != "task.get"));
    let (status, _) = nodes[0].get("/api/events?limit=0");
    assert_eq!(status, 400);
}

#[test]
fn the_shipped_nginx_config_streams_uploads_and_keeps_the_json_limit() {
    let cluster = Cluster::sqlite();
    let nodes: Vec<_> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 0)))
        .collect();
    let lb = cuttle_e2e::Nginx::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let key = nodes[0].api_key();
    // Far past the 1 MiB the other routes get: streamed (no request buffering) to a node. The
    // client stops half-way until a node reports the upload in progress: with nginx buffering
    // the body, no node would see it before the client had sent it all.
    let big = cuttle_e2e::Generated::zip(50, 300 << 20);
    let sha = big.sha256();
    let (go_on, gate) = std::sync::mpsc::channel::<()>();
    let body = Paused {
        inner: big.clone(),
        sent: 0,
        pause_at: 150 << 20,
        gate,
    };
    let (agent, url, size) = (
        lb.agent(),
        lb.url("/api/Spaces-1/packages/raw?package_id=Via.Nginx&version=1.0.0&format=zip"),
        big.size,
    );
    let key2 = key.clone();
    let uploading = std::thread::spawn(move || {
        cuttle_e2e::upload(
            &agent,
            &url,
            &key2,
            "application/octet-stream",
            body,
            size,
            &[("X-Content-SHA256", &sha)],
        )
    });
    wait_until(
        "a node receiving the upload while the client is paused",
        MIN,
        || {
            nodes
                .iter()
                .any(|n| {
                    let (_, metrics) = n.get("/metrics");
                    metrics
                        .as_str()
                        .is_some_and(|m| m.contains("cuttle_uploads_in_progress 1"))
                })
                .then_some(())
        },
    );
    go_on.send(()).unwrap();
    let (status, p) = uploading.join().unwrap();
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["size"].as_u64(), Some(300 << 20));
    // Any other route keeps nginx's 1 MiB limit.
    let (status, _) = cuttle_e2e::upload(
        &lb.agent(),
        &lb.url("/api/tasks"),
        &key,
        "application/json",
        cuttle_e2e::Generated::zip(51, 2 << 20),
        2 << 20,
        &[],
    );
    assert_eq!(status, 413);
}

/// "Other clients are not affected" by one client's bad keys holds when the balancer is a
/// trusted proxy. A balancer left out of `CUTTLE_TRUSTED_PROXIES` makes every client one: the
/// node detects it — forwarding headers from an unlisted peer — and says so in its log and on
/// the nodes page.
#[test]
fn a_balancer_left_out_of_the_trusted_proxies_is_reported() {
    use cuttle_e2e::web::{send, session_of};
    let cluster = Cluster::sqlite();
    let unlisted = cluster.start(NodeOptions::named("n1", 0));
    let listed = cluster.start(NodeOptions {
        env: vec![("CUTTLE_TRUSTED_PROXIES".into(), "127.0.0.1".into())],
        ..NodeOptions::named("n2", 0)
    });
    let call = |n: &cuttle_e2e::Node, from: &str, key: &str| {
        cuttle_e2e::agent(None)
            .get(&n.url("/api/tasks"))
            .header("X-Forwarded-For", from)
            .header("X-Api-Key", key)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    let key = unlisted.api_key();
    assert_eq!(call(&unlisted, "198.51.100.2", &key), 200);
    let advice = "is not in CUTTLE_TRUSTED_PROXIES";
    wait_until("the warning in n1's log", MIN, || {
        unlisted.stderr_text().contains(advice).then_some(())
    });
    let form = format!(
        "api_key={}",
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let signed = send(&unlisted, "POST", "/ui/sign-in", None, Some(&form), &[]);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let page = send(
        &unlisted,
        "GET",
        "/ui/nodes",
        Some(&session_of(&signed.set_cookie)),
        None,
        &[],
    );
    assert!(
        page.body
            .contains("requests from 127.0.0.1 carry forwarding headers")
            && page.body.contains(advice),
        "the nodes page says it: {}",
        page.body
    );
    // What it costs: ten bad keys from one client behind the balancer lock out another (whose
    // key is good, and not yet in the nodes' caches).
    let other = unlisted.key_with_scope("other client", "reader");
    for n in [&unlisted, &listed] {
        for _ in 0..10 {
            assert_eq!(call(n, "198.51.100.1", "not-a-key"), 401);
        }
    }
    assert_eq!(
        call(&unlisted, "198.51.100.2", &other),
        429,
        "unlisted: one client for all"
    );
    assert_eq!(
        call(&listed, "198.51.100.2", &other),
        200,
        "listed: others are not affected"
    );
    assert!(
        !listed.stderr_text().contains(advice),
        "a trusted balancer is not reported"
    );
}

const MIN: Duration = Duration::from_secs(60);

/// A body that stops after `pause_at` bytes until `gate` says go on.
struct Paused {
    inner: cuttle_e2e::Generated,
    sent: u64,
    pause_at: u64,
    gate: std::sync::mpsc::Receiver<()>,
}

impl std::io::Read for Paused {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent == self.pause_at {
            let _ = self.gate.recv();
        }
        let room = if self.sent < self.pause_at {
            ((self.pause_at - self.sent) as usize).min(buf.len())
        } else {
            buf.len()
        };
        let n = self.inner.read(&mut buf[..room])?;
        self.sent += n as u64;
        Ok(n)
    }
}

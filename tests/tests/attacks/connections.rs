//! Attacks of the second security review: M-5 (idle connections to every listener) and M-1 (the
//! thumbprint a server proves, not the one it writes).

use super::*;

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

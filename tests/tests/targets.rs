//! Deployment targets over REST, and the cluster identity tentacles trust.

use std::time::Duration;

use cuttle_e2e::{free_port, process_gone, wait_until, Cluster, Database, NodeOptions};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);

const THUMB: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

cuttle_e2e::on_every_database!(targets_are_registered_changed_and_removed_over_rest,);

#[test]
fn every_node_presents_one_cluster_identity_that_survives_restarts() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 1));
    let (status, id1) = n1.get("/api/cluster/identity");
    assert_eq!(status, 200, "{id1}");
    let thumb = id1["thumbprint"].as_str().unwrap().to_owned();
    assert_eq!(thumb.len(), 64);
    assert!(thumb.chars().all(|c| c.is_ascii_hexdigit()));
    let gateways = id1["gateways"].as_array().unwrap();
    assert_eq!(gateways.len(), 2, "{id1}");
    assert_eq!(n2.get("/api/cluster/identity").1["thumbprint"], thumb);
    n1.kill9();
    cluster.restart(&mut n1);
    assert_eq!(n1.get("/api/cluster/identity").1["thumbprint"], thumb);
    // The private key is never in the database in the clear: not in the main file, nor in
    // the write-ahead log SQLite keeps beside it (where recent writes live until a checkpoint).
    // A canary written just now proves the reader sees recent writes.
    let canary = format!("canary-{}-{}", std::process::id(), thumb);
    n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}, "description": canary}));
    let text = sqlite_files_text(cluster.dir());
    assert!(text.contains(&canary), "the reader misses recent writes");
    assert!(
        !text.contains("PRIVATE KEY"),
        "the cluster key is stored encrypted"
    );
}

/// Every file of the cluster's SQLite database (the main file, its `-wal` and `-shm`), as text.
fn sqlite_files_text(dir: &std::path::Path) -> String {
    ["cuttle.db", "cuttle.db-wal", "cuttle.db-shm"]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[test]
fn nodes_never_hand_out_an_unspecified_address() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let listen_any = |port: u16, more: &[(&str, String)], name: &str| {
        let mut env = vec![(
            "CUTTLE_GATEWAY_LISTEN".to_owned(),
            format!("0.0.0.0:{port}"),
        )];
        env.extend(more.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        NodeOptions {
            env,
            ..NodeOptions::named(name, 0)
        }
    };
    // Given: what tentacles on other hosts are handed.
    let p1 = free_port();
    let given = format!("gw1.example.com:{p1}");
    let n1 = cluster.start(listen_any(
        p1,
        &[("CUTTLE_GATEWAY_ADVERTISE", given.clone())],
        "n1",
    ));
    let (status, id) = n1.get("/api/cluster/identity");
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["gateways"], json!([given]));

    // Not given: derived from this host's interfaces, or the node refuses to start and names
    // the setting. Never 0.0.0.0.
    let p2 = free_port();
    let n2 = cluster.spawn(listen_any(p2, &[], "n2"));
    let pid = n2.pid().unwrap();
    let started = wait_until("n2 to start or refuse", MIN, || {
        if n2.ping() == 200 {
            Some(true)
        } else {
            process_gone(pid).then_some(false)
        }
    });
    if started {
        let (_, node) = n1.get("/api/nodes/n2");
        let gateway = node["gateway_address"].as_str().unwrap();
        let (host, port) = gateway.rsplit_once(':').unwrap();
        assert_eq!(port, p2.to_string(), "{node}");
        let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().unwrap();
        assert!(!ip.is_unspecified() && !ip.is_loopback(), "{node}");
        let (_, id) = n1.get("/api/cluster/identity");
        assert!(!id.to_string().contains("0.0.0.0"), "{id}");
    } else {
        let err = n2.stderr_text();
        assert!(err.contains("set CUTTLE_GATEWAY_ADVERTISE"), "{err}");
    }

    // An unspecified address given explicitly is refused at start-up, naming the setting.
    let cmd = cluster.command(
        &listen_any(
            free_port(),
            &[("CUTTLE_GRPC_ADVERTISE", "0.0.0.0:8443".into())],
            "n3",
        ),
        free_port(),
        free_port(),
    );
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(err.contains("CUTTLE_GRPC_ADVERTISE"), "{err}");
}

fn targets_are_registered_changed_and_removed_over_rest(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    // No periodic health check: the first one (at start-up, once a target exists) could mark
    // the new target Unavailable before this test reads it back.
    let n = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
        ..NodeOptions::named("n1", 1)
    });
    // A target goes only where deployments can reach it: an environment that exists, a role a
    // step, a target or the key uses — or one said to be new. A typo is refused, naming it.
    let mut body = json!({"name": "web-1", "environments": ["production"], "roles": ["web"],
                          "comms": "polling", "thumbprint": THUMB});
    let (status, err) = n.post("/api/targets", &body);
    assert!(
        status == 400
            && err
                .to_string()
                .contains(r#"no environment named \"production\""#),
        "{err}"
    );
    n.make_environments(&["Test", "Production"]);
    body["environments"] = json!(["Prodution"]);
    let (status, err) = n.post("/api/targets", &body);
    assert!(
        status == 400 && err.to_string().contains("Test, Production"),
        "the refusal lists the environments: {err}"
    );
    body["environments"] = json!(["production"]);
    let (status, err) = n.post("/api/targets", &body);
    assert!(
        status == 400
            && err.to_string().contains(r#"the role \"web\""#)
            && err.to_string().contains("new_roles"),
        "{err}"
    );
    body["new_roles"] = json!(true);
    let (status, t) = n.post("/api/targets", &body);
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["environments"], json!(["Production"]), "named as defined");
    let id = t["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("Machines-"), "{t}");
    assert_eq!(t["thumbprint"], THUMB.to_uppercase());
    assert_eq!(t["health"], "Unknown");
    assert_eq!(t["connected_nodes"], json!([]));
    assert!(t["last_health_check"].is_null() && t["endpoint"].is_null());

    let (status, err) = n.post("/api/targets", &body);
    assert_eq!(status, 409, "same name and thumbprint: {err}");
    // A name is also its artifact folder's: nothing that could leave it or share it.
    for name in ["../escape", "a/b", ".hidden"] {
        let (status, err) = n.post(
            "/api/targets",
            &json!({"name": name, "comms": "polling", "thumbprint": "CD".repeat(32)}),
        );
        assert_eq!(status, 400, "{name}: {err}");
    }
    for bad in [
        json!({"name": "x", "comms": "polling"}),
        json!({"name": "x", "comms": "listening", "thumbprint": THUMB}),
        json!({"name": "x", "comms": "polling", "thumbprint": "beef"}),
        json!([1, 2]),
    ] {
        let (status, err) = n.post("/api/targets", &bad);
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }

    let (status, t) = n.patch(
        &format!("/api/targets/{id}"),
        &json!({"comms": "listening", "endpoint": "web-1.example:10933", "roles": ["web", "api"],
                "new_roles": true}),
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["endpoint"], "web-1.example:10933");
    assert_eq!(t["roles"], json!(["web", "api"]));
    let (_, list) = n.get("/api/targets");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(n.get("/api/targets/Machines-999").0, 404);
    assert_eq!(n.get("/api/targets/nonsense").0, 404);
    assert_eq!(
        n.request("DELETE", &format!("/api/targets/{id}"), None).0,
        204
    );
    assert_eq!(n.get(&format!("/api/targets/{id}")).0, 404);
    let (_, events) = n.get("/api/events?limit=10");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["target.create", "target.update", "target.delete"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
}

/// The internal gRPC port (worker wake-ups, the tentacle relay) answers only holders of the
/// cluster certificate: not plain HTTP/2, not TLS with another certificate.
#[test]
fn internal_grpc_refuses_anyone_without_the_cluster_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n = cluster.start(NodeOptions::named("n1", 1));
    let addr = format!("127.0.0.1:{}", n.grpc_port);
    let (_, identity) = n.get("/api/cluster/identity");
    let cluster_thumb: cuttle_tls::Thumbprint =
        identity["thumbprint"].as_str().unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Plain HTTP/2: the server expects a TLS ClientHello and never speaks HTTP/2 back.
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_end(&mut reply),
        )
        .await;
        // An HTTP/2 server's first frame is SETTINGS (type 4 at byte 3); a TLS alert is 0x15.
        assert!(
            reply.len() < 4 || reply[3] != 4,
            "plain HTTP/2 got an HTTP/2 answer: {reply:?}"
        );

        // TLS with a certificate the cluster does not know: refused in the handshake.
        let stranger = cuttle_tls::Identity::generate("stranger", 1).unwrap();
        let config =
            cuttle_tls::client_config(&stranger, cuttle_tls::Trusted::new([cluster_thumb]))
                .unwrap();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let outcome = async {
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(cuttle_tls::server_name(), tcp)
                .await?;
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        let err = outcome.expect_err("a stranger's certificate must be refused");
        assert!(err.to_string().contains("alert"), "{err}");
    });
    assert!(n
        .stderr_text()
        .contains("refused an internal gRPC connection"));
}

//! The API over HTTPS: a certificate given as files (reloaded on SIGHUP and when the files
//! change, open connections kept), or the cluster's own certificate; HSTS; plain HTTP gets no
//! answer on that port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cuttle_e2e::{agent, wait_until, Cluster, HttpsTrust, Node, NodeOptions, TestCertificates};

const MIN: Duration = Duration::from_secs(60);

fn write_pair(certs: &TestCertificates, cert: &Path, key: &Path) {
    std::fs::write(cert, &certs.cert_pem).unwrap();
    std::fs::write(key, &certs.key_pem).unwrap();
}

/// 200 from the ping through `client`, or why not.
fn ping(client: &ureq::Agent, node: &Node) -> Result<(), String> {
    match client.get(&node.url("/api/nodes/ping")).call() {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

fn trusting(certs: &TestCertificates) -> ureq::Agent {
    agent(Some(&HttpsTrust::Ca(certs.ca_pem.clone())))
}

#[test]
fn certificate_files_are_served_and_reloaded_without_dropping_connections() {
    let cluster = Cluster::sqlite();
    let dir = cluster.dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key): (PathBuf, PathBuf) = (dir.join("api.crt"), dir.join("api.key"));
    let a = TestCertificates::new(&["127.0.0.1"]).unwrap();
    write_pair(&a, &cert, &key);
    let n1 = cluster.start(NodeOptions {
        env: vec![
            ("CUTTLE_HTTP_TLS_CERT".into(), cert.display().to_string()),
            ("CUTTLE_HTTP_TLS_KEY".into(), key.display().to_string()),
        ],
        https: Some(HttpsTrust::Ca(a.ca_pem.clone())),
        // A reload that catches the new certificate before its key is refused, and logged.
        expected_errors: vec!["HTTPS certificate not reloaded".into()],
        ..NodeOptions::named("n1", 0)
    });

    // HTTPS, with HSTS; the certificate checked against its CA.
    let client_a = trusting(&a);
    let r = client_a.get(&n1.url("/api/nodes/ping")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    // Plain HTTP on that port gets no answer.
    let plain = agent(None)
        .get(&format!("http://127.0.0.1:{}/api/nodes/ping", n1.http_port))
        .call();
    assert!(plain.is_err(), "{plain:?}");

    // A new certificate (another CA) and SIGHUP: new connections get it.
    let b = TestCertificates::new(&["127.0.0.1"]).unwrap();
    write_pair(&b, &cert, &key);
    n1.hangup();
    let client_b = trusting(&b);
    wait_until("the new certificate after SIGHUP", MIN, || {
        ping(&client_b, &n1).ok()
    });
    // The connection client_a opened before the reload is still open and still served: a new
    // one would be refused, client_a trusting only the old CA.
    ping(&client_a, &n1).expect("the open connection survives the reload");
    assert!(
        ping(&trusting(&a), &n1).is_err(),
        "new connections get the new certificate"
    );

    // A file change alone is enough.
    let c = TestCertificates::new(&["127.0.0.1"]).unwrap();
    write_pair(&c, &cert, &key);
    wait_until("the new certificate after the files changed", MIN, || {
        ping(&trusting(&c), &n1).ok()
    });

    // A broken pair is refused and the current certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    n1.hangup();
    wait_until("the refused reload to be logged", MIN, || {
        n1.stderr_text()
            .contains("HTTPS certificate not reloaded")
            .then_some(())
    });
    ping(&trusting(&c), &n1).expect("still served with the last good certificate");
}

#[test]
fn the_cluster_certificate_can_be_served() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HTTP_TLS".into(), "cluster".into())],
        https: Some(HttpsTrust::Any),
        ..NodeOptions::named("n1", 0)
    });
    let (status, id) = n1.get("/api/cluster/identity");
    assert_eq!(status, 200, "{id}");
    let thumb: cuttle_tls::Thumbprint = id["thumbprint"].as_str().unwrap().parse().unwrap();
    // A client that trusts exactly that thumbprint completes a handshake; one trusting another
    // certificate does not: what is served is the cluster's certificate.
    handshake(n1.http_port, thumb).expect("the cluster certificate is served");
    let other = cuttle_tls::Identity::generate("other", 1)
        .unwrap()
        .thumbprint();
    assert!(handshake(n1.http_port, other).is_err());
}

#[test]
fn a_certificate_that_cannot_be_read_stops_the_node_naming_the_setting() {
    let cluster = Cluster::sqlite();
    let opts = NodeOptions {
        env: vec![
            ("CUTTLE_HTTP_TLS_CERT".into(), "/nonexistent/api.crt".into()),
            ("CUTTLE_HTTP_TLS_KEY".into(), "/nonexistent/api.key".into()),
        ],
        ..NodeOptions::named("n1", 0)
    };
    let cmd = cluster.command(&opts, cuttle_e2e::free_port(), cuttle_e2e::free_port());
    let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("CUTTLE_HTTP_TLS_CERT /nonexistent/api.crt"),
        "{err}"
    );
}

/// A TLS handshake with the API port, trusting only `trusted`.
fn handshake(port: u16, trusted: cuttle_tls::Thumbprint) -> Result<(), String> {
    let me = cuttle_tls::Identity::generate("probe", 1).unwrap();
    let config = cuttle_tls::client_config(&me, cuttle_tls::Trusted::new([trusted])).unwrap();
    let mut conn = rustls::ClientConnection::new(config, cuttle_tls::server_name())
        .map_err(|e| e.to_string())?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(MIN)).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

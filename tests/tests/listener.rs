//! The API listener under abuse: clients that open connections and dawdle are cut off, and
//! cannot crowd out everyone else.

use std::time::{Duration, Instant};

use cuttle_e2e::{Cluster, NodeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_thousand_slow_clients_are_cut_off_and_the_ping_keeps_answering() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions {
        env: vec![
            ("CUTTLE_HTTP_HEADER_TIMEOUT_SECS".into(), "2".into()),
            ("CUTTLE_HTTP_BODY_TIMEOUT_SECS".into(), "2".into()),
            (
                "CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT".into(),
                "200".into(),
            ),
        ],
        ..NodeOptions::named("n1", 0)
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", n1.http_port).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 1,000 connections from another loopback address, each sending half a request's
        // headers and then nothing.
        let mut slow = Vec::new();
        for _ in 0..1000 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut conn = socket.connect(addr).await.unwrap();
            // The node may already have closed it (past the per-client cap).
            let _ = conn
                .write_all(b"GET /api/nodes/ping HTTP/1.1\r\nHost: n1\r\n")
                .await;
            slow.push(conn);
        }
        // Everyone else is still served.
        for _ in 0..5 {
            assert_eq!(n1.ping(), 200);
        }
        // Every slow connection is closed by the node: those past the per-client cap at once,
        // the rest once their header deadline (2 s) passed.
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, conn) in slow.iter_mut().enumerate() {
            let mut buf = [0u8; 1024];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, conn.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break, // closed (or reset)
                    Ok(Ok(_)) => continue,           // an error response before the close
                    Err(_) => panic!("slow connection {i} still open after 30 s"),
                }
            }
        }
        // A client that sends its headers and then withholds the body it declared gets 408
        // once the body deadline (2 s) passes, naming it.
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(
            format!(
                "POST /api/tasks HTTP/1.1\r\nHost: n1\r\nX-Api-Key: {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\":",
                cluster.api_key
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&answer).contains("request_timeout") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok(), "no answer to a withheld body within 20 s");
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("did not arrive within 2 s"), "{text}");
    });
    assert_eq!(n1.ping(), 200);
}

/// `GET path` with `key`, from the loopback address `from`: the status code and the answer.
fn get_from(from: &str, port: u16, path: &str, key: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut conn = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: n1\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text[9..12].parse().unwrap();
        (status, text)
    })
}

#[test]
fn a_client_guessing_keys_is_told_to_wait_and_others_are_not() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let port = n1.http_port;
    for i in 0..10 {
        let (status, _) = get_from("127.0.0.2", port, "/api/tasks", &format!("API-GUESS-{i}"));
        assert_eq!(status, 401, "guess {i}");
    }
    let (status, text) = get_from("127.0.0.2", port, "/api/tasks", "API-GUESS-10");
    assert_eq!(status, 429, "{text}");
    assert!(text.to_lowercase().contains("retry-after: "), "{text}");
    assert!(text.contains("too_many_requests"), "{text}");
    // Another client is not affected, with a good key or a bad one.
    let (status, _) = get_from("127.0.0.3", port, "/api/tasks", &cluster.api_key);
    assert_eq!(status, 200);
    let (status, _) = get_from("127.0.0.3", port, "/api/tasks", "API-GUESS-X");
    assert_eq!(status, 401);
}

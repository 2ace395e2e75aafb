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
    });
    assert_eq!(n1.ping(), 200);
}

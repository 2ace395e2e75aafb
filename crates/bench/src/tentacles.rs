//! `cuttle-bench tentacles`: N simulated polling tentacles — real TLS connections with their
//! own certificates, from this process — against one gateway node (release build). Reports the
//! time to connect them all, the sessions the gateway holds, the node's memory per session, and
//! the round trip of a command (a `HealthCheck` of one target, through the queue, the relay and
//! the tentacle session).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cuttle_e2e::{wait_until, Cluster, Database, Node, NodeOptions};
use cuttle_proto::v1::tentacle_server::{Tentacle, TentacleServer};
use cuttle_proto::v1::{
    script_event, CapabilitiesReply, CapabilitiesRequest, ExtractPackageReply,
    ExtractPackageRequest, FileChunk, PullFileRequest, PushFileReply, RunScriptRequest,
    ScriptEvent,
};
use cuttle_tls::{Identity, Thumbprint, Trusted};
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};

/// A tentacle that answers at once: the benchmark measures the cluster, not scripts.
#[derive(Clone)]
struct Sim;

#[tonic::async_trait]
impl Tentacle for Sim {
    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        Ok(Response::new(CapabilitiesReply {
            version: "sim".into(),
            os: "sim".into(),
            free_disk_bytes: 100 << 30,
            shells: vec!["sh".into()],
            trusted_clusters: Vec::new(),
        }))
    }

    type RunScriptStream = tokio_stream::Once<Result<ScriptEvent, Status>>;

    async fn run_script(
        &self,
        _: Request<RunScriptRequest>,
    ) -> Result<Response<Self::RunScriptStream>, Status> {
        let done = ScriptEvent {
            event: Some(script_event::Event::ExitCode(0)),
        };
        Ok(Response::new(tokio_stream::once(Ok(done))))
    }

    async fn push_file(
        &self,
        _: Request<Streaming<FileChunk>>,
    ) -> Result<Response<PushFileReply>, Status> {
        Err(Status::unimplemented("not simulated"))
    }

    async fn extract_package(
        &self,
        _: Request<ExtractPackageRequest>,
    ) -> Result<Response<ExtractPackageReply>, Status> {
        Err(Status::unimplemented("not simulated"))
    }

    type PullFileStream = tokio_stream::Empty<Result<FileChunk, Status>>;

    async fn pull_file(
        &self,
        _: Request<PullFileRequest>,
    ) -> Result<Response<Self::PullFileStream>, Status> {
        Err(Status::unimplemented("not simulated"))
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn connected(node: &Node) -> usize {
    let (_, list) = node.get("/api/targets");
    list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| {
                    t["connected_nodes"]
                        .as_array()
                        .is_some_and(|c| !c.is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Simulated polling tentacles, connected: their target ids, the runtime holding their sessions
/// (drop it to end them), and how long connecting them all took.
pub(crate) struct Sims {
    pub(crate) ids: Vec<String>,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) connect: Duration,
}

/// Registers `count` simulated polling targets (with `fields` added to each registration) and
/// connects them all to the node's gateway.
pub(crate) fn start_sims(node: &Node, count: usize, fields: serde_json::Value) -> Result<Sims> {
    let started = Instant::now();
    let identities: Vec<Identity> = (0..count)
        .map(|i| Identity::generate(&format!("sim-{i}"), 30))
        .collect::<std::result::Result<_, _>>()?;
    let mut ids = Vec::with_capacity(count);
    for (i, id) in identities.iter().enumerate() {
        let mut body = json!({"name": format!("sim-{i}"), "comms": "polling",
                              "thumbprint": id.thumbprint().to_string()});
        if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
            b.extend(f.clone());
        }
        let (status, t) = node.post("/api/targets", &body);
        anyhow::ensure!(status == 201, "register target: {t}");
        ids.push(t["id"].as_str().unwrap_or_default().to_owned());
    }
    println!(
        "registered {count} targets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (_, identity) = node.get("/api/cluster/identity");
    let cluster_thumb: Thumbprint = identity["thumbprint"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let gateway = identity["gateways"][0]
        .as_str()
        .context("no gateway address")?
        .to_owned();
    // Let the gateway re-read its trusted thumbprints (every 2 s) before the storm.
    std::thread::sleep(Duration::from_secs(3));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let connect_start = Instant::now();
    runtime.block_on(async {
        for id in identities {
            let config = cuttle_tls::client_config(&id, Trusted::new([cluster_thumb]))?;
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let connector = tokio_rustls::TlsConnector::from(config);
                // Retry until accepted: thousands of handshakes at once queue up.
                loop {
                    let session = async {
                        let tcp = tokio::net::TcpStream::connect(&gateway).await?;
                        let tls = connector.connect(cuttle_tls::server_name(), tcp).await?;
                        Ok::<_, std::io::Error>(tls)
                    };
                    if let Ok(tls) = session.await {
                        let _ = cuttle_proto::wire::serve(tls, TentacleServer::new(Sim)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        Ok::<_, anyhow::Error>(())
    })?;
    {
        let _guard = runtime.enter();
        wait_until("every session", Duration::from_secs(600), || {
            (connected(node) >= count).then_some(())
        });
    }
    Ok(Sims {
        ids,
        runtime,
        connect: connect_start.elapsed(),
    })
}

pub(crate) fn rss_of(node: &Node) -> u64 {
    node.pid().map(rss_kib).unwrap_or(0)
}

pub(crate) fn run(count: usize, samples: usize) -> Result<()> {
    println!("\n## {count} polling tentacles, one gateway node (SQLite)");
    let cluster = Cluster::new(Database::Sqlite)?;
    let node = cluster.start(NodeOptions {
        env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
        ..NodeOptions::named("gw", 8)
    });
    let rss_before = rss_of(&node);
    let sims = start_sims(&node, count, json!({}))?;
    let ids = &sims.ids;
    let connect_secs = sims.connect.as_secs_f64();
    let _guard = sims.runtime.enter();
    std::thread::sleep(Duration::from_secs(2)); // settle
    let rss_after = rss_of(&node);
    let per_session = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / count as f64;

    // Command round trips: one HealthCheck of one random target at a time.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = Vec::with_capacity(samples);
    let mut exec = Vec::with_capacity(samples);
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let target = &ids[(x % count as u64) as usize];
        let id = node.enqueue(json!({"kind": "HealthCheck", "arguments": {"targets": [target]}}));
        let t = node.wait_finished(&id, Duration::from_secs(60));
        anyhow::ensure!(t["state"] == "Success", "health check failed: {t}");
        let ms = |f: &str| {
            t[f].as_str()
                .and_then(cuttle_e2e::parse_rfc3339_ms)
                .unwrap_or(0)
        };
        total.push(ms("completed_at") - ms("queued_at"));
        exec.push(ms("completed_at") - ms("started_at"));
    }
    total.sort_unstable();
    exec.sort_unstable();
    let p = |v: &[i64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!("| measure | value |\n|---|---|");
    println!(
        "| sessions held by the gateway | {} of {count} |",
        connected(&node)
    );
    println!("| time to connect them all (TLS handshakes, gateway trust check, session recorded) | {connect_secs:.1} s |");
    println!(
        "| node memory (RSS) before / after | {} MiB / {} MiB |",
        rss_before >> 10,
        rss_after >> 10
    );
    println!(
        "| node memory per session | {:.1} KiB |",
        per_session / 1024.0
    );
    println!(
        "| command round trip: HealthCheck of one target, queued → done (p50 / p99, {samples} samples) | {} ms / {} ms |",
        p(&total, 0.5),
        p(&total, 0.99)
    );
    println!(
        "| of which running it: relay + tentacle + record (p50 / p99) | {} ms / {} ms |",
        p(&exec, 0.5),
        p(&exec, 0.99)
    );
    drop(_guard);
    sims.runtime.shutdown_background();
    Ok(())
}

//! `cuttle-bench grpc`: the public gRPC API beside REST, on nodes of one cluster (PostgreSQL).
//!
//! - A task queued and followed to its end, `--samples` times each way: gRPC `Tasks.Create` then
//!   `Tasks.WatchLog` to the stream's end, against REST `POST /api/tasks` then the web UI's live
//!   log (server-sent events) to its `end` event. p50 and p99 of the round trip.
//! - A `--size-mib` package (1 GiB) uploaded over gRPC (`Packages.Upload`, 1 MiB messages from a
//!   file) to one node, and over REST (curl, as `cuttle-bench upload` does) to another: MiB/s and
//!   each node's peak-memory growth.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use cuttle_e2e::{peak_rss_kib, Cluster, Database, Generated, Node, NodeOptions};
use cuttle_proto::v1::packages_client::PackagesClient;
use cuttle_proto::v1::tasks_client::TasksClient;
use cuttle_proto::v1::{
    upload_package_request::Part, CreateTaskRequest, UploadPackageHeader, UploadPackageRequest,
    WatchLogRequest,
};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

/// `q`-quantile of `v` (sorted here), in milliseconds.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

fn with_key<T>(msg: T, key: &str) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-api-key", key.parse().context("API key as metadata")?);
    Ok(req)
}

fn sleep_task() -> CreateTaskRequest {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "duration_ms".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(0.0)),
        },
    );
    CreateTaskRequest {
        kind: "Sleep".into(),
        arguments: Some(prost_types::Struct { fields }),
        description: None,
        concurrency_tag: None,
    }
}

/// One task over gRPC, queued and followed to its end; milliseconds.
async fn grpc_round_trip(client: &mut TasksClient<Channel>, key: &str) -> Result<f64> {
    let started = Instant::now();
    let task = client
        .create(with_key(sleep_task(), key)?)
        .await?
        .into_inner();
    let mut log = client
        .watch_log(with_key(
            WatchLogRequest {
                id: task.id,
                offset: 0,
            },
            key,
        )?)
        .await?
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = log.message().await? {
        text.push_str(&chunk.text);
    }
    if text.is_empty() {
        bail!("the task's log was empty");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// One task over REST, queued and followed through the web UI's event stream to its end;
/// milliseconds.
fn rest_round_trip(node: &Node, cookie: &str) -> Result<f64> {
    let started = Instant::now();
    let id = node.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}}));
    let mut resp = ureq::get(&node.url(&format!("/ui/tasks/{id}/log/events")))
        .header("Cookie", cookie)
        .call()
        .context("open the live log")?;
    let mut body = String::new();
    let mut reader = resp.body_mut().as_reader();
    let mut buf = [0u8; 4096];
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf)?;
        if n == 0 {
            bail!("the live log ended without its end event");
        }
        body.push_str(&String::from_utf8_lossy(&buf[..n]));
        if body.contains("event: end") {
            break;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Uploads `file` over gRPC in 1 MiB messages; seconds.
async fn grpc_upload(
    channel: Channel,
    key: &str,
    file: &std::path::Path,
    sha: &str,
    version: &str,
) -> Result<f64> {
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadPackageRequest>(4);
    let header = UploadPackageHeader {
        space: "Default".into(),
        package_id: "Bench.Grpc".into(),
        version: version.into(),
        format: "tar.gz".into(),
        sha256: sha.into(),
        replace: false,
    };
    let path = file.to_owned();
    let started = Instant::now();
    let feeder = tokio::spawn(async move {
        tx.send(UploadPackageRequest {
            part: Some(Part::Header(header)),
        })
        .await?;
        let mut f = tokio::fs::File::open(&path).await?;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            buf.truncate(filled);
            tx.send(UploadPackageRequest {
                part: Some(Part::Data(buf.into())),
            })
            .await?;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let p = PackagesClient::new(channel)
        .upload(with_key(stream, key)?)
        .await?
        .into_inner();
    feeder.await??;
    let secs = started.elapsed().as_secs_f64();
    if p.sha256 != sha {
        bail!("the node kept {} instead of {sha}", p.sha256);
    }
    Ok(secs)
}

pub(crate) fn run(samples: usize, size_mib: u64) -> Result<()> {
    let cluster = Cluster::new(Database::Postgres)?;
    let nodes: Vec<Node> = (1..=2)
        .map(|i| {
            cluster.start(NodeOptions {
                env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
                ..NodeOptions::named(&format!("n{i}"), 8)
            })
        })
        .collect();
    let key = nodes[0].api_key();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let channel = |node: &Node| {
        let url = format!("http://127.0.0.1:{}", node.public_grpc_port);
        rt.block_on(async {
            Channel::from_shared(url)?
                .connect()
                .await
                .map_err(anyhow::Error::from)
        })
    };

    println!(
        "\n## a task queued and followed to its end, {samples} times each way, one node \
         (PostgreSQL)"
    );
    let mut tasks = TasksClient::new(channel(&nodes[0])?);
    let cookie = format!("cuttle_session={}", crate::ui::sign_in(&nodes[0])?);
    // Warm both paths up (connections, caches) before timing.
    rt.block_on(grpc_round_trip(&mut tasks, &key))?;
    rest_round_trip(&nodes[0], &cookie)?;
    let (mut grpc, mut rest) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        grpc.push(rt.block_on(grpc_round_trip(&mut tasks, &key))?);
        rest.push(rest_round_trip(&nodes[0], &cookie)?);
    }
    println!("| way | p50 ms | p99 ms |");
    println!("| --- | --- | --- |");
    for (way, v) in [
        ("gRPC Create + WatchLog", &mut grpc),
        ("REST POST /api/tasks + live log (SSE)", &mut rest),
    ] {
        println!(
            "| {way} | {:.1} | {:.1} |",
            quantile(v, 0.5),
            quantile(v, 0.99)
        );
    }

    println!("\n## a {size_mib} MiB package uploaded over gRPC and over REST, one node each");
    let work = cluster.dir().join("bench-grpc");
    std::fs::create_dir_all(&work)?;
    let src = work.join("package.tar.gz");
    let g = Generated::gzip(11, size_mib << 20);
    crate::upload::write_package(&g, &src)?;
    let sha = g.sha256();
    let before = peak_rss_kib(nodes[0].pid().context("n1's pid")?);
    let secs = rt.block_on(grpc_upload(channel(&nodes[0])?, &key, &src, &sha, "1.0.0"))?;
    let grpc_growth = peak_rss_kib(nodes[0].pid().context("n1's pid")?).saturating_sub(before);
    let before = peak_rss_kib(nodes[1].pid().context("n2's pid")?);
    let url = nodes[1]
        .url("/api/spaces/Spaces-1/packages/raw?package_id=Bench.Rest&version=1.0.0&format=tar.gz");
    let rest_secs = crate::upload::upload_seconds(&url, &key, &src, &sha, None)?;
    let rest_growth = peak_rss_kib(nodes[1].pid().context("n2's pid")?).saturating_sub(before);
    println!("| way | seconds | MiB/s | node's peak RSS growth |");
    println!("| --- | --- | --- | --- |");
    for (way, s, kib) in [
        ("gRPC Packages.Upload, 1 MiB messages", secs, grpc_growth),
        ("REST …/packages/raw (curl)", rest_secs, rest_growth),
    ] {
        println!(
            "| {way} | {s:.2} | {:.0} | {:.1} MiB |",
            size_mib as f64 / s,
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

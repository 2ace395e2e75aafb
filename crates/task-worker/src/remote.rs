//! Running a task's script on deployment targets: through the gateway that holds a polling
//! tentacle's session (any node's, via its `TentacleRelay`), or straight to a listening
//! tentacle over mutual TLS with the cluster certificate. Every target's output goes to the task
//! log, prefixed with the target's name.

use std::collections::HashMap;
use std::time::Duration;

use cuttle_core::{Comms, TargetHealth, TargetRecord, TargetSelection};
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_client::TentacleRelayClient;
use cuttle_proto::v1::{
    file_chunk, script_event, CapabilitiesRequest, FileChunk, FileHeader, PullFileRequest,
    PushFileReply, RelayCapabilities, RelayPullFile, RelayRunScript, RunScriptRequest, ScriptEvent,
};
use cuttle_storage::{Execution, SharedStore, Store};
use cuttle_tls::{Thumbprint, Trusted};
use futures_util::future::join_all;
use tonic::Streaming;

use crate::exec::{Outcome, TaskCtx};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker needs to reach targets.
pub(crate) struct Targets {
    pub(crate) store: Store,
    /// Where files pushed to targets come from.
    pub(crate) shared: SharedStore,
    /// Presented to listening tentacles.
    pub(crate) cluster: cuttle_tls::ClusterTls,
    pub(crate) offline_after: Duration,
}

/// Runs `script` on every selected target at once; succeeds when it exits 0 everywhere.
pub(crate) async fn run(
    key: Execution,
    script: &str,
    shell: Option<&str>,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Outcome {
    let chosen = match selected(on, ctx).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    let names: Vec<&str> = chosen.iter().map(|t| t.name.as_str()).collect();
    ctx.logs
        .line(
            key,
            format!(
                "INFO  running on {} target(s): {}",
                chosen.len(),
                names.join(", ")
            ),
        )
        .await;
    combined(join_all(chosen.iter().map(|t| run_on(key, script, shell, t, ctx))).await)
}

/// The targets `on` might select: just those listed when it names targets only (no need to
/// read thousands of rows to check one), otherwise all of them.
async fn candidates(on: &TargetSelection, ctx: &TaskCtx) -> Result<Vec<TargetRecord>, Outcome> {
    let (store, offline) = (&ctx.targets.store, ctx.targets.offline_after);
    let failed = |e: cuttle_storage::Error| Outcome::failed(format!("read targets: {e}"));
    if on.targets.is_empty() || !on.roles.is_empty() || !on.environments.is_empty() {
        return store.list_targets(None, offline).await.map_err(failed);
    }
    let mut found = Vec::with_capacity(on.targets.len());
    for id in &on.targets {
        if let Some(t) = store.get_target(*id, offline).await.map_err(failed)? {
            found.push(t);
        }
    }
    Ok(found)
}

/// The targets `on` selects; a failed outcome when it names an unknown target or selects none.
async fn selected(on: &TargetSelection, ctx: &TaskCtx) -> Result<Vec<TargetRecord>, Outcome> {
    let all = candidates(on, ctx).await?;
    let unknown: Vec<String> = on
        .targets
        .iter()
        .filter(|id| !all.iter().any(|t| t.id == **id))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(Outcome::failed(format!(
            "no such target: {}",
            unknown.join(", ")
        )));
    }
    let chosen: Vec<TargetRecord> = all.into_iter().filter(|t| on.matches(t)).collect();
    if chosen.is_empty() {
        return Err(Outcome::failed(
            "no target matches the task's targets, roles and environments",
        ));
    }
    Ok(chosen)
}

/// Success when every target succeeded; otherwise failed, naming each target's failure.
fn combined(results: Vec<Result<(), String>>) -> Outcome {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Outcome::success()
    } else {
        Outcome::failed(failures.join("; "))
    }
}

/// Sends a file from the shared store to every selected target at once. Read twice from the
/// store (to hash it, then to send it), never held in memory.
pub(crate) async fn push_file(
    key: Execution,
    source: &str,
    destination: &str,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Outcome {
    let path = ctx.targets.shared.root().join(source);
    let hashed = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || cuttle_proto::files::sha256_file(&path)).await
    };
    let (size, sha256) = match hashed {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Outcome::failed(format!("read {}: {e}", path.display())),
        Err(e) => return Outcome::failed(format!("hash {}: {e}", path.display())),
    };
    let chosen = match selected(on, ctx).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    ctx.logs
        .line(
            key,
            format!(
                "INFO  sending {source} ({size} bytes, SHA-256 {sha256}) to {} target(s) as {destination}",
                chosen.len()
            ),
        )
        .await;
    let header = FileHeader {
        path: destination.to_owned(),
        size,
        sha256,
    };
    combined(join_all(chosen.iter().map(|t| push_one(key, t, &path, &header, ctx))).await)
}

async fn push_one(
    key: Execution,
    t: &TargetRecord,
    path: &std::path::Path,
    header: &FileHeader,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let reply: Result<PushFileReply, String> = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| async move {
                let chunks = cuttle_proto::files::chunks(path, header.clone())
                    .await
                    .map_err(|e| {
                        tonic::Status::internal(format!("read {}: {e}", path.display()))
                    })?;
                let mut request = tonic::Request::new(chunks);
                if let Ok(v) = t.id.0.to_string().parse() {
                    request
                        .metadata_mut()
                        .insert(cuttle_proto::TARGET_METADATA, v);
                }
                client.push_file(request).await
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => match cuttle_proto::files::chunks(path, header.clone()).await {
                Ok(chunks) => client
                    .push_file(chunks)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| s.message().to_owned()),
                Err(e) => Err(format!("read {}: {e}", path.display())),
            },
            Err(e) => Err(e),
        },
    };
    let reply = reply.map_err(|e| format!("{}: {e}", t.name))?;
    if reply.size != header.size || reply.sha256 != header.sha256 {
        return Err(format!(
            "{}: received {} bytes with SHA-256 {}",
            t.name, reply.size, reply.sha256
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    ctx.logs
        .line(
            key,
            format!(
                "INFO  [{}] received {} bytes in {secs:.1} s ({:.0} MiB/s) at {}",
                t.name,
                reply.size,
                reply.size as f64 / 1048576.0 / secs.max(0.001),
                reply.path
            ),
        )
        .await;
    Ok(())
}

async fn run_on(
    key: Execution,
    script: &str,
    shell: Option<&str>,
    t: &TargetRecord,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let request = RunScriptRequest {
        script: script.to_owned(),
        shell: shell.unwrap_or_default().to_owned(),
        env: HashMap::from([
            ("CUTTLE_TASK_ID".to_owned(), key.task.to_string()),
            ("CUTTLE_TARGET_NAME".to_owned(), t.name.clone()),
        ]),
        working_dir: String::new(),
    };
    let stream = match t.comms {
        Comms::Polling => through_gateway(t, request, ctx).await,
        Comms::Listening => direct(t, request, ctx).await,
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    follow(key, t, stream, ctx).await
}

/// Asks each node holding a session with the target, in turn, to relay the call.
async fn through_gateway(
    t: &TargetRecord,
    request: RunScriptRequest,
    ctx: &TaskCtx,
) -> Result<Streaming<ScriptEvent>, String> {
    relayed(t, ctx, |mut client| {
        let relay = RelayRunScript {
            target_id: t.id.0,
            request: Some(request.clone()),
        };
        async move { client.run_script(relay).await }
    })
    .await
}

/// Makes `call` through each online gateway holding a session with the target until one
/// answers; the errors of all tried otherwise.
async fn relayed<T, F, Fut>(t: &TargetRecord, ctx: &TaskCtx, call: F) -> Result<T, String>
where
    F: Fn(TentacleRelayClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut errors = Vec::new();
    for node in &t.connected_nodes {
        let addr = match ctx
            .targets
            .store
            .get_node(node, ctx.targets.offline_after)
            .await
        {
            Ok(Some(n)) if n.online => n.grpc_address,
            Ok(_) => continue,
            Err(e) => return Err(format!("find node {node}: {e}")),
        };
        let channel =
            match cuttle_proto::wire::cluster_channel(&addr, &ctx.targets.cluster, CONNECT_TIMEOUT)
            {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("through node {node}: {e}"));
                    continue;
                }
            };
        match call(TentacleRelayClient::new(channel)).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) => errors.push(format!("through node {node}: {}", s.message())),
        }
    }
    if errors.is_empty() {
        Err("no gateway holds a session with this target (is its tentacle running?)".into())
    } else {
        Err(errors.join(", "))
    }
}

/// Connects to a listening tentacle, which must present the registered certificate.
async fn listening(
    t: &TargetRecord,
    ctx: &TaskCtx,
) -> Result<TentacleClient<cuttle_proto::wire::Channel>, String> {
    let endpoint = t
        .endpoint
        .as_deref()
        .ok_or("a listening target without an endpoint")?;
    let thumbprint: Thumbprint = t.thumbprint.parse().map_err(|e| format!("{e}"))?;
    let config =
        cuttle_tls::client_config(&ctx.targets.cluster.identity, Trusted::new([thumbprint]))
            .map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| format!("connect to {endpoint}: timed out"))?
        .map_err(|e| format!("connect to {endpoint}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(cuttle_tls::server_name(), tcp)
        .await
        .map_err(|e| format!("TLS with {endpoint}: {e}"))?;
    let (channel, connection) = cuttle_proto::wire::connect(tls)
        .await
        .map_err(|e| format!("session with {endpoint}: {e}"))?;
    tokio::spawn(connection);
    Ok(TentacleClient::new(channel))
}

async fn direct(
    t: &TargetRecord,
    request: RunScriptRequest,
    ctx: &TaskCtx,
) -> Result<Streaming<ScriptEvent>, String> {
    listening(t, ctx)
        .await?
        .run_script(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_owned())
}

/// Collects a file from every selected target into the shared store as the task's artifacts.
pub(crate) async fn pull_file(
    key: Execution,
    source: &str,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Outcome {
    let chosen = match selected(on, ctx).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    combined(join_all(chosen.iter().map(|t| pull_one(key, t, source, ctx))).await)
}

async fn pull_one(
    key: Execution,
    t: &TargetRecord,
    source: &str,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let request = PullFileRequest {
        path: source.to_owned(),
    };
    let stream = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let relay = RelayPullFile {
                    target_id: t.id.0,
                    request: Some(request.clone()),
                };
                async move { client.pull_file(relay).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .pull_file(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    let file_name = std::path::Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dest = ctx
        .targets
        .shared
        .artifact_path(key.task, &t.name, &file_name);
    let temp = ctx
        .targets
        .shared
        .artifact_temp(&ctx.node)
        .map_err(|e| format!("{}: {e}", t.name))?;
    let received = receive(stream, &temp).await;
    let placed = received.and_then(|(size, sha256)| {
        ctx.targets
            .shared
            .place_artifact(&temp, &dest)
            .map(|()| (size, sha256))
            .map_err(|e| e.to_string())
    });
    match placed {
        Ok((size, sha256)) => {
            ctx.logs
                .line(
                    key,
                    format!(
                        "INFO  [{}] collected {source} ({size} bytes, SHA-256 {sha256}) as {}",
                        t.name,
                        dest.display()
                    ),
                )
                .await;
            Ok(())
        }
        Err(e) => {
            // Half-received: nothing is put in place.
            let _ = tokio::fs::remove_file(&temp).await;
            Err(format!("{}: {e}", t.name))
        }
    }
}

/// Writes a pulled file to `temp`, checking it against its header; fsynced when it returns Ok.
async fn receive(
    mut stream: Streaming<FileChunk>,
    temp: &std::path::Path,
) -> Result<(u64, String), String> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let header = match stream.message().await.map_err(|s| s.message().to_owned())? {
        Some(FileChunk {
            part: Some(file_chunk::Part::Header(h)),
        }) => h,
        _ => return Err("the file did not start with its header".into()),
    };
    let io = |e: std::io::Error| format!("write {}: {e}", temp.display());
    let mut file = tokio::fs::File::create(temp).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
        let Some(file_chunk::Part::Data(bytes)) = chunk.part else {
            return Err("a second header in one file".into());
        };
        size += bytes.len() as u64;
        if size > header.size {
            return Err(format!("more than the announced {} bytes", header.size));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    let sha256 = cuttle_proto::files::hex(&hasher.finalize());
    if size != header.size || sha256 != header.sha256 {
        return Err(format!(
            "received {size} bytes with SHA-256 {sha256}; the tentacle announced {} bytes with {}",
            header.size, header.sha256
        ));
    }
    Ok((size, sha256))
}

/// Below this much free disk a target is Unhealthy: deployments there are about to fail.
const MIN_FREE_DISK: u64 = 1 << 30;
/// How long a target may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks every selected target (all, when none are selected) for its capabilities and records
/// its health: Healthy, Unhealthy (answers but low on disk) or Unavailable (does not answer).
/// Succeeds when every target is healthy.
pub(crate) async fn health_check(key: Execution, on: &TargetSelection, ctx: &TaskCtx) -> Outcome {
    let all = match candidates(on, ctx).await {
        Ok(t) => t,
        Err(o) => return o,
    };
    let chosen: Vec<&TargetRecord> = all
        .iter()
        .filter(|t| on.is_empty() || on.matches(t))
        .collect();
    ctx.logs
        .line(key, format!("INFO  checking {} target(s)", chosen.len()))
        .await;
    let checks = chosen.iter().map(|t| async move {
        let health = match tokio::time::timeout(CHECK_TIMEOUT, check(t, ctx)).await {
            Ok(h) => h,
            Err(_) => (
                TargetHealth::Unavailable,
                "no answer within 30 s".to_owned(),
                Vec::new(),
            ),
        };
        (*t, health)
    });
    let mut sick = Vec::new();
    for (t, (health, reason, trusted)) in join_all(checks).await {
        if let Err(e) = ctx
            .targets
            .store
            .set_target_health(t.id, health, &reason)
            .await
        {
            return Outcome::failed(format!("record the health of {}: {e}", t.name));
        }
        // What the tentacle now trusts: a new cluster certificate is activated only once every
        // target trusts it. (A tentacle too old to say leaves the record alone.)
        if !trusted.is_empty() && trusted != t.cluster_trust {
            if let Err(e) = ctx.targets.store.record_cluster_trust(t.id, &trusted).await {
                return Outcome::failed(format!("record what {} trusts: {e}", t.name));
            }
        }
        let level = if health == TargetHealth::Healthy {
            "INFO "
        } else {
            "WARN "
        };
        ctx.logs
            .line(
                key,
                format!("{level} [{}] {}: {reason}", t.name, health.as_str()),
            )
            .await;
        if health != TargetHealth::Healthy {
            sick.push(format!("{} ({}: {reason})", t.name, health.as_str()));
        }
    }
    if sick.is_empty() {
        Outcome::success()
    } else {
        Outcome::failed(format!(
            "{} of {} target(s) not healthy: {}",
            sick.len(),
            chosen.len(),
            sick.join("; ")
        ))
    }
}

/// Asks one target for its capabilities, telling it which cluster certificates to trust;
/// returns its health, why, and the cluster certificates it trusts.
async fn check(t: &TargetRecord, ctx: &TaskCtx) -> (TargetHealth, String, Vec<String>) {
    let ask = CapabilitiesRequest {
        trust_clusters: ctx
            .targets
            .cluster
            .accepted
            .thumbprints()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let answer = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let req = RelayCapabilities {
                    target_id: t.id.0,
                    request: Some(ask.clone()),
                };
                async move { client.capabilities(req).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .capabilities(ask)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    };
    match answer {
        Err(e) => (TargetHealth::Unavailable, e, Vec::new()),
        Ok(c) if c.free_disk_bytes < MIN_FREE_DISK => (
            TargetHealth::Unhealthy,
            format!(
                "only {} MiB of free disk (at least {} MiB needed)",
                c.free_disk_bytes >> 20,
                MIN_FREE_DISK >> 20
            ),
            c.trusted_clusters,
        ),
        Ok(c) => (
            TargetHealth::Healthy,
            format!(
                "tentacle {} on {}, {} GiB free",
                c.version,
                c.os,
                c.free_disk_bytes >> 30
            ),
            c.trusted_clusters,
        ),
    }
}

/// Copies the script's output into the task log until its exit code arrives.
async fn follow(
    key: Execution,
    t: &TargetRecord,
    mut stream: Streaming<ScriptEvent>,
    ctx: &TaskCtx,
) -> Result<(), String> {
    loop {
        let event = stream
            .message()
            .await
            .map_err(|s| format!("{}: {}", t.name, s.message()))?;
        match event.and_then(|e| e.event) {
            Some(script_event::Event::Line(l)) => {
                let prefix = if l.stderr { "ERR  " } else { "OUT  " };
                ctx.logs
                    .line(key, format!("{prefix} [{}] {}", t.name, l.text))
                    .await;
            }
            Some(script_event::Event::ExitCode(0)) => return Ok(()),
            Some(script_event::Event::ExitCode(code)) => {
                return Err(format!("{} exited with code {code}", t.name))
            }
            None => {
                return Err(format!(
                    "{}: the connection ended before the script did",
                    t.name
                ))
            }
        }
    }
}

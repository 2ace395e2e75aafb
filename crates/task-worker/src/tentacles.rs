//! Reaching deployment targets: through the gateway that holds a polling tentacle's session
//! (any node's, via its `TentacleRelay`, over a cached channel per node), or straight to a
//! listening tentacle over mutual TLS with the cluster certificate. Used by every task kind that
//! works on targets. Every call carries the caller's trace (`traceparent` metadata).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cuttle_core::{Comms, TargetRecord, TargetSelection};
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_client::TentacleRelayClient;
use cuttle_proto::v1::{
    script_event, ExtractPackageReply, ExtractPackageRequest, FileHeader, PushFileReply,
    RelayExtractPackage, RelayRunScript, RunScriptRequest, ScriptEvent,
};
use cuttle_storage::{Execution, SharedStore, Store};
use cuttle_telemetry::trace::grpc_request;
use cuttle_tls::{Thumbprint, Trusted};
use tonic::Streaming;

use crate::ctx::{TaskCtx, TaskError, TaskResult};
use crate::output::Output;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker needs to reach targets.
pub(crate) struct Targets {
    pub(crate) store: Store,
    /// Where files pushed to targets come from.
    pub(crate) shared: SharedStore,
    /// Presented to listening tentacles.
    pub(crate) cluster: cuttle_tls::ClusterTls,
    pub(crate) offline_after: Duration,
    /// One lazily connecting channel per gateway node's internal address, shared by every
    /// call through it.
    pub(crate) channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    /// Opens sensitive variable values (deployments); `None` in tests that deploy nothing.
    pub(crate) data_keys: Option<cuttle_storage::Keyring>,
}

impl Targets {
    pub(crate) fn new(
        store: Store,
        shared: SharedStore,
        cluster: cuttle_tls::ClusterTls,
        offline_after: Duration,
    ) -> Targets {
        Targets {
            store,
            shared,
            cluster,
            offline_after,
            channels: Mutex::new(HashMap::new()),
            data_keys: None,
        }
    }

    /// The channel to a node's internal port, made once and reused.
    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = cuttle_proto::wire::cluster_channel(addr, &self.cluster, CONNECT_TIMEOUT)
            .map_err(|e| e.to_string())?;
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

/// The targets `on` might select: just those listed when it names targets only (no need to
/// read thousands of rows to check one), otherwise all of them.
pub(crate) async fn candidates(
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Result<Vec<TargetRecord>, TaskError> {
    let (store, offline) = (&ctx.targets.store, ctx.targets.offline_after);
    let failed = |e: cuttle_storage::Error| TaskError::Failed(format!("read targets: {e}"));
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
pub(crate) async fn selected(
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Result<Vec<TargetRecord>, TaskError> {
    let all = candidates(on, ctx).await?;
    let unknown: Vec<String> = on
        .targets
        .iter()
        .filter(|id| !all.iter().any(|t| t.id == **id))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(TaskError::Failed(format!(
            "no such target: {}",
            unknown.join(", ")
        )));
    }
    let chosen: Vec<TargetRecord> = all.into_iter().filter(|t| on.matches(t)).collect();
    if chosen.is_empty() {
        return Err(TaskError::Failed(
            "no target matches the task's targets, roles and environments".into(),
        ));
    }
    Ok(chosen)
}

/// Success when every target succeeded; otherwise failed, naming each target's failure.
pub(crate) fn all_succeeded(results: Vec<Result<(), String>>) -> TaskResult {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TaskError::Failed(failures.join("; ")))
    }
}

/// Makes `call` through each online gateway holding a session with the target until one
/// answers; the errors of all tried otherwise.
pub(crate) async fn relayed<T, F, Fut>(
    t: &TargetRecord,
    ctx: &TaskCtx,
    call: F,
) -> Result<T, String>
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
        let channel = match ctx.targets.channel(&addr) {
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
pub(crate) async fn listening(
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

pub(crate) async fn direct(
    t: &TargetRecord,
    request: RunScriptRequest,
    ctx: &TaskCtx,
) -> Result<Streaming<ScriptEvent>, String> {
    listening(t, ctx)
        .await?
        .run_script(grpc_request(request))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_owned())
}

/// Copies the script's output into the task log until its exit code arrives.
async fn follow(
    key: Execution,
    t: &TargetRecord,
    mut stream: Streaming<ScriptEvent>,
    out: &Output,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let ended = follow_lines(key, t, &mut stream, out, ctx).await;
    // A line cut short by the end of the output: what masking held back of it.
    for stderr in [false, true] {
        if let Some(rest) = out.rest(Some(&t.name), stderr) {
            let prefix = if stderr { "ERR  " } else { "OUT  " };
            ctx.logs
                .line(key, format!("{prefix} [{}] {rest}", t.name))
                .await;
        }
    }
    ended
}

async fn follow_lines(
    key: Execution,
    t: &TargetRecord,
    stream: &mut Streaming<ScriptEvent>,
    out: &Output,
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
                if let Some(text) = out.piece(Some(&t.name), l.stderr, &l.text, l.continues) {
                    ctx.logs
                        .line(key, format!("{prefix} [{}] {text}", t.name))
                        .await;
                }
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

/// Runs a script on one target (through a gateway, or straight to a listening tentacle) and
/// follows its output into the log through `out`; Ok when it exits 0.
pub(crate) async fn run_script_on(
    key: Execution,
    t: &TargetRecord,
    request: RunScriptRequest,
    out: &Output,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let stream = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let relay = RelayRunScript {
                    target_id: t.id.0,
                    request: Some(request.clone()),
                };
                async move { client.run_script(grpc_request(relay)).await }
            })
            .await
        }
        Comms::Listening => direct(t, request, ctx).await,
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    let ran = follow(key, t, stream, out, ctx).await;
    // Whatever the script's end: what it handed over is kept.
    let asked = out.take_artifacts(Some(&t.name));
    if !asked.is_empty() {
        crate::artifacts::collect_from_target(key, t, asked, ctx).await;
    }
    ran
}

/// Sends a file from the shared store to a target's files folder (read as the transport asks,
/// never held whole); checked by size and SHA-256 on arrival. Errors name the target.
pub(crate) async fn send_file(
    t: &TargetRecord,
    path: &std::path::Path,
    header: &FileHeader,
    ctx: &TaskCtx,
) -> Result<PushFileReply, String> {
    let reply: Result<PushFileReply, String> = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| async move {
                let chunks = cuttle_proto::files::chunks(path, header.clone())
                    .await
                    .map_err(|e| {
                        tonic::Status::internal(format!("read {}: {e}", path.display()))
                    })?;
                let mut request = grpc_request(chunks);
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
                    .push_file(grpc_request(chunks))
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
    Ok(reply)
}

/// Unpacks a package already sent to a target (see `ExtractPackage`). Errors name the target.
pub(crate) async fn extract_on(
    t: &TargetRecord,
    request: ExtractPackageRequest,
    ctx: &TaskCtx,
) -> Result<ExtractPackageReply, String> {
    let reply = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let relayed = RelayExtractPackage {
                    target_id: t.id.0,
                    request: Some(request.clone()),
                };
                async move { client.extract_package(grpc_request(relayed)).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .extract_package(grpc_request(request))
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    };
    reply.map_err(|e| format!("{}: {e}", t.name))
}

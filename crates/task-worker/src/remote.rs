//! Running a task's script on deployment targets: through the gateway that holds a polling
//! tentacle's session (any node's, via its `TentacleRelay`), or straight to a listening
//! tentacle over mutual TLS with the cluster certificate. Every target's output goes to the task
//! log, prefixed with the target's name.

use std::collections::HashMap;
use std::time::Duration;

use cuttle_core::{Comms, TargetRecord, TargetSelection};
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_client::TentacleRelayClient;
use cuttle_proto::v1::{script_event, RelayRunScript, RunScriptRequest, ScriptEvent};
use cuttle_storage::{Execution, Store};
use cuttle_tls::{Identity, Thumbprint, Trusted};
use futures_util::future::join_all;
use tonic::Streaming;

use crate::exec::{Outcome, TaskCtx};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker needs to reach targets.
pub(crate) struct Targets {
    pub(crate) store: Store,
    /// Presented to listening tentacles.
    pub(crate) cluster: Identity,
    pub(crate) offline_after: Duration,
}

/// Runs `script` on every selected target at once; succeeds when it exits 0 everywhere.
pub(crate) async fn run(
    key: Execution,
    script: &str,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> Outcome {
    let all = match ctx
        .targets
        .store
        .list_targets(None, ctx.targets.offline_after)
        .await
    {
        Ok(t) => t,
        Err(e) => return Outcome::failed(format!("list targets: {e}")),
    };
    let unknown: Vec<String> = on
        .targets
        .iter()
        .filter(|id| !all.iter().any(|t| t.id == **id))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Outcome::failed(format!("no such target: {}", unknown.join(", ")));
    }
    let chosen: Vec<&TargetRecord> = all.iter().filter(|t| on.matches(t)).collect();
    if chosen.is_empty() {
        return Outcome::failed("no target matches the task's targets, roles and environments");
    }
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
    let results = join_all(chosen.iter().map(|t| run_on(key, script, t, ctx))).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Outcome::success()
    } else {
        Outcome::failed(failures.join("; "))
    }
}

async fn run_on(
    key: Execution,
    script: &str,
    t: &TargetRecord,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let request = RunScriptRequest {
        script: script.to_owned(),
        shell: String::new(),
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
        let call = async {
            let channel =
                cuttle_proto::wire::cluster_channel(&addr, &ctx.targets.cluster, CONNECT_TIMEOUT)
                    .map_err(|e| e.to_string())?;
            let mut client = TentacleRelayClient::new(channel);
            let relay = RelayRunScript {
                target_id: t.id.0,
                request: Some(request.clone()),
            };
            client
                .run_script(relay)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned())
        };
        match call.await {
            Ok(stream) => return Ok(stream),
            Err(e) => errors.push(format!("through node {node}: {e}")),
        }
    }
    if errors.is_empty() {
        Err("no gateway holds a session with this target (is its tentacle running?)".into())
    } else {
        Err(errors.join(", "))
    }
}

/// Connects to a listening tentacle, which must present the registered certificate.
async fn direct(
    t: &TargetRecord,
    request: RunScriptRequest,
    ctx: &TaskCtx,
) -> Result<Streaming<ScriptEvent>, String> {
    let endpoint = t
        .endpoint
        .as_deref()
        .ok_or("a listening target without an endpoint")?;
    let thumbprint: Thumbprint = t.thumbprint.parse().map_err(|e| format!("{e}"))?;
    let config = cuttle_tls::client_config(&ctx.targets.cluster, Trusted::new([thumbprint]))
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
    TentacleClient::new(channel)
        .run_script(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_owned())
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

//! `cuttle-server run`: one node. Registers itself, keeps its heartbeat, hosts its roles, and
//! on SIGTERM/Ctrl-C drains before it exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cuttle_api_gateway::{ApiConfig, ApiDeps, LocalWake, WakeReason};
use cuttle_core::Role;
use cuttle_storage::{Keyring, NodeRegistration, NodeState, SharedStore, Store, TaskLogWriter};
use cuttle_task_scheduler::SchedulerConfig;
use cuttle_task_worker::{DbContact, WorkerConfig, WorkerControlService, WorkerDeps, WorkerHandle};
use cuttle_tentacle_gateway::{GatewayDeps, TentacleRelayService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpTls};
use crate::startup;
use crate::{advertise, cluster_cert, data_keys};

/// How long non-worker roles get to stop once the worker has drained.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {what} listener {addr}"))
}

#[allow(clippy::print_stdout)] // the URL and a generated key are the command's output
pub(crate) async fn run(cfg: Config) -> Result<()> {
    // Every listener's caps come from the descriptors the process may hold.
    let open_files = cuttle_proto::admission::raise_open_file_limit();
    let internal_limits =
        cuttle_proto::admission::Limits::from_open_files(open_files, 1.0 / 8.0, 1024);
    let gateway_limits = cuttle_proto::admission::Limits::from_open_files(open_files, 0.5, 100_000);
    if (cfg.http_limits.max_connections as u64) > open_files / 4 {
        tracing::warn!(open_files, max_connections = cfg.http_limits.max_connections,
            "CUTTLE_HTTP_MAX_CONNECTIONS exceeds a quarter of the open-file limit: raise LimitNOFILE");
    }
    tracing::info!(
        open_files,
        internal = internal_limits.max_established,
        gateway = gateway_limits.max_established,
        "connection limits"
    );
    let store = startup::connect(&cfg).await?;
    startup::prepare_schema(&store).await?;
    let master_key = startup::master_key(&cfg, &store).await?;
    let cluster = cluster_cert::load(&store, &master_key).await?;
    tracing::info!(thumbprint = %cluster.identity.thumbprint(), "cluster certificate");
    let metrics = cuttle_telemetry::metrics();
    metrics.set_version(env!("CARGO_PKG_VERSION"));
    if let Some(at) = cluster.identity.not_after() {
        metrics
            .certificate_expiry
            .with_label_values(&["cluster"])
            .set(at);
    }
    let shared = startup::shared_store(&cfg, &store).await?;
    let data_keys = Keyring::load(&store, &master_key).await?;
    let generated_key = startup::bootstrap_api_key(&cfg, &store, &data_keys.get().hasher).await?;

    let http = if cfg.roles.contains(Role::Api) {
        Some(bind("http", cfg.http_listen).await?)
    } else {
        None
    };
    let public_grpc = match cfg.public_grpc_listen {
        Some(addr) if cfg.roles.contains(Role::Api) => {
            let l = bind("public gRPC", addr).await?;
            tracing::info!(address = %addr, "public gRPC API (cuttle.v1) listening");
            Some(l)
        }
        _ => None,
    };
    let grpc = if cfg.roles.contains(Role::Worker) || cfg.roles.contains(Role::Gateway) {
        Some(bind("grpc", cfg.grpc_listen).await?)
    } else {
        None
    };
    let gateway = if cfg.roles.contains(Role::Gateway) {
        Some(bind("gateway", cfg.gateway_listen).await?)
    } else {
        None
    };
    // What other machines dial: never 0.0.0.0 (derived, or refused naming the setting).
    let advertise =
        |setting, l: &Option<TcpListener>, listen: SocketAddr, explicit: &Option<String>| {
            let bound = l
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .unwrap_or(listen);
            advertise::advertised(setting, bound, explicit.as_deref())
        };
    let mut reg = NodeRegistration {
        instance: crate::node_name::new_instance()?,
        replaces: None,
        name: cfg.node_name.clone(),
        roles: cfg.roles.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        http_address: advertise(
            "CUTTLE_HTTP_ADVERTISE",
            &http,
            cfg.http_listen,
            &cfg.http_advertise,
        )?,
        grpc_address: advertise(
            "CUTTLE_GRPC_ADVERTISE",
            &grpc,
            cfg.grpc_listen,
            &cfg.grpc_advertise,
        )?,
        gateway_address: match gateway {
            Some(_) => Some(advertise(
                "CUTTLE_GATEWAY_ADVERTISE",
                &gateway,
                cfg.gateway_listen,
                &cfg.gateway_advertise,
            )?),
            None => None,
        },
        initial_task_cap: cfg.task_cap,
    };
    let state = crate::node_name::register(&store, &mut reg, cfg.offline_after)
        .await
        .context("register node")?;
    startup::master_key_still_matches(&store, &master_key).await?;
    tracing::info!(node = %reg.name, roles = %reg.roles, http = %reg.http_address,
        task_cap = state.task_cap, draining = state.draining, "node registered");
    recover_previous_run(&store, &shared, &reg.name).await?;
    let (state_tx, state_rx) = watch::channel(state);

    // Shutdown order: the worker drains first while everything else (the API answering 418,
    // the heartbeat keeping this node online) keeps running; then the rest stops.
    let worker_stop = CancellationToken::new();
    let rest_stop = CancellationToken::new();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let mut rest = JoinSet::new();
    let db_contact = DbContact::default();
    db_contact.touch(); // registration just succeeded
                        // Fired when another process has taken this node's name over: this one stops.
    let name_lost = CancellationToken::new();
    // Created up front so the scheduler can wake this node's worker for re-queued tasks, and
    // an operator's change of its cap or draining flag can reach the heartbeat at once.
    let worker_handle = cfg.roles.contains(Role::Worker).then(WorkerHandle::new);
    let settings_changed = worker_handle
        .as_ref()
        .map(WorkerHandle::settings_notify)
        .unwrap_or_default();
    rest.spawn(heartbeat(
        store.clone(),
        shared.clone(),
        reg.clone(),
        HeartbeatTimers {
            every: cfg.heartbeat,
            now: settings_changed,
        },
        state_tx,
        db_contact.clone(),
        (rest_stop.clone(), name_lost.clone()),
    ));
    if cfg.roles.contains(Role::Scheduler) {
        let sched = SchedulerConfig {
            health_check_every: cfg.health_check,
            maintenance: cfg.maintenance.clone(),
            ..SchedulerConfig::new(cfg.offline_after)
        };
        let local = worker_handle.clone();
        // Other nodes' workers find re-queued tasks at their next poll.
        let on_requeue = move || {
            if let Some(h) = &local {
                h.wake_claim();
            }
        };
        rest.spawn(cuttle_task_scheduler::serve(
            sched,
            store.clone(),
            shared.clone(),
            on_requeue,
            rest_stop.clone(),
        ));
    }
    // A rotation stages and retires cluster certificates while nodes run: re-read them.
    rest.spawn(cluster_cert::keep_refreshed(
        store.clone(),
        cluster.clone(),
        rest_stop.clone(),
    ));
    // So do the data keys (`variable-key rotate`, `api-key-secret rotate`).
    rest.spawn(data_keys::keep_refreshed(
        data_keys.clone(),
        rest_stop.clone(),
    ));
    let sessions = cuttle_tentacle_gateway::Sessions::default();
    if let Some(listener) = gateway {
        let stop = rest_stop.clone();
        let deps = GatewayDeps {
            node_name: cfg.node_name.clone(),
            store: store.clone(),
            identity: cluster.identity.clone(),
            sessions: sessions.clone(),
            admission: cuttle_proto::admission::Admission::new(gateway_limits),
        };
        rest.spawn(async move {
            if let Err(e) = cuttle_tentacle_gateway::serve(listener, deps, stop).await {
                tracing::error!(error = %e, "gateway stopped");
            }
        });
    }

    if let Some(listener) = grpc {
        // Internal gRPC: wake-ups for a worker, the tentacle relay for a gateway. Mutual TLS
        // with the cluster certificate: only other nodes of this cluster get past the handshake.
        let mut routes = tonic::service::RoutesBuilder::default();
        if let Some(handle) = &worker_handle {
            routes.add_service(WorkerControlService::new(handle.clone()));
        }
        if cfg.roles.contains(Role::Gateway) {
            routes.add_service(TentacleRelayService::new(
                sessions.clone(),
                cfg.node_name.clone(),
                store.clone(),
            ));
        }
        let acceptor =
            tokio_rustls::TlsAcceptor::from(cluster.server_config().context("internal gRPC TLS")?);
        let stop = rest_stop.clone();
        rest.spawn(cuttle_proto::wire::serve_tls(
            listener,
            acceptor,
            routes.routes().prepare(),
            cuttle_proto::admission::Admission::new(internal_limits),
            stop.cancelled_owned(),
        ));
    }

    let mut worker = None;
    let mut local_wake: Option<LocalWake> = None;
    if let Some(handle) = worker_handle {
        if store.subscribe_enqueued(handle.claim_notify(), rest_stop.clone()) {
            tracing::info!("listening for enqueued tasks (LISTEN/NOTIFY)");
        }
        let h = handle.clone();
        local_wake = Some(Arc::new(move |reason| match reason {
            WakeReason::Enqueued => h.wake_claim(),
            WakeReason::Cancelled => h.wake_reconcile(),
            WakeReason::SettingsChanged => h.settings_changed(),
        }));
        let wcfg = WorkerConfig {
            node_name: cfg.node_name.clone(),
            poll_interval: cfg.poll,
            shutdown_grace: cfg.shutdown_grace,
            work_root: cfg.data_dir.join("work"),
            offline_after: cfg.offline_after,
            sandbox: sandbox_config(&cfg, &shared)?,
        };
        let deps = WorkerDeps {
            store: store.clone(),
            logs: TaskLogWriter::start(shared.clone(), &cfg.node_name, cfg.task_log_max_bytes),
            node_state: state_rx.clone(),
            db_contact: db_contact.clone(),
            cluster: cluster.clone(),
            shared: shared.clone(),
            data_keys: data_keys.clone(),
        };
        worker = Some(tokio::spawn(cuttle_task_worker::serve(
            wcfg,
            deps,
            handle,
            worker_stop.clone(),
        )));
    }

    if let Some(listener) = http {
        let https = https_settings(&cfg, &cluster.identity)?;
        let scheme = if https.is_some() { "https" } else { "http" };
        let api_cfg = ApiConfig {
            node_name: cfg.node_name.clone(),
            offline_after: cfg.offline_after,
            trusted_proxies: cfg.trusted_proxies.clone(),
            cluster_thumbprint: cluster.identity.thumbprint().to_string(),
            https,
            limits: cfg.http_limits.clone(),
            package_max_bytes: cfg.package_max_bytes,
        };
        let deps = ApiDeps {
            store: store.clone(),
            shared: shared.clone(),
            shutting_down: shutting_down.clone(),
            local_wake,
            cluster: cluster.clone(),
            data_keys: data_keys.clone(),
        };
        let stop = rest_stop.clone();
        rest.spawn(async move {
            if let Err(e) =
                cuttle_api_gateway::serve(api_cfg, deps, listener, public_grpc, stop).await
            {
                tracing::error!(error = %e, "api stopped");
            }
        });
        println!(
            "Cuttle node {} is up: {scheme}://{}/",
            cfg.node_name, reg.http_address
        );
    } else {
        println!("Cuttle node {} is up (roles: {})", cfg.node_name, reg.roles);
    }
    if let Some(path) = generated_key {
        println!(
            "The first admin API key is in {} (readable by this user only) until it is first \
             used: move it somewhere safe",
            path.display()
        );
        rest.spawn(startup::remove_first_key_when_used(
            store.clone(),
            path,
            rest_stop.clone(),
        ));
    }

    tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("shutdown requested: draining (ping answers 418, no new tasks)");
        }
        _ = name_lost.cancelled() => {
            tracing::error!("another process holds this node's name now; stopping (its tasks are its own)");
        }
    }
    shutting_down.store(true, Ordering::Relaxed);
    worker_stop.cancel();
    if let Some(w) = worker {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "worker did not drain cleanly"),
            Err(e) => tracing::error!(error = %e, "worker crashed while draining"),
        }
    }
    rest_stop.cancel();
    let all_stopped = tokio::time::timeout(STOP_TIMEOUT, async {
        while rest.join_next().await.is_some() {}
    })
    .await;
    if all_stopped.is_err() {
        tracing::warn!("some roles did not stop within {STOP_TIMEOUT:?}; exiting anyway");
    }
    if name_lost.is_cancelled() {
        bail!(
            "another cuttle-server process took over node name {:?} while this one was cut \
             off; this process stopped",
            reg.name
        );
    }
    if let Err(e) = store.release_node_name(&reg.name, &reg.instance).await {
        tracing::warn!(error = %e, "could not let go of the node name; the next start waits for the heartbeat to age");
    }
    tracing::info!("node stopped");
    Ok(())
}

/// How scripts on this node are isolated: what they must not see (the data directory, the
/// shared store, the configuration file, the TLS key) and what they may write.
fn sandbox_config(cfg: &Config, shared: &SharedStore) -> Result<cuttle_task_worker::SandboxConfig> {
    let shared_root = shared.root().to_owned();
    for w in &cfg.builtin_worker_bind {
        if w.starts_with(&shared_root) || shared_root.starts_with(w) {
            anyhow::bail!(
                "CUTTLE_BUILTIN_WORKER_BIND: {} overlaps the shared store {}, which scripts must \
                 never see",
                w.display(),
                shared_root.display()
            );
        }
    }
    let mut hidden = vec![cfg.data_dir.clone(), shared_root];
    hidden.extend(cfg.config_file.clone());
    if let HttpTls::Files { key, .. } = &cfg.http_tls {
        hidden.push(key.clone());
    }
    Ok(cuttle_task_worker::SandboxConfig {
        mode: cfg.builtin_worker,
        user: cfg.builtin_worker_user.clone(),
        hidden,
        writable: cfg.builtin_worker_bind.clone(),
    })
}

/// Cleans up after this node's previous process, before the worker claims anything: tasks
/// the database still gives this node are failed (or re-queued when retry-safe), and the task
/// logs that process left in progress are salvaged into place.
async fn recover_previous_run(store: &Store, shared: &SharedStore, node: &str) -> Result<()> {
    let released = store
        .release_own_tasks(node)
        .await
        .context("release the previous run's tasks")?;
    if !released.failed.is_empty() || !released.requeued.is_empty() {
        tracing::warn!(
            failed = released.failed.len(),
            requeued = released.requeued.len(),
            "tasks of this node's previous run were still executing; they were stopped with it"
        );
    }
    // Sessions recorded by the previous process ended with it.
    store
        .close_sessions(None, node)
        .await
        .context("clear the previous run's tentacle sessions")?;
    let (s, name) = (shared.clone(), node.to_owned());
    let note = format!("ERROR node {node} restarted; this task's log ends here");
    let mut stopped = released.failed;
    stopped.extend(released.requeued);
    let salvaged =
        tokio::task::spawn_blocking(move || s.salvage_task_logs(&name, &stopped, true, &note))
            .await?
            .context("clean up task logs left in progress")?;
    if salvaged > 0 {
        tracing::info!(
            salvaged,
            "task logs left in progress by the previous run were put in place"
        );
    }
    let s = shared.clone();
    let name = node.to_owned();
    let cleared = tokio::task::spawn_blocking(move || s.clear_in_progress(&name))
        .await?
        .context("clean up uploads and artifacts left in progress")?;
    if cleared > 0 {
        tracing::info!(
            cleared,
            "half-received uploads and artifacts of the previous run were removed"
        );
    }
    Ok(())
}

/// When the heartbeat beats: every `every`, and at once when `now` is notified (an operator
/// changed this node's cap or draining flag; the node reads them back without waiting).
struct HeartbeatTimers {
    every: Duration,
    now: Arc<tokio::sync::Notify>,
}

/// Writes *last seen* every `every` on its own loop, so a busy worker or API never delays it;
/// publishes the operator-controlled cap and draining flag it reads back.
async fn heartbeat(
    store: Store,
    shared: SharedStore,
    reg: NodeRegistration,
    timers: HeartbeatTimers,
    state: watch::Sender<NodeState>,
    contact: DbContact,
    (stop, name_lost): (CancellationToken, CancellationToken),
) {
    let mut tick = tokio::time::interval(timers.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // registration just wrote last seen
    let mut failing = false;
    let mut storage_was_ok = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = timers.now.notified() => tick.reset(),
        }
        let storage_ok = probe_shared_store(&shared, &mut storage_was_ok).await;
        let sent = std::time::Instant::now();
        match store.heartbeat(&reg, storage_ok).await {
            Ok(s) => {
                contact.touch_at(sent);
                if failing {
                    tracing::info!("heartbeat restored");
                    failing = false;
                }
                state.send_if_modified(|cur| {
                    let changed = *cur != s;
                    if changed {
                        tracing::info!(
                            task_cap = s.task_cap,
                            draining = s.draining,
                            "node settings changed"
                        );
                    }
                    *cur = s;
                    changed
                });
            }
            Err(cuttle_storage::Error::NodeNameHeld(why)) => {
                tracing::error!(error = %why, "this node's name is held by another process");
                // Its tasks are the other process's to account for now: stop them at once.
                contact.forget();
                name_lost.cancel();
                return;
            }
            Err(e) => {
                failing = true;
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}

/// How long a shared-store probe may take before the store counts as unusable (a hung NFS
/// mount must not stall the heartbeat).
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes the shared store; logs when its health changes.
async fn probe_shared_store(shared: &SharedStore, was_ok: &mut bool) -> bool {
    let s = shared.clone();
    let probe = tokio::time::timeout(
        STORAGE_PROBE_TIMEOUT,
        tokio::task::spawn_blocking(move || s.check()),
    )
    .await;
    let result = match probe {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("probe crashed: {e}")),
        Err(_) => Err(format!("no answer within {STORAGE_PROBE_TIMEOUT:?}")),
    };
    let ok = result.is_ok();
    match (result, *was_ok) {
        (Err(e), true) => {
            tracing::error!(error = %e, "shared store unusable; tasks that need it will fail")
        }
        (Ok(()), false) => tracing::info!("shared store usable again"),
        _ => {}
    }
    *was_ok = ok;
    ok
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The API's HTTPS settings: the certificate files read and checked now (a node that cannot
/// serve what it was given exits, naming the setting), or the cluster certificate.
fn https_settings(
    cfg: &Config,
    cluster: &cuttle_tls::Identity,
) -> Result<Option<cuttle_api_gateway::Https>> {
    let (key, files) = match &cfg.http_tls {
        HttpTls::Off => return Ok(None),
        HttpTls::Cluster => (
            cluster
                .certified_key()
                .context("serve the cluster certificate over HTTPS")?,
            None,
        ),
        HttpTls::Files { cert, key } => {
            let read = |setting: &str, p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("{setting} {}", p.display()))
            };
            let loaded = cuttle_tls::certified_key_from_pem(
                &read("CUTTLE_HTTP_TLS_CERT", cert)?,
                &read("CUTTLE_HTTP_TLS_KEY", key)?,
            )
            .with_context(|| {
                format!(
                    "CUTTLE_HTTP_TLS_CERT {} / CUTTLE_HTTP_TLS_KEY {}",
                    cert.display(),
                    key.display()
                )
            })?;
            (loaded, Some((cert.clone(), key.clone())))
        }
    };
    Ok(Some(cuttle_api_gateway::Https {
        served: cuttle_tls::ServedCertificate::new(key),
        files,
    }))
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cuttle_core::{TaskId, TaskState};
use cuttle_storage::{
    ClaimedTask, Completion, Execution, NodeState, OwnedTask, Store, TaskLogWriter,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::exec::{self, Outcome, StopReason, TaskCtx};
use crate::fence::{Fence, Running};
use crate::sandbox::Sandbox;

/// Why the worker could not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not record {count} task outcomes before shutting down: {source}")]
    UnrecordedOutcomes {
        count: usize,
        source: cuttle_storage::Error,
    },
    #[error("{0}")]
    Start(String),
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_name: String,
    /// Fallback poll for new tasks, cancels and lost claims when no wake-up arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long running tasks may take to finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// Scripts run in `work_root/<task id>/`, removed afterwards.
    pub work_root: PathBuf,
    /// Out of touch with the database for this long, the node stops its running tasks: the
    /// rest of the cluster has declared it lost and failed them.
    pub offline_after: Duration,
    /// How scripts on this node are isolated (`CUTTLE_BUILTIN_WORKER`).
    pub sandbox: crate::sandbox::SandboxConfig,
}

pub struct WorkerDeps {
    pub store: Store,
    pub logs: TaskLogWriter,
    /// The operator-controlled cap and draining flag, refreshed by the node's heartbeat.
    pub node_state: watch::Receiver<NodeState>,
    /// When the node last reached the database (its heartbeat touches it).
    pub db_contact: DbContact,
    /// The cluster certificate, presented to listening tentacles.
    pub cluster: cuttle_tls::ClusterTls,
    /// The shared store: where files pushed to targets come from.
    pub shared: cuttle_storage::SharedStore,
    /// Opens sensitive variable values for the scripts of a deployment.
    pub data_keys: cuttle_storage::Keyring,
}

/// When the node last wrote its heartbeat. Cheap to clone; shared by the heartbeat (which
/// touches it) and the worker (which fences itself when it grows older than the offline
/// timeout: by then other nodes consider this node lost and have failed its tasks).
#[derive(Clone)]
pub struct DbContact {
    base: Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for DbContact {
    fn default() -> Self {
        DbContact {
            base: Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

/// [`DbContact::forget`]: no contact counts any more.
const FORGOTTEN: u64 = u64::MAX;

impl DbContact {
    /// Records a successful round trip to the database now.
    pub fn touch(&self) {
        self.touch_at(Instant::now().into_std());
    }

    /// Records a successful round trip that began at `sent`: what the database recorded (the
    /// heartbeat's *last seen*) dates from then, not from when the answer came back, and the
    /// cluster counts from it.
    pub fn touch_at(&self, sent: std::time::Instant) {
        let ms = sent
            .saturating_duration_since(self.base.into_std())
            .as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The node's name is another process's now: whatever it runs, the cluster no longer
    /// counts as its — fence at once.
    pub fn forget(&self) {
        self.last_ms.store(FORGOTTEN, Ordering::Relaxed);
    }

    /// Time since the last successful round trip.
    pub fn since(&self) -> Duration {
        match self.last_ms.load(Ordering::Relaxed) {
            FORGOTTEN => Duration::MAX,
            ms => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_millis(ms)),
        }
    }
}

/// Wakes a worker from anywhere in the process (gRPC, LISTEN/NOTIFY, the API) and reads how
/// many tasks it runs. Cheap to clone.
#[derive(Clone, Default)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    claim: Arc<Notify>,
    reconcile: Notify,
    settings: Arc<Notify>,
    running: AtomicU32,
}

impl WorkerHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// New tasks may be queued: claim now rather than at the next poll.
    pub fn wake_claim(&self) {
        self.shared.claim.notify_one();
    }

    /// A task this node runs may have been cancelled: check now.
    pub fn wake_reconcile(&self) {
        self.shared.reconcile.notify_one();
    }

    /// This node's task cap or draining flag was changed: whoever keeps the node's settings
    /// (its heartbeat) reads them back now, so a new cap applies at once.
    pub fn settings_changed(&self) {
        self.shared.settings.notify_one();
    }

    /// The notifier behind [`WorkerHandle::settings_changed`].
    pub fn settings_notify(&self) -> Arc<Notify> {
        self.shared.settings.clone()
    }

    /// The notifier behind [`WorkerHandle::wake_claim`], for event sources that take one.
    pub fn claim_notify(&self) -> Arc<Notify> {
        self.shared.claim.clone()
    }

    /// Tasks executing on this node right now.
    pub fn running(&self) -> u32 {
        self.shared.running.load(Ordering::Relaxed)
    }
}

/// How long a turn waits for more tasks to finish once one has. Bounds the delay added to
/// recording an outcome; new work arriving by wake-up is never delayed by it.
const GATHER: Duration = Duration::from_millis(2);

/// Every this many polls a worker also looks for claims it never received, even when no claim
/// failed visibly. 30 s at the default poll.
const SWEEP_EVERY_POLLS: u32 = 30;

struct Done {
    id: TaskId,
    epoch: i64,
    outcome: Outcome,
}

/// Runs the worker until `shutdown` fires, then drains: claims nothing more, lets running
/// tasks finish for up to the grace period, cancels the rest, and records every outcome.
pub async fn serve(
    config: WorkerConfig,
    deps: WorkerDeps,
    handle: WorkerHandle,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let killed = crate::groups::kill_leftovers(&config.work_root);
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed scripts left running by this node's previous process"
        );
    }
    let mut targets = crate::tentacles::Targets::new(
        deps.store.clone(),
        deps.shared,
        deps.cluster,
        config.offline_after,
    );
    targets.data_keys = Some(deps.data_keys);
    let targets = Arc::new(targets);
    let sandbox = {
        let (cfg, root) = (config.sandbox.clone(), config.work_root.clone());
        tokio::task::spawn_blocking(move || Sandbox::probe(&cfg, &root))
            .await
            .map(Arc::new)
            .map_err(|e| Error::Start(format!("check the scripts' sandbox: {e}")))?
    };
    let mut w = Worker {
        sandbox,
        node: config.node_name.clone(),
        config,
        targets,
        store: deps.store,
        logs: deps.logs,
        handle,
        running: HashMap::new(),
        fence: Fence::default(),
        pending: Vec::new(),
        claims_in_doubt: false,
        polls_since_sweep: 0,
        done_tx: None,
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    w.done_tx = Some(done_tx);
    let mut node_state = deps.node_state;
    // Stops this node's tasks once it is cut off from the database, even while this loop waits
    // on a call that hangs.
    let watchdog = w.fence.clone().watch(
        deps.db_contact,
        w.config.offline_after,
        w.node.clone(),
        w.logs.clone(),
    );
    let mut poll = tokio::time::interval(w.config.poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let shared = w.handle.shared.clone();
    tracing::info!(node = %w.node, "worker started");
    loop {
        let mut reconcile = false;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(d) = done_rx.recv() => {
                w.absorb(d);
                // Tasks claimed together tend to finish together: gather the ones finishing
                // within a moment into this turn, so each round trip records (and refills) a
                // full batch instead of one task at a time.
                let gather_until = Instant::now() + GATHER;
                while !w.running.is_empty() {
                    tokio::select! {
                        Some(d) = done_rx.recv() => w.absorb(d),
                        _ = tokio::time::sleep_until(gather_until) => break,
                    }
                }
            }
            _ = shared.claim.notified() => {}
            _ = shared.reconcile.notified() => reconcile = true,
            _ = poll.tick() => reconcile = true,
            changed = node_state.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        while let Ok(d) = done_rx.try_recv() {
            w.absorb(d);
        }
        if reconcile {
            w.reconcile().await;
        }
        let state = *node_state.borrow();
        w.sync(state).await;
    }
    // Fenced while draining too: the database may be what is gone.
    let drained = w.drain(&mut done_rx).await;
    watchdog.abort();
    drained
}

struct Worker {
    node: String,
    sandbox: Arc<Sandbox>,
    config: WorkerConfig,
    store: Store,
    logs: TaskLogWriter,
    targets: Arc<crate::tentacles::Targets>,
    handle: WorkerHandle,
    running: HashMap<TaskId, Running>,
    /// The running tasks as the fencing watchdog sees them.
    fence: Fence,
    /// Outcomes not yet recorded in the database (kept across database outages).
    pending: Vec<Completion>,
    /// A claim failed with the connection: it may have committed without its answer arriving.
    claims_in_doubt: bool,
    /// Reconciles since the last look for claims this worker never received.
    polls_since_sweep: u32,
    done_tx: Option<mpsc::UnboundedSender<Done>>,
}

impl Worker {
    fn absorb(&mut self, d: Done) {
        if let Some(r) = self.running.remove(&d.id) {
            debug_assert_eq!(r.epoch, d.epoch);
        }
        self.fence.remove(d.id, d.epoch);
        self.handle
            .shared
            .running
            .store(self.running.len() as u32, Ordering::Relaxed);
        self.pending.push(Completion {
            id: d.id,
            epoch: d.epoch,
            state: d.outcome.state,
            error: d.outcome.error,
        });
    }

    /// Compares what runs here with what the database says this node owns: stops tasks that
    /// were cancelled, and tasks taken away from this node (fencing after a loss); gives back
    /// claims that never reached this worker.
    async fn reconcile(&mut self) {
        self.polls_since_sweep = self.polls_since_sweep.saturating_add(1);
        let sweep = self.claims_in_doubt || self.polls_since_sweep >= SWEEP_EVERY_POLLS;
        if self.running.is_empty() && !sweep {
            return;
        }
        let owned = match self.store.owned_tasks(&self.node).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "check owned tasks");
                return;
            }
        };
        if sweep {
            self.requeue_unstarted(&owned).await;
        }
        let owned: HashMap<TaskId, (i64, TaskState)> = owned
            .into_iter()
            .map(|o| (o.id, (o.epoch, o.state)))
            .collect();
        for (id, r) in &self.running {
            if r.stop.is_cancelled() {
                continue;
            }
            match owned.get(id) {
                Some((epoch, TaskState::Cancelling)) if *epoch == r.epoch => {
                    tracing::info!(task = %id, "cancel requested; stopping task");
                    self.logs
                        .line(
                            Execution {
                                task: *id,
                                epoch: r.epoch,
                            },
                            "WARN  cancel requested; stopping",
                        )
                        .await;
                    r.stop(StopReason::Canceled);
                }
                Some((epoch, _)) if *epoch == r.epoch => {}
                _ => {
                    tracing::warn!(task = %id, "task is no longer owned by this node (fenced); stopping it");
                    self.logs
                        .line(Execution { task: *id, epoch: r.epoch }, format!("ERROR node {} lost its claim on this task (it was considered offline); stopping", self.node))
                        .await;
                    r.stop(StopReason::Fenced);
                }
            }
        }
    }

    /// Gives back tasks the database says this node holds but that this worker neither runs nor
    /// has finished: claims whose answer was lost with a dropped connection after the commit.
    /// Sound because claims and this check both happen on this loop: a task claimed here is in
    /// `running` from the moment the claim's answer arrives until its outcome is in `pending`.
    async fn requeue_unstarted(&mut self, owned: &[OwnedTask]) {
        let unstarted: Vec<Execution> = owned
            .iter()
            .filter(|o| !self.running.contains_key(&o.id))
            .filter(|o| !self.pending.iter().any(|p| p.id == o.id))
            .map(|o| Execution {
                task: o.id,
                epoch: o.epoch,
            })
            .collect();
        // Each execution gets its log, in place before the database moves on (as for every
        // execution): one line saying why it never ran.
        for &e in &unstarted {
            self.logs.open(e).await;
            self.logs
                .line(e, format!("WARN  node {} never received this claim (the database connection dropped after it committed); the task goes back to the queue", self.node))
                .await;
            if let Err(err) = self.logs.close(e).await {
                tracing::warn!(task = %e.task, error = %err, "write the log of an unstarted claim");
            }
        }
        match self.store.requeue_unstarted(&self.node, &unstarted).await {
            Ok(back) => {
                for id in back {
                    tracing::warn!(task = %id, "claim never received (the database connection dropped after it committed); the task is back in the queue");
                }
                self.claims_in_doubt = false;
                self.polls_since_sweep = 0;
            }
            Err(e) => tracing::debug!(error = %e, "give back unstarted claims"),
        }
    }

    /// Records every pending outcome and claims as many tasks as the free cap allows, in one
    /// round trip, then starts what was claimed. On a database error the outcomes stay
    /// pending and are retried on the next turn.
    async fn sync(&mut self, state: NodeState) {
        let free = if state.draining || self.done_tx.is_none() {
            0
        } else {
            (state.task_cap as usize).saturating_sub(self.running.len())
        };
        // A failure is logged inside and retried on the next turn.
        let _ = self.turn(free).await;
    }

    /// One round trip: records the pending outcomes and claims up to `free` tasks.
    async fn turn(&mut self, free: usize) -> Result<(), cuttle_storage::Error> {
        if self.pending.is_empty() && free == 0 {
            return Ok(());
        }
        match self
            .store
            .complete_and_claim(&self.node, &self.pending, free as u32)
            .await
        {
            Ok((accepted, claimed)) => {
                self.refused(&accepted);
                self.pending.clear();
                for task in claimed {
                    self.start(task);
                }
                self.handle
                    .shared
                    .running
                    .store(self.running.len() as u32, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = self.pending.len(), "record outcomes and claim tasks; will retry");
                if free > 0 && e.is_unavailable() {
                    self.claims_in_doubt = true;
                }
                Err(e)
            }
        }
    }

    fn refused(&self, accepted: &[TaskId]) {
        for c in self.pending.iter().filter(|c| !accepted.contains(&c.id)) {
            tracing::warn!(task = %c.id, state = c.state.as_str(),
                "outcome refused: the task is no longer this node's (fenced)");
        }
    }

    fn start(&mut self, task: ClaimedTask) {
        let Some(done_tx) = self.done_tx.clone() else {
            return;
        };
        let running = Running::new(task.epoch);
        let ctx = TaskCtx {
            node: self.node.clone(),
            logs: self.logs.clone(),
            stop: running.stop.clone(),
            reason: running.reason.clone(),
            work_root: self.config.work_root.clone(),
            targets: self.targets.clone(),
            sandbox: self.sandbox.clone(),
        };
        let (id, epoch) = (task.id, task.epoch);
        let kind = task.kind.clone();
        let metrics = cuttle_telemetry::metrics();
        metrics
            .task_queue_wait
            .with_label_values(&[&kind])
            .observe(task.waited_ms.max(0) as f64 / 1000.0);
        // Every line the task logs, here or in what it calls, carries its id, kind and trace:
        // the trace of the request that queued it, continued here on whichever node claimed it.
        let span = tracing::info_span!(
            "task",
            id = %id,
            kind = %kind,
            otel.name = %format!("task {kind}"),
            cuttle.task.id = %id,
            trace_id = tracing::field::Empty,
        );
        if let Some(tp) = &task.trace_parent {
            cuttle_telemetry::trace::continue_trace(&span, tp);
        }
        cuttle_telemetry::trace::record_trace_id(&span);
        cuttle_telemetry::trace::record_past(
            &span,
            "queued",
            Duration::from_millis(task.waited_ms.max(0) as u64),
            &[
                ("cuttle.task.id", id.to_string()),
                ("cuttle.node", self.node.clone()),
            ],
        );
        tracing::debug!(parent: &span, "task claimed");
        self.fence.add(id, &running);
        self.running.insert(id, running);
        tokio::spawn(async move {
            let started = Instant::now();
            // The task runs in its own tokio task so that a panic in it becomes a failed task,
            // never a stuck slot or a dead node.
            let run = async move { exec::run(&task, &ctx).await }.instrument(span);
            let outcome = match tokio::spawn(run).await {
                Ok(o) => o,
                Err(e) => Outcome::failed(format!("the task crashed: {e}")),
            };
            let state = outcome.state.as_str();
            metrics
                .task_run
                .with_label_values(&[&kind, state])
                .observe(started.elapsed().as_secs_f64());
            if kind == "Deploy" {
                metrics.deployments.with_label_values(&[state]).inc();
            }
            let _ = done_tx.send(Done { id, epoch, outcome });
        });
    }

    async fn drain(mut self, done_rx: &mut mpsc::UnboundedReceiver<Done>) -> Result<(), Error> {
        // No more claims from here on.
        self.done_tx = None;
        let grace = self.config.shutdown_grace;
        if !self.running.is_empty() {
            tracing::info!(
                running = self.running.len(),
                grace_secs = grace.as_secs(),
                "draining: waiting for running tasks"
            );
        }
        let deadline = Instant::now() + grace;
        let mut stopped = false;
        while !self.running.is_empty() {
            tokio::select! {
                Some(d) = done_rx.recv() => self.absorb(d),
                _ = tokio::time::sleep_until(deadline), if !stopped => {
                    stopped = true;
                    let msg = format!(
                        "canceled: node {} shut down and the task did not finish within the {} s grace period",
                        self.node, grace.as_secs());
                    tracing::warn!(running = self.running.len(), "grace period over; cancelling running tasks");
                    for r in self.running.values() {
                        r.stop(StopReason::Shutdown(msg.clone()));
                    }
                }
            }
            let _ = self.turn(0).await;
        }
        // Record what is left, retrying a little while the database is away.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            match self.turn(0).await {
                Ok(()) => {
                    tracing::info!("worker stopped");
                    return Ok(());
                }
                Err(source) if Instant::now() >= give_up => {
                    return Err(Error::UnrecordedOutcomes {
                        count: self.pending.len(),
                        source,
                    });
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

//! The `Store`: one domain API over every SQL dialect.

mod gate;
mod keys;
mod mssql;
mod mssql_config;
mod postgres;
mod postgres_tls;
mod settings;
mod targets;
mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cuttle_core::{
    EventRecord, NewEvent, NewTask, NodePatch, NodeRecord, TaskId, TaskRecord, TaskState, UnixMs,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use keys::{ApiKeyRow, FoundApiKey, NewApiKey, SETTING_API_KEY_SECRET};

use crate::{Error, Result};

/// The schema version this binary expects; migrations `0001..=SCHEMA_VERSION` exist for every
/// dialect.
pub const SCHEMA_VERSION: u32 = 5;

/// Settings for connecting to the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections one node keeps open (PostgreSQL).
    pub pool_size: u32,
    /// How long to wait for a connection before the call fails as unavailable.
    pub connect_timeout: Duration,
    /// How long one statement may wait for the server's answer (SQL Server) before its
    /// connection is dropped and the call fails as unavailable.
    pub command_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds the audit event of an operator's change from what the change produced (the new task,
/// the new target's id, …). The store writes the event in the change's own transaction, so a
/// change is never recorded without its event, nor an event without its change. `Fn`, not
/// `FnOnce`: a transaction rolled back by a transient error is run again.
pub type Audit<R> = Box<dyn Fn(&R) -> NewEvent + Send + Sync>;

/// An [`Audit`] whose event does not depend on the change's result.
pub fn audit_as<R>(event: NewEvent) -> Audit<R> {
    Box::new(move |_| event.clone())
}

/// What a node writes about itself when it registers and at every heartbeat.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub name: String,
    pub roles: String,
    pub version: String,
    pub http_address: String,
    pub grpc_address: String,
    pub gateway_address: Option<String>,
    /// Only used when the row is created; afterwards the database value wins.
    pub initial_task_cap: u32,
}

/// The operator-controlled part of a node row, as read back at each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub task_cap: u32,
    pub draining: bool,
}

/// A task a worker has just claimed. `epoch` fences every later write about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub id: TaskId,
    pub epoch: i64,
    pub kind: String,
    pub arguments: serde_json::Value,
}

/// A worker's report of how a task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: TaskId,
    pub epoch: i64,
    pub state: TaskState,
    pub error: Option<String>,
}

/// A task the database says a node owns, with the state that tells the node what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedTask {
    pub id: TaskId,
    pub epoch: i64,
    pub state: TaskState,
}

/// A node the scheduler found lost, with what was done to its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostNode {
    pub name: String,
    /// The executions stopped with the node: failed (or cancelled) ones, and re-queued ones.
    pub failed: Vec<crate::Execution>,
    pub requeued: Vec<crate::Execution>,
}

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: u32,
    pub to: u32,
}

impl MigrationReport {
    pub fn applied_any(&self) -> bool {
        self.from != self.to
    }
}

#[allow(clippy::large_enum_variant)] // one per process, behind an Arc
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
    Mssql(mssql::Mssql),
}

/// The database, whichever dialect it speaks. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    commits: Arc<AtomicU64>,
    target: Arc<str>,
}

/// Dispatches one call to the backend in use.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &*$self.backend {
            $crate::db::Backend::Sqlite($b) => $call,
            $crate::db::Backend::Postgres($b) => $call,
            $crate::db::Backend::Mssql($b) => $call,
        }
    };
}
pub(crate) use dispatch;

impl Store {
    /// Opens the database named by `url` (`sqlite://PATH` or `postgres://…`) and checks that it
    /// answers. Does not touch the schema.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store> {
        let commits = Arc::new(AtomicU64::new(0));
        let (backend, target) = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(Error::InvalidUrl("sqlite:// needs a file path".into()));
            }
            let b = sqlite::Sqlite::open(path, commits.clone()).await?;
            (Backend::Sqlite(b), format!("sqlite file {path}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (b, target) = postgres::Postgres::connect(url, opts, commits.clone()).await?;
            (Backend::Postgres(b), target)
        } else if url.starts_with("mssql://") || is_ado_net(url) {
            let config = mssql_config::MssqlConfig::parse(url)?;
            let (b, target) = mssql::Mssql::connect(&config, opts, commits.clone()).await?;
            (Backend::Mssql(b), target)
        } else {
            return Err(Error::InvalidUrl(format!(
                "unsupported scheme in {:?}: expected sqlite://PATH, postgres://…, mssql://… or \
                 an ADO.NET string (Server=…;Database=…;…)",
                redact_url(url)
            )));
        };
        Ok(Store {
            backend: Arc::new(backend),
            commits,
            target: target.into(),
        })
    }

    /// A description of the database safe to show: host or file, never a password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Transactions this process has committed: the cost side of the queue's hot path.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Answers when the database does; `Unavailable` otherwise.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, b => b.ping().await)
    }

    /// Brings the schema to [`SCHEMA_VERSION`] under a database-wide lock, so that when several
    /// nodes start on an empty database exactly one creates the schema while the others wait.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        dispatch!(self, b => b.migrate().await)
    }

    /// The schema version recorded in the database (0 when empty).
    pub async fn schema_version(&self) -> Result<u32> {
        dispatch!(self, b => b.schema_version().await)
    }

    /// Fails unless the database holds exactly the schema this binary expects.
    pub async fn check_schema(&self) -> Result<()> {
        let found = self.schema_version().await?;
        match found.cmp(&SCHEMA_VERSION) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            }),
            std::cmp::Ordering::Less => Err(Error::SchemaTooOld {
                found,
                supported: SCHEMA_VERSION,
            }),
        }
    }

    /// Creates or refreshes this node's row (addresses, roles, version, started, last seen).
    /// An existing row keeps its task cap and draining flag: those belong to the operator.
    pub async fn register_node(&self, reg: &NodeRegistration) -> Result<NodeState> {
        dispatch!(self, b => b.register_node(reg).await)
    }

    /// Refreshes *last seen* and the node's shared-store health, and clears a lost mark;
    /// re-registers the node if its row was deleted. Returns the operator-controlled state.
    pub async fn heartbeat(&self, reg: &NodeRegistration, storage_ok: bool) -> Result<NodeState> {
        match dispatch!(self, b => b.heartbeat(&reg.name, storage_ok).await)? {
            Some(state) => Ok(state),
            None => {
                tracing::info!(node = %reg.name, "node row missing; registering again");
                self.register_node(reg).await
            }
        }
    }

    pub async fn list_nodes(&self, offline_after: Duration) -> Result<Vec<NodeRecord>> {
        dispatch!(self, b => b.list_nodes(None, ms(offline_after)).await)
    }

    pub async fn get_node(
        &self,
        name: &str,
        offline_after: Duration,
    ) -> Result<Option<NodeRecord>> {
        let mut nodes = dispatch!(self, b => b.list_nodes(Some(name), ms(offline_after)).await)?;
        Ok(nodes.pop())
    }

    /// Applies an operator change; false when no such node (and then no event is written).
    pub async fn patch_node(
        &self,
        name: &str,
        patch: &NodePatch,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        dispatch!(self, b => b.patch_node(name, patch, audit).await)
    }

    /// Deletes a node's row; false when no such node (and then no event is written).
    pub async fn delete_node(&self, name: &str, audit: Option<Audit<()>>) -> Result<bool> {
        dispatch!(self, b => b.delete_node(name, audit).await)
    }

    /// Marks every node silent for longer than `offline_after` as lost and fails (or, for
    /// retry-safe kinds, re-queues) its executing tasks, in one transaction per node. A node is
    /// handled by exactly one caller however many schedulers run this at once.
    pub async fn handle_lost_nodes(&self, offline_after: Duration) -> Result<Vec<LostNode>> {
        dispatch!(self, b => b.handle_lost_nodes(ms(offline_after)).await)
    }

    /// Called once when a node's process starts, before its worker claims anything: tasks the
    /// database still gives this node belong to its previous process, which is gone. Re-queues
    /// the retry-safe ones and fails the rest, naming the restart.
    pub async fn release_own_tasks(&self, name: &str) -> Result<LostNode> {
        dispatch!(self, b => b.release_own_tasks(name).await)
    }

    /// Gives back claims `node` holds but never started: the database recorded the claim while
    /// its answer never reached the worker (a connection dropped after the commit). Each
    /// execution still held goes back to the queue in its old place (or, when a cancel came
    /// meanwhile, becomes Canceled). Returns the tasks given back.
    pub async fn requeue_unstarted(
        &self,
        node: &str,
        executions: &[crate::Execution],
    ) -> Result<Vec<TaskId>> {
        if executions.is_empty() {
            return Ok(Vec::new());
        }
        let note = unstarted_note(node);
        dispatch!(self, b => b.requeue_unstarted(node, executions, &note).await)
    }

    /// Claims period `n` of a periodic job named `key`: true for exactly one caller per period
    /// however many ask at once, false for every other and for any earlier period.
    pub async fn claim_period(&self, key: &str, n: i64) -> Result<bool> {
        self.init_setting(key, "0").await?;
        dispatch!(self, b => b.claim_period(key, n).await)
    }

    /// Adds a task to the queue and wakes listeners (NOTIFY on PostgreSQL).
    pub async fn enqueue(
        &self,
        task: &NewTask,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<TaskRecord> {
        dispatch!(self, b => b.enqueue(task, audit).await)
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        dispatch!(self, b => b.get_task(id).await)
    }

    /// Newest first; with `before`, only tasks older than that one (for paging).
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        before: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        dispatch!(self, b => b.list_tasks(state, before, limit).await)
    }

    /// Claims up to `max` queued tasks for `node` in FIFO order, in one atomic statement. Claims
    /// nothing when the node is draining, has a cap of 0, or is not registered. Never returns a
    /// task whose concurrency tag is already executing, nor two tasks with one tag.
    pub async fn claim(&self, node: &str, max: u32) -> Result<Vec<ClaimedTask>> {
        Ok(self.complete_and_claim(node, &[], max).await?.1)
    }

    /// Records how tasks ended, in one transaction. A completion is accepted only while the
    /// task is still executing under the same node and claim epoch (fencing); returns the ids
    /// that were accepted.
    pub async fn complete(&self, node: &str, done: &[Completion]) -> Result<Vec<TaskId>> {
        Ok(self.complete_and_claim(node, done, 0).await?.0)
    }

    /// [`Store::complete`] and [`Store::claim`] in one round trip and one commit: the worker's
    /// hot path. The claim may see the database as it was before the completions (PostgreSQL
    /// does), so a concurrency tag freed here may only become claimable on the next call.
    pub async fn complete_and_claim(
        &self,
        node: &str,
        done: &[Completion],
        max: u32,
    ) -> Result<(Vec<TaskId>, Vec<ClaimedTask>)> {
        if done.is_empty() && max == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let (accepted, mut claimed) =
            dispatch!(self, b => b.complete_and_claim(node, done, max).await)?;
        claimed.sort_by_key(|c| c.id);
        Ok((accepted, claimed))
    }

    /// The tasks the database says `node` is executing or should cancel.
    pub async fn owned_tasks(&self, node: &str) -> Result<Vec<OwnedTask>> {
        dispatch!(self, b => b.owned_tasks(node).await)
    }

    /// Cancels a task: a queued one, or one whose node is offline, becomes Canceled at once; an
    /// executing one becomes Cancelling for its node to stop. `None` when there is no such task;
    /// a finished task is returned unchanged. The event is built from the task as the cancel
    /// left it.
    pub async fn cancel(
        &self,
        id: TaskId,
        offline_after: Duration,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<Option<TaskRecord>> {
        dispatch!(self, b => b.cancel(id, ms(offline_after), audit).await)
    }

    /// The newest audit events first.
    pub async fn list_events(&self, limit: u32) -> Result<Vec<EventRecord>> {
        dispatch!(self, b => b.list_events(limit).await)
    }

    /// Calls `wake.notify_one()` whenever any node enqueues a task, where the database can push
    /// that (PostgreSQL LISTEN/NOTIFY). Returns false where it cannot; workers then rely on
    /// gRPC wake-ups and polling.
    pub fn subscribe_enqueued(&self, wake: Arc<Notify>, shutdown: CancellationToken) -> bool {
        match &*self.backend {
            Backend::Sqlite(_) | Backend::Mssql(_) => false,
            Backend::Postgres(b) => {
                b.subscribe_enqueued(wake, shutdown);
                true
            }
        }
    }
}

fn ms(d: Duration) -> UnixMs {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Drops user info from a URL for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// An ADO.NET connection string names its server with one of these keys.
fn is_ado_net(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    [
        "server=",
        "server =",
        "data source=",
        "data source =",
        "address=",
        "addr=",
    ]
    .iter()
    .any(|k| lower.starts_with(k))
        || lower.contains(";server=")
        || lower.contains(";data source=")
}

pub(crate) fn lost_error(node: &str, offline_after_ms: UnixMs) -> String {
    format!(
        "node {node} was lost: no heartbeat for over {} s; the task was stopped with it",
        offline_after_ms / 1000
    )
}

pub(crate) fn requeue_note(node: &str) -> String {
    format!("node {node} was lost; re-queued (retry-safe kind)")
}

pub(crate) fn restart_error(node: &str) -> String {
    format!("node {node} restarted while the task was running; the task was stopped with it")
}

pub(crate) fn unstarted_note(node: &str) -> String {
    format!("node {node} never received its claim (the database connection dropped); re-queued")
}

/// The message of a task cancelled before its lost claim was given back.
pub(crate) const CANCELED_UNSTARTED: &str = "canceled before it started";

pub(crate) fn restart_requeue_note(node: &str) -> String {
    format!("node {node} restarted while the task was running; re-queued (retry-safe kind)")
}

/// `%XX` escapes of a URL part decoded; `None` for a bad escape or text that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(super::redact_url("sqlite:///a/b"), "sqlite:///a/b");
    }
}

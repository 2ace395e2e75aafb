//! The `Store`: one domain API over every SQL dialect.

mod deployments;
mod documents;
mod events;
mod gate;
mod gauges;
mod keys;
mod mssql;
mod mssql_config;
mod nodes;
mod packages;
mod postgres;
mod postgres_tls;
mod releases;
mod sessions;
mod settings;
mod sqlite;
mod targets;
mod tasks;
mod tools;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cuttle_core::{NewEvent, TaskId, TaskState, UnixMs};

pub use deployments::{DeploymentFilter, DeploymentRecord, NewDeployment};
pub use documents::{Document, DocumentWrite, Written, MAX_DOCUMENT_NAME_LEN};
pub use gauges::{ClusterGauges, TaskCount};
pub use keys::{
    ApiKeyRow, FoundApiKey, NewApiKey, Revoke, SealedDataKeys, SETTING_API_KEY_SECRET,
    SETTING_API_KEY_SECRET_PREVIOUS, SETTING_VARIABLE_KEY, SETTING_VARIABLE_KEY_PREVIOUS,
};
pub use packages::{newest_package, AddedPackage, NewPackage, PackageRecord};
pub use releases::{NewRelease, Release};
pub use sessions::{NewSession, SessionOf, SessionRow, MAX_SESSION_SECS};
pub use tools::{database_kind, DatabaseKind, ToolConnection};

use crate::{Error, Result};

/// The schema version this binary expects; migrations `0001..=SCHEMA_VERSION` exist for every
/// dialect.
pub const SCHEMA_VERSION: u32 = 13;

/// Settings for connecting to the database.
/// A connection pool's connections at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open, idle or lent out.
    pub open: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most the pool opens (`CUTTLE_DB_POOL_SIZE`).
    pub max: u32,
}

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
    /// This process: random, new at every start. The row names the process holding the node's
    /// name; registering fails while another process holds it.
    pub instance: String,
    /// A process found gone (no heartbeat within the window) whose hold this one may take
    /// over; see [`Store::node_holder`].
    pub replaces: Option<String>,
}

/// Who holds a node's name, as its row says, with the database clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHolder {
    /// The process holding the name; `None` when it stopped cleanly (or wrote no instance).
    pub instance: Option<String>,
    pub last_seen_ms: i64,
    pub now_ms: i64,
    pub http_address: String,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Written; the operator-controlled state read back.
    Written(NodeState),
    /// The node's row is gone (deleted by an operator): register again.
    Missing,
    /// Another process holds the name now.
    Taken,
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
    /// From its enqueue to this claim, on the database's clock.
    pub waited_ms: i64,
    /// The trace of the request that queued it (W3C `traceparent`), if any.
    pub trace_parent: Option<String>,
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
    /// The deadline of every call to a database server ([`dispatch!`]).
    command_timeout: Duration,
}

/// Dispatches one call to the backend in use. A call to a database server has a deadline (the
/// store's command timeout): however the network fails — a partition in the middle of a query,
/// a server that stops answering — the call ends, as [`Error::Unavailable`], instead of waiting
/// for the kernel to give the connection up (minutes). SQLite is a local file: no deadline. The
/// call runs in a `db <method>` span ([`call_span`]) and its failure is counted ([`counted`]).
macro_rules! dispatch {
    ($self:ident, $b:ident => $recv:ident . $method:ident ( $($args:tt)* ) . await) => {
        tracing::Instrument::instrument(
            async { $crate::db::dispatch_call!($self, $b => $recv.$method($($args)*).await) },
            $crate::db::call_span($self.dialect(), stringify!($method)),
        )
        .await
    };
}
pub(crate) use dispatch;

/// [`dispatch!`]'s call, outside any span.
macro_rules! dispatch_call {
    ($self:ident, $b:ident => $call:expr) => {
        match &*$self.backend {
            $crate::db::Backend::Sqlite($b) => $crate::db::counted($call),
            $crate::db::Backend::Postgres($b) => $crate::db::counted(
                $crate::db::deadline($self.command_timeout, &$self.target, async { $call }).await,
            ),
            $crate::db::Backend::Mssql($b) => $crate::db::counted(
                $crate::db::deadline($self.command_timeout, &$self.target, async { $call }).await,
            ),
        }
    };
}
pub(crate) use dispatch_call;

/// [`dispatch!`] without the deadline: for what may rightly take long (migrations).
macro_rules! dispatch_unbounded {
    ($self:ident, $b:ident => $call:expr) => {
        match &*$self.backend {
            $crate::db::Backend::Sqlite($b) => $call,
            $crate::db::Backend::Postgres($b) => $call,
            $crate::db::Backend::Mssql($b) => $call,
        }
    };
}

/// The span of one database call, a child of the caller's: `db <method>`, with the dialect. A
/// call outside any span (a heartbeat, a worker's poll) makes none — it would be a trace of its
/// own, several a second, forever.
pub(crate) fn call_span(system: &'static str, method: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = %format!("db {method}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = method,
    )
}

/// Counts a failed call in `cuttle_db_errors_total`: `unavailable` when the database could not
/// be reached or did not answer in time, `error` when it refused the statement. What the caller
/// asked wrongly (a name taken, a rule broken) is the caller's error, not the database's.
pub(crate) fn counted<T>(result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        let kind = match e {
            Error::Unavailable { .. } => Some("unavailable"),
            Error::Database(_) => Some("error"),
            _ => None,
        };
        if let Some(kind) = kind {
            cuttle_telemetry::metrics()
                .db_errors
                .with_label_values(&[kind])
                .inc();
        }
    }
    result
}

/// Ends `call` as unavailable once `limit` has passed.
pub(crate) async fn deadline<T>(
    limit: Duration,
    target: &str,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable {
            target: target.to_owned(),
            reason: format!(
                "no answer within {} s (CUTTLE_DB_COMMAND_TIMEOUT_SECS)",
                limit.as_secs_f32()
            ),
        }),
    }
}

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
        } else if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || is_libpq_keywords(url)
        {
            let (b, target) = postgres::Postgres::connect(url, opts, commits.clone()).await?;
            (Backend::Postgres(b), target)
        } else if url.starts_with("mssql://") || is_ado_net(url) {
            let config = mssql_config::MssqlConfig::parse(url)?;
            let (b, target) = mssql::Mssql::connect(&config, opts, commits.clone()).await?;
            (Backend::Mssql(b), target)
        } else {
            return Err(Error::InvalidUrl(format!(
                "unsupported scheme in {:?}: expected sqlite://PATH, postgres://…, PostgreSQL \
                 keywords (host=… dbname=… …), mssql://… or an ADO.NET string \
                 (Server=…;Database=…;…)",
                redact_url(url)
            )));
        };
        Ok(Store {
            backend: Arc::new(backend),
            commits,
            target: target.into(),
            command_timeout: opts.command_timeout,
        })
    }

    /// The dialect, as OpenTelemetry names database systems.
    fn dialect(&self) -> &'static str {
        match &*self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
            Backend::Mssql(_) => "microsoft.sql_server",
        }
    }

    /// A description of the database safe to show: host or file, never a password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Transactions this process has committed: the cost side of the queue's hot path.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// SQLite's own consistent copy of the database, into the new file `dest` (`VACUUM INTO`:
    /// a read transaction, so the nodes go on writing meanwhile). Only for SQLite.
    pub async fn export_sqlite(&self, dest: &std::path::Path) -> Result<()> {
        match &*self.backend {
            Backend::Sqlite(b) => b.vacuum_into(dest).await,
            _ => Err(Error::Invalid(
                "only a SQLite database is copied by Cuttle itself".into(),
            )),
        }
    }

    /// The connection pool's state; `None` for SQLite (one connection, no pool).
    pub fn pool_state(&self) -> Option<PoolState> {
        match &*self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.pool_state()),
            Backend::Mssql(b) => Some(b.pool_state()),
        }
    }

    /// Answers when the database does; `Unavailable` otherwise.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, b => b.ping().await)
    }

    /// The database's clock, in milliseconds since the epoch: the clock every time it stores
    /// (a node's start, last seen) is on.
    pub async fn now_ms(&self) -> Result<UnixMs> {
        dispatch!(self, b => b.now_ms().await)
    }

    /// Brings the schema to [`SCHEMA_VERSION`] under a database-wide lock, so that when several
    /// nodes start on an empty database exactly one creates the schema while the others wait.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        dispatch_unbounded!(self, b => b.migrate().await)
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
}

fn ms(d: Duration) -> UnixMs {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A database URL or connection string with its password replaced by `<redacted>`, whatever
/// its form: `scheme://user:password@…`, libpq's `password=…`, ADO.NET's `Password=…;`/`Pwd=…;`.
pub fn redact_database_url(url: &str) -> String {
    if let (Some(s), Some(at)) = (url.find("://"), url.rfind('@')) {
        if at > s {
            let user_info = &url[s + 3..at];
            let user = user_info.split(':').next().unwrap_or_default();
            return redact_pairs(&format!("{}{user}:<redacted>{}", &url[..s + 3], &url[at..]));
        }
    }
    redact_pairs(url)
}

/// `password=…` / `pwd=…` values in `key=value` text (`;`, `&` or space separated, spaces
/// allowed around `=`) redacted, a quoted value (`'…'` or `"…"`, with a doubled quote or a
/// backslash-escaped one inside) whole.
fn redact_pairs(text: &str) -> String {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || matches!(bytes[i - 1], b';' | b'&' | b' ' | b'?');
        let key_len = ["password", "pwd"]
            .iter()
            .find(|k| at_boundary && lower[i..].starts_with(*k))
            .map(|k| k.len());
        let Some(key_len) = key_len else {
            i += 1;
            continue;
        };
        let mut j = i + key_len;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            i += 1;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        out.push_str(&text[copied..j]);
        out.push_str("<redacted>");
        j = value_end(bytes, j);
        copied = j;
        i = j;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a value starting at `start` ends: past its closing quote when quoted (a doubled quote
/// or `\`-escaped one inside does not close it; an unclosed quote runs to the end), else at
/// the next `;`, `&` or space.
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(&q @ (b'\'' | b'"')) => {
            let mut k = start + 1;
            while k < bytes.len() {
                let escaped = bytes[k] == b'\\' || (bytes[k] == q && bytes.get(k + 1) == Some(&q));
                if escaped {
                    k += 2;
                } else if bytes[k] == q {
                    return k + 1;
                } else {
                    k += 1;
                }
            }
            bytes.len()
        }
        _ => bytes[start..]
            .iter()
            .position(|b| matches!(b, b';' | b'&' | b' '))
            .map_or(bytes.len(), |n| start + n),
    }
}

/// A connection string for messages: a URL without its password, key=value text without any
/// password value ([`redact_database_url`]).
pub(crate) fn redact_url(url: &str) -> String {
    redact_database_url(url)
}

/// libpq's keyword/value form (`host=db port=5432 dbname=cuttle user=cuttle sslmode=…`): no
/// scheme, no `;`, and its first key one of libpq's.
fn is_libpq_keywords(text: &str) -> bool {
    const KEYS: [&str; 9] = [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "sslmode",
        "sslrootcert",
        "connect_timeout",
    ];
    !text.contains("://")
        && !text.contains(';')
        && text
            .split_whitespace()
            .next()
            .and_then(|t| t.split_once('='))
            .is_some_and(|(k, _)| KEYS.contains(&k.to_ascii_lowercase().as_str()))
}

/// An ADO.NET connection string: `key=value` pairs separated by `;` (its errors then come from
/// its own parser, naming what is wrong — a missing server, an unknown key).
fn is_ado_net(text: &str) -> bool {
    if !text.contains("://") && text.contains(';') && text.contains('=') {
        return true;
    }
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
            "postgres://u:<redacted>@db:5432/x"
        );
        assert_eq!(super::redact_url("sqlite:///a/b"), "sqlite:///a/b");
        // Quoted values whole, spaces around `=`, any case.
        for (text, shown) in [
            (
                "Server=sql;Password=\"a;b c\";Encrypt=true",
                "Server=sql;Password=<redacted>;Encrypt=true",
            ),
            (
                "Server=sql;Password='it''s;x'",
                "Server=sql;Password=<redacted>",
            ),
            (
                "host=db password='a \\' b' dbname=x",
                "host=db password=<redacted> dbname=x",
            ),
            (
                "host=db PASSWORD = hunter2 dbname=x",
                "host=db PASSWORD = <redacted> dbname=x",
            ),
            ("Server=sql;Pwd=\"unclosed;x=1", "Server=sql;Pwd=<redacted>"),
            ("passwordless=1;user=x", "passwordless=1;user=x"),
        ] {
            assert_eq!(super::redact_url(text), shown, "{text}");
        }
    }

    #[test]
    fn database_urls_are_shown_without_their_password_whatever_their_form() {
        for (url, secret, shown) in [
            (
                "postgres://cuttle:s3cret@db:5432/x?sslmode=verify-full",
                "s3cret",
                "postgres://cuttle:<redacted>@db:5432/x?sslmode=verify-full",
            ),
            (
                "host=db user=cuttle password=s3cret dbname=x",
                "s3cret",
                "host=db user=cuttle password=<redacted> dbname=x",
            ),
            (
                "Server=tcp:sql,1433;User Id=cuttle;Password=s3cret;Encrypt=true",
                "s3cret",
                "Server=tcp:sql,1433;User Id=cuttle;Password=<redacted>;Encrypt=true",
            ),
            (
                "Data Source=sql;Pwd=s3cret",
                "s3cret",
                "Data Source=sql;Pwd=<redacted>",
            ),
            (
                "mssql://sa:s3cret@sql:1433/master?password=again",
                "again",
                "mssql://sa:<redacted>@sql:1433/master?password=<redacted>",
            ),
        ] {
            let got = super::redact_database_url(url);
            assert_eq!(got, shown);
            assert!(!got.contains(secret));
        }
        assert_eq!(super::redact_database_url("sqlite:///a/b"), "sqlite:///a/b");
    }

    #[test]
    fn connection_string_forms_are_told_apart() {
        assert!(super::is_libpq_keywords(
            "host=db port=5432 dbname=cuttle user=u password=p"
        ));
        assert!(super::is_libpq_keywords(
            "dbname=cuttle host=/run/postgresql"
        ));
        assert!(!super::is_libpq_keywords("postgres://u@db/x?host=y"));
        assert!(!super::is_libpq_keywords("Server=sql;Database=x"));
        assert!(!super::is_libpq_keywords("nonsense"));
        assert!(super::is_ado_net("Server=tcp:sql,1433;Database=x"));
        assert!(super::is_ado_net("Database=x;Password=p;Data Source=sql"));
        assert!(
            super::is_ado_net("Database=x;Password=p"),
            "its parser says what is missing"
        );
        assert!(!super::is_ado_net("mssql://u:p@sql/x?a=b;c"));
    }

    /// Whatever form a connection string has, an error about it never shows its password.
    #[tokio::test]
    async fn a_refused_connection_string_never_shows_its_password() {
        let opts = super::StoreOptions {
            connect_timeout: std::time::Duration::from_millis(200),
            ..Default::default()
        };
        for url in [
            "Database=x;Password=HUNTER2-secret;Encrypt=maybe",
            "Initial Catalog=x;Password=\"HUNTER2-secret;still\";Unknown Thing=1",
            "host=127.0.0.1 port=1 user=u password=HUNTER2-secret dbname=x sslmode=wrong",
            "mysql://u:HUNTER2-secret@db/x",
            "whatever Password=HUNTER2-secret",
        ] {
            let err = match super::Store::connect(url, &opts).await {
                Ok(_) => panic!("{url} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(!err.contains("HUNTER2"), "{url}: {err}");
        }
    }
}

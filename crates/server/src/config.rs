//! Configuration: defaults < `--config FILE` (TOML) < `CUTTLE_*` environment < flags. Each
//! layer parses into the same all-optional [`RawConfig`]; [`Config`] is the validated result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cuttle_core::{validate_node_name, RoleSet, TrustedProxies, MAX_TASK_CAP};
use serde::{Deserialize, Serialize};

/// One layer of settings; `None` means "not set here".
#[derive(Debug, Clone, Default, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Home of the embedded default: cuttle.db, shared/, master.key [env: CUTTLE_DATA_DIR]
    #[arg(long, global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… [env: CUTTLE_DATABASE_URL]
    #[arg(long, global = true)]
    pub(crate) database_url: Option<String>,
    /// Base64 of 16 or 32 bytes; prefer the environment variable [env: CUTTLE_MASTER_KEY]
    #[arg(skip)]
    pub(crate) master_key: Option<String>,
    /// Shared-store root, used only when the database holds none yet [env: CUTTLE_SHARED_PATH]
    #[arg(long, global = true)]
    pub(crate) shared_path: Option<PathBuf>,
    /// Unique node name (default: host name) [env: CUTTLE_NODE_NAME]
    #[arg(long, global = true)]
    pub(crate) node_name: Option<String>,
    /// Comma-separated roles: api,scheduler,worker,gateway [env: CUTTLE_ROLES]
    #[arg(long, global = true)]
    pub(crate) roles: Option<String>,
    /// Task cap given to the node when it first registers [env: CUTTLE_TASK_CAP]
    #[arg(long, global = true)]
    pub(crate) task_cap: Option<u32>,
    /// REST, web UI and ping [env: CUTTLE_HTTP_LISTEN]
    #[arg(long, global = true)]
    pub(crate) http_listen: Option<String>,
    /// Internal gRPC [env: CUTTLE_GRPC_LISTEN]
    #[arg(long, global = true)]
    pub(crate) grpc_listen: Option<String>,
    /// Polling tentacles connect here [env: CUTTLE_GATEWAY_LISTEN]
    #[arg(long, global = true)]
    pub(crate) gateway_listen: Option<String>,
    /// The public gRPC API; empty: off [env: CUTTLE_PUBLIC_GRPC_LISTEN]
    #[arg(long, global = true)]
    pub(crate) public_grpc_listen: Option<String>,
    /// host:port others use for the REST API (default: derived) [env: CUTTLE_HTTP_ADVERTISE]
    #[arg(long, global = true)]
    pub(crate) http_advertise: Option<String>,
    /// host:port other nodes dial for gRPC (default: derived) [env: CUTTLE_GRPC_ADVERTISE]
    #[arg(long, global = true)]
    pub(crate) grpc_advertise: Option<String>,
    /// host:port tentacles are given for this gateway (default: derived) [env: CUTTLE_GATEWAY_ADVERTISE]
    #[arg(long, global = true)]
    pub(crate) gateway_advertise: Option<String>,
    /// `cluster`: serve the API over HTTPS with the cluster certificate [env: CUTTLE_HTTP_TLS]
    #[arg(long, global = true)]
    pub(crate) http_tls: Option<String>,
    /// PEM certificate chain: serve the API over HTTPS [env: CUTTLE_HTTP_TLS_CERT]
    #[arg(long, global = true)]
    pub(crate) http_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate [env: CUTTLE_HTTP_TLS_KEY]
    #[arg(long, global = true)]
    pub(crate) http_tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's headers [env: CUTTLE_HTTP_HEADER_TIMEOUT_SECS]
    #[arg(long, global = true)]
    pub(crate) http_header_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body once its headers are in [env: CUTTLE_HTTP_BODY_TIMEOUT_SECS]
    #[arg(long, global = true)]
    pub(crate) http_body_timeout_secs: Option<u64>,
    /// Open API connections at most [env: CUTTLE_HTTP_MAX_CONNECTIONS]
    #[arg(long, global = true)]
    pub(crate) http_max_connections: Option<usize>,
    /// Open API connections from one client address at most [env: CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT]
    #[arg(long, global = true)]
    pub(crate) http_max_connections_per_client: Option<usize>,
    /// Bytes one task log may hold; the rest of its output is dropped [env: CUTTLE_TASK_LOG_MAX_BYTES]
    #[arg(long, global = true)]
    pub(crate) task_log_max_bytes: Option<u64>,
    /// Largest package upload in bytes (default 4 GiB); 0 for no limit [env: CUTTLE_PACKAGE_MAX_BYTES]
    #[arg(long, global = true)]
    pub(crate) package_max_bytes: Option<u64>,
    /// Seconds between heartbeats [env: CUTTLE_HEARTBEAT_SECS]
    #[arg(long, global = true)]
    pub(crate) heartbeat_secs: Option<u64>,
    /// A node not seen for this long is offline and its tasks fail [env: CUTTLE_OFFLINE_AFTER_SECS]
    #[arg(long, global = true)]
    pub(crate) offline_after_secs: Option<u64>,
    /// Seconds between periodic health checks of all targets; 0 turns them off [env: CUTTLE_HEALTH_CHECK_SECS]
    #[arg(long, global = true)]
    pub(crate) health_check_secs: Option<u64>,
    /// Seconds between retention and audit-archive runs; 0 turns both off [env: CUTTLE_MAINTENANCE_SECS]
    #[arg(long, global = true)]
    pub(crate) maintenance_secs: Option<u64>,
    /// Versions of each package the repository keeps; 0 keeps all [env: CUTTLE_PACKAGE_VERSIONS_TO_KEEP]
    #[arg(long, global = true)]
    pub(crate) package_versions_to_keep: Option<u32>,
    /// Audit events older than this many seconds move to the archive; 0 keeps them [env: CUTTLE_EVENT_ARCHIVE_AFTER_SECS]
    #[arg(long, global = true)]
    pub(crate) event_archive_after_secs: Option<u64>,
    /// Worker fallback poll interval in ms [env: CUTTLE_POLL_MS]
    #[arg(long, global = true)]
    pub(crate) poll_ms: Option<u64>,
    /// Registered as an admin key on a database with no keys [env: CUTTLE_ADMIN_API_KEY]
    #[arg(skip)]
    pub(crate) admin_api_key: Option<String>,
    /// Comma-separated addresses/CIDRs whose X-Forwarded-For is honoured [env: CUTTLE_TRUSTED_PROXIES]
    #[arg(long, global = true)]
    pub(crate) trusted_proxies: Option<String>,
    /// Log filter in tracing syntax [env: CUTTLE_LOG]
    #[arg(long, global = true)]
    pub(crate) log: Option<String>,
    /// `text` or `json` [env: CUTTLE_LOG_FORMAT]
    #[arg(long, global = true)]
    pub(crate) log_format: Option<String>,
    /// Seconds to keep retrying an unreachable database at start-up [env: CUTTLE_DB_WAIT_SECS]
    #[arg(long, global = true)]
    pub(crate) db_wait_secs: Option<u64>,
    /// Most database connections this node opens [env: CUTTLE_DB_POOL_SIZE]
    #[arg(long, global = true)]
    pub(crate) db_pool_size: Option<u32>,
    /// Seconds to wait for a new database connection (TCP, TLS and login) [env: CUTTLE_DB_CONNECT_TIMEOUT_SECS]
    #[arg(long, global = true)]
    pub(crate) db_connect_timeout_secs: Option<u64>,
    /// Seconds one database call may wait for the server's answer (PostgreSQL and SQL Server) [env: CUTTLE_DB_COMMAND_TIMEOUT_SECS]
    #[arg(long, global = true)]
    pub(crate) db_command_timeout_secs: Option<u64>,
    /// On SIGTERM, seconds running tasks may take before they are cancelled [env: CUTTLE_SHUTDOWN_GRACE_SECS]
    #[arg(long, global = true)]
    pub(crate) shutdown_grace_secs: Option<u64>,
    /// Scripts on the node itself: `isolated` (the default) or `off` [env: CUTTLE_BUILTIN_WORKER]
    #[arg(long, global = true)]
    pub(crate) builtin_worker: Option<String>,
    /// The user scripts on the node run as (default cuttle-script) [env: CUTTLE_BUILTIN_WORKER_USER]
    #[arg(long, global = true)]
    pub(crate) builtin_worker_user: Option<String>,
    /// Comma-separated directories scripts on the node may write [env: CUTTLE_BUILTIN_WORKER_BIND]
    #[arg(long, global = true)]
    pub(crate) builtin_worker_bind: Option<String>,
}

macro_rules! overlay {
    ($base:ident, $top:ident, $($f:ident),*) => { $( if $top.$f.is_some() { $base.$f = $top.$f; } )* };
}

impl RawConfig {
    /// `top`'s settings win over `self`'s.
    pub(crate) fn overlay(mut self, top: RawConfig) -> RawConfig {
        overlay!(
            self,
            top,
            data_dir,
            database_url,
            master_key,
            shared_path,
            node_name,
            roles,
            task_cap,
            http_listen,
            grpc_listen,
            gateway_listen,
            public_grpc_listen,
            http_advertise,
            grpc_advertise,
            gateway_advertise,
            http_tls,
            http_tls_cert,
            http_tls_key,
            http_header_timeout_secs,
            http_body_timeout_secs,
            http_max_connections,
            http_max_connections_per_client,
            task_log_max_bytes,
            package_max_bytes,
            heartbeat_secs,
            offline_after_secs,
            health_check_secs,
            maintenance_secs,
            package_versions_to_keep,
            event_archive_after_secs,
            poll_ms,
            admin_api_key,
            trusted_proxies,
            log,
            log_format,
            db_wait_secs,
            db_pool_size,
            db_connect_timeout_secs,
            db_command_timeout_secs,
            shutdown_grace_secs,
            builtin_worker,
            builtin_worker_user,
            builtin_worker_bind
        );
        self
    }

    pub(crate) fn from_file(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }

    /// Reads the `CUTTLE_*` variables from `env` (passed in, so tests never touch the real
    /// process environment).
    pub(crate) fn from_env(env: &HashMap<String, String>) -> Result<RawConfig> {
        fn num<T: std::str::FromStr>(
            env: &HashMap<String, String>,
            var: &str,
        ) -> Result<Option<T>> {
            match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    anyhow::anyhow!("{var}={v:?} is not a valid non-negative whole number")
                }),
            }
        }
        let s = |var: &str| {
            env.get(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Ok(RawConfig {
            data_dir: s("CUTTLE_DATA_DIR").map(PathBuf::from),
            database_url: s("CUTTLE_DATABASE_URL"),
            master_key: s("CUTTLE_MASTER_KEY"),
            shared_path: s("CUTTLE_SHARED_PATH").map(PathBuf::from),
            node_name: s("CUTTLE_NODE_NAME"),
            roles: s("CUTTLE_ROLES"),
            task_cap: num(env, "CUTTLE_TASK_CAP")?,
            http_listen: s("CUTTLE_HTTP_LISTEN"),
            grpc_listen: s("CUTTLE_GRPC_LISTEN"),
            gateway_listen: s("CUTTLE_GATEWAY_LISTEN"),
            // Set but empty means off: kept, unlike other settings' empty values.
            public_grpc_listen: env
                .get("CUTTLE_PUBLIC_GRPC_LISTEN")
                .map(|v| v.trim().to_owned()),
            http_advertise: s("CUTTLE_HTTP_ADVERTISE"),
            grpc_advertise: s("CUTTLE_GRPC_ADVERTISE"),
            gateway_advertise: s("CUTTLE_GATEWAY_ADVERTISE"),
            http_tls: s("CUTTLE_HTTP_TLS"),
            http_tls_cert: s("CUTTLE_HTTP_TLS_CERT").map(PathBuf::from),
            http_tls_key: s("CUTTLE_HTTP_TLS_KEY").map(PathBuf::from),
            http_header_timeout_secs: num(env, "CUTTLE_HTTP_HEADER_TIMEOUT_SECS")?,
            http_body_timeout_secs: num(env, "CUTTLE_HTTP_BODY_TIMEOUT_SECS")?,
            http_max_connections: num(env, "CUTTLE_HTTP_MAX_CONNECTIONS")?,
            http_max_connections_per_client: num(env, "CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT")?,
            task_log_max_bytes: num(env, "CUTTLE_TASK_LOG_MAX_BYTES")?,
            package_max_bytes: num(env, "CUTTLE_PACKAGE_MAX_BYTES")?,
            heartbeat_secs: num(env, "CUTTLE_HEARTBEAT_SECS")?,
            offline_after_secs: num(env, "CUTTLE_OFFLINE_AFTER_SECS")?,
            health_check_secs: num(env, "CUTTLE_HEALTH_CHECK_SECS")?,
            maintenance_secs: num(env, "CUTTLE_MAINTENANCE_SECS")?,
            package_versions_to_keep: num(env, "CUTTLE_PACKAGE_VERSIONS_TO_KEEP")?,
            event_archive_after_secs: num(env, "CUTTLE_EVENT_ARCHIVE_AFTER_SECS")?,
            poll_ms: num(env, "CUTTLE_POLL_MS")?,
            admin_api_key: s("CUTTLE_ADMIN_API_KEY"),
            trusted_proxies: s("CUTTLE_TRUSTED_PROXIES"),
            log: s("CUTTLE_LOG"),
            log_format: s("CUTTLE_LOG_FORMAT"),
            db_wait_secs: num(env, "CUTTLE_DB_WAIT_SECS")?,
            db_pool_size: num(env, "CUTTLE_DB_POOL_SIZE")?,
            db_connect_timeout_secs: num(env, "CUTTLE_DB_CONNECT_TIMEOUT_SECS")?,
            db_command_timeout_secs: num(env, "CUTTLE_DB_COMMAND_TIMEOUT_SECS")?,
            shutdown_grace_secs: num(env, "CUTTLE_SHUTDOWN_GRACE_SECS")?,
            builtin_worker: s("CUTTLE_BUILTIN_WORKER"),
            builtin_worker_user: s("CUTTLE_BUILTIN_WORKER_USER"),
            builtin_worker_bind: s("CUTTLE_BUILTIN_WORKER_BIND"),
        })
    }
}

/// How the api role's listener speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpTls {
    /// Plain HTTP: for a load balancer that terminates TLS, or loopback.
    Off,
    /// HTTPS with the cluster's own certificate.
    Cluster,
    /// HTTPS with this certificate chain and key (PEM files, reloaded when they change).
    Files { cert: PathBuf, key: PathBuf },
}

impl HttpTls {
    fn validate(
        mode: Option<&str>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<HttpTls> {
        let files = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((absolute(cert), absolute(key))),
            (Some(_), None) => bail!("CUTTLE_HTTP_TLS_CERT is set without CUTTLE_HTTP_TLS_KEY"),
            (None, Some(_)) => bail!("CUTTLE_HTTP_TLS_KEY is set without CUTTLE_HTTP_TLS_CERT"),
        };
        Ok(match (mode, files) {
            (None | Some("files"), Some((cert, key))) => HttpTls::Files { cert, key },
            (Some("files"), None) => {
                bail!("CUTTLE_HTTP_TLS=files needs CUTTLE_HTTP_TLS_CERT and CUTTLE_HTTP_TLS_KEY")
            }
            (None | Some("off"), None) => HttpTls::Off,
            (Some("cluster"), None) => HttpTls::Cluster,
            (Some(m @ ("off" | "cluster")), Some(_)) => bail!(
                "CUTTLE_HTTP_TLS={m} contradicts CUTTLE_HTTP_TLS_CERT/_KEY: give one or the other"
            ),
            (Some(other), _) => {
                bail!("CUTTLE_HTTP_TLS must be off, cluster or files, got {other:?}")
            }
        })
    }
}

/// The largest package upload a node takes unless told otherwise: 4 GiB.
pub(crate) const DEFAULT_PACKAGE_MAX_BYTES: u64 = 4 << 30;

/// Validated settings, as the node uses them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) database_url: String,
    pub(crate) master_key: Option<String>,
    pub(crate) shared_path: PathBuf,
    /// True when the shared path is the default under the data dir (then it may be created).
    pub(crate) shared_path_is_default: bool,
    pub(crate) node_name: String,
    pub(crate) roles: RoleSet,
    pub(crate) task_cap: u32,
    pub(crate) http_listen: SocketAddr,
    pub(crate) grpc_listen: SocketAddr,
    pub(crate) gateway_listen: SocketAddr,
    /// The public gRPC API's listener; `None`: off.
    pub(crate) public_grpc_listen: Option<SocketAddr>,
    /// Explicit `host:port`s to advertise (checked); `None`: derived from the listener.
    pub(crate) http_advertise: Option<String>,
    pub(crate) grpc_advertise: Option<String>,
    pub(crate) gateway_advertise: Option<String>,
    pub(crate) http_tls: HttpTls,
    pub(crate) http_limits: cuttle_api_gateway::ConnectionLimits,
    pub(crate) task_log_max_bytes: u64,
    /// `None`: uploads of any size.
    pub(crate) package_max_bytes: Option<u64>,
    pub(crate) heartbeat: Duration,
    pub(crate) offline_after: Duration,
    /// `None`: no periodic health checks.
    pub(crate) health_check: Option<Duration>,
    /// Retention and the audit archive; `None`: off.
    pub(crate) maintenance: Option<cuttle_task_scheduler::Maintenance>,
    pub(crate) poll: Duration,
    pub(crate) admin_api_key: Option<String>,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) log: String,
    pub(crate) log_json: bool,
    pub(crate) db_wait: Duration,
    pub(crate) db_pool_size: u32,
    pub(crate) db_connect_timeout: Duration,
    pub(crate) db_command_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    /// Scripts on the node: isolated or off, as whom, and what they may write.
    pub(crate) builtin_worker: cuttle_task_worker::BuiltinWorker,
    pub(crate) builtin_worker_user: String,
    pub(crate) builtin_worker_bind: Vec<PathBuf>,
    /// The `--config` file, hidden from scripts.
    pub(crate) config_file: Option<PathBuf>,
}

/// Where scripts on a node may write: absolute directories, none holding or inside the data
/// directory.
fn writable_dirs(list: Option<&str>, data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let p = PathBuf::from(d);
        if !p.is_absolute() {
            bail!("CUTTLE_BUILTIN_WORKER_BIND: {d:?} is not an absolute path");
        }
        if p.starts_with(data_dir) || data_dir.starts_with(&p) {
            bail!(
                "CUTTLE_BUILTIN_WORKER_BIND: {d:?} overlaps the data directory {}, which scripts \
                 must never see",
                data_dir.display()
            );
        }
        out.push(p);
    }
    Ok(out)
}

fn addr(name: &str, v: Option<String>, default: &str) -> Result<SocketAddr> {
    let v = v.unwrap_or_else(|| default.to_owned());
    v.parse()
        .with_context(|| format!("{name} {v:?} is not an address like 127.0.0.1:8080"))
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| validate_node_name(h).is_ok())
        .unwrap_or_else(|| "cuttle-node".to_owned())
}

impl Config {
    pub(crate) fn validate(raw: RawConfig) -> Result<Config> {
        let data_dir = absolute(raw.data_dir.unwrap_or_else(|| PathBuf::from("cuttle-data")));
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("cuttle.db").display()));
        let shared_path_is_default = raw.shared_path.is_none();
        let shared_path = absolute(raw.shared_path.unwrap_or_else(|| data_dir.join("shared")));
        let node_name = raw.node_name.unwrap_or_else(host_name);
        validate_node_name(&node_name).context("CUTTLE_NODE_NAME")?;
        let roles = match raw.roles {
            Some(r) => RoleSet::parse(&r).context("CUTTLE_ROLES")?,
            None => RoleSet::all(),
        };
        let task_cap = raw.task_cap.unwrap_or(5);
        if task_cap > MAX_TASK_CAP {
            bail!("CUTTLE_TASK_CAP {task_cap} is too large: at most {MAX_TASK_CAP}");
        }
        let heartbeat_secs = raw.heartbeat_secs.unwrap_or(15);
        let offline_after_secs = raw.offline_after_secs.unwrap_or(60);
        if heartbeat_secs == 0 || heartbeat_secs > 3600 {
            bail!("CUTTLE_HEARTBEAT_SECS must be 1..=3600, got {heartbeat_secs}");
        }
        if offline_after_secs <= heartbeat_secs || offline_after_secs > 86_400 {
            bail!(
                "CUTTLE_OFFLINE_AFTER_SECS ({offline_after_secs}) must be greater than \
                 CUTTLE_HEARTBEAT_SECS ({heartbeat_secs}) and at most 86400; \
                 three heartbeats or more is safest"
            );
        }
        let poll_ms = raw.poll_ms.unwrap_or(1000);
        if !(10..=60_000).contains(&poll_ms) {
            bail!("CUTTLE_POLL_MS must be 10..=60000, got {poll_ms}");
        }
        let log_json = match raw.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("CUTTLE_LOG_FORMAT must be text or json, got {other:?}"),
        };
        for (setting, value) in [
            ("CUTTLE_HTTP_ADVERTISE", &raw.http_advertise),
            ("CUTTLE_GRPC_ADVERTISE", &raw.grpc_advertise),
            ("CUTTLE_GATEWAY_ADVERTISE", &raw.gateway_advertise),
        ] {
            if let Some(v) = value {
                crate::advertise::validate(setting, v)?;
            }
        }
        let http_tls =
            HttpTls::validate(raw.http_tls.as_deref(), raw.http_tls_cert, raw.http_tls_key)?;
        let defaults = cuttle_api_gateway::ConnectionLimits::default();
        let header_timeout = raw
            .http_header_timeout_secs
            .unwrap_or(defaults.header_timeout.as_secs());
        if !(1..=3600).contains(&header_timeout) {
            bail!("CUTTLE_HTTP_HEADER_TIMEOUT_SECS must be 1..=3600, got {header_timeout}");
        }
        let body_timeout = raw
            .http_body_timeout_secs
            .unwrap_or(defaults.body_timeout.as_secs());
        if !(1..=3600).contains(&body_timeout) {
            bail!("CUTTLE_HTTP_BODY_TIMEOUT_SECS must be 1..=3600, got {body_timeout}");
        }
        let max_connections = raw.http_max_connections.unwrap_or(defaults.max_connections);
        if !(1..=1_000_000).contains(&max_connections) {
            bail!("CUTTLE_HTTP_MAX_CONNECTIONS must be 1..=1000000, got {max_connections}");
        }
        let max_per_client = raw
            .http_max_connections_per_client
            .unwrap_or(defaults.max_per_client.min(max_connections));
        if !(1..=max_connections).contains(&max_per_client) {
            bail!(
                "CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT must be 1..=CUTTLE_HTTP_MAX_CONNECTIONS \
                 ({max_connections}), got {max_per_client}"
            );
        }
        let http_limits = cuttle_api_gateway::ConnectionLimits {
            max_connections,
            max_per_client,
            header_timeout: Duration::from_secs(header_timeout),
            body_timeout: Duration::from_secs(body_timeout),
        };
        let task_log_max_bytes = raw
            .task_log_max_bytes
            .unwrap_or(cuttle_storage::DEFAULT_TASK_LOG_MAX_BYTES);
        if task_log_max_bytes < 64 * 1024 {
            bail!("CUTTLE_TASK_LOG_MAX_BYTES must be at least 65536, got {task_log_max_bytes}");
        }
        let log = raw.log.unwrap_or_else(|| "info".to_owned());
        if let Some(e) = cuttle_telemetry::logging::check_filter(&log) {
            bail!(
                "CUTTLE_LOG is not a log filter ({e}): try info or info,cuttle_task_worker=debug"
            );
        }
        let db_pool_size = raw.db_pool_size.unwrap_or(16);
        if !(1..=1000).contains(&db_pool_size) {
            bail!("CUTTLE_DB_POOL_SIZE must be 1..=1000, got {db_pool_size}");
        }
        let db_connect_timeout = raw.db_connect_timeout_secs.unwrap_or(5);
        if !(1..=300).contains(&db_connect_timeout) {
            bail!("CUTTLE_DB_CONNECT_TIMEOUT_SECS must be 1..=300, got {db_connect_timeout}");
        }
        let db_command_timeout = raw.db_command_timeout_secs.unwrap_or(30);
        if !(1..=3600).contains(&db_command_timeout) {
            bail!("CUTTLE_DB_COMMAND_TIMEOUT_SECS must be 1..=3600, got {db_command_timeout}");
        }
        let builtin_worker = match raw.builtin_worker.as_deref() {
            None => cuttle_task_worker::BuiltinWorker::Isolated,
            Some(v) => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("CUTTLE_BUILTIN_WORKER {e}"))?,
        };
        let builtin_worker_bind = writable_dirs(raw.builtin_worker_bind.as_deref(), &data_dir)?;
        Ok(Config {
            builtin_worker,
            builtin_worker_user: raw
                .builtin_worker_user
                .unwrap_or_else(|| cuttle_task_worker::DEFAULT_SCRIPT_USER.to_owned()),
            builtin_worker_bind,
            config_file: None,
            data_dir,
            database_url,
            master_key: raw.master_key,
            shared_path,
            shared_path_is_default,
            node_name,
            roles,
            task_cap,
            http_listen: addr("CUTTLE_HTTP_LISTEN", raw.http_listen, "127.0.0.1:8080")?,
            grpc_listen: addr("CUTTLE_GRPC_LISTEN", raw.grpc_listen, "127.0.0.1:8443")?,
            gateway_listen: addr("CUTTLE_GATEWAY_LISTEN", raw.gateway_listen, "0.0.0.0:10943")?,
            public_grpc_listen: match raw.public_grpc_listen.as_deref() {
                Some("") => None,
                v => Some(addr(
                    "CUTTLE_PUBLIC_GRPC_LISTEN",
                    v.map(str::to_owned),
                    "127.0.0.1:8444",
                )?),
            },
            http_advertise: raw.http_advertise,
            grpc_advertise: raw.grpc_advertise,
            gateway_advertise: raw.gateway_advertise,
            http_tls,
            http_limits,
            task_log_max_bytes,
            // 0 for no limit, as an explicit choice.
            package_max_bytes: match raw.package_max_bytes {
                None => Some(DEFAULT_PACKAGE_MAX_BYTES),
                Some(0) => None,
                Some(n) => Some(n),
            },
            heartbeat: Duration::from_secs(heartbeat_secs),
            offline_after: Duration::from_secs(offline_after_secs),
            health_check: match raw.health_check_secs.unwrap_or(3600) {
                0 => None,
                s if s > 7 * 86_400 => {
                    bail!("CUTTLE_HEALTH_CHECK_SECS ({s}) must be at most a week (604800), or 0 for none")
                }
                s => Some(Duration::from_secs(s)),
            },
            maintenance: match raw.maintenance_secs.unwrap_or(3600) {
                0 => None,
                s if !(10..=7 * 86_400).contains(&s) => bail!(
                    "CUTTLE_MAINTENANCE_SECS ({s}) must be 10 to 604800 (a week), or 0 for none"
                ),
                s => Some(cuttle_task_scheduler::Maintenance {
                    every: Duration::from_secs(s),
                    package_versions_to_keep: raw.package_versions_to_keep.unwrap_or(0),
                    archive_events_after: match raw.event_archive_after_secs.unwrap_or(90 * 86_400)
                    {
                        0 => None,
                        a if a < 60 => bail!(
                            "CUTTLE_EVENT_ARCHIVE_AFTER_SECS ({a}) must be at least 60, or 0 to keep \
                             every event in the database"
                        ),
                        a => Some(Duration::from_secs(a)),
                    },
                }),
            },
            poll: Duration::from_millis(poll_ms),
            admin_api_key: raw.admin_api_key,
            trusted_proxies: TrustedProxies::parse(raw.trusted_proxies.as_deref().unwrap_or(""))
                .context("CUTTLE_TRUSTED_PROXIES")?,
            log,
            log_json,
            db_wait: Duration::from_secs(raw.db_wait_secs.unwrap_or(30)),
            db_pool_size,
            db_connect_timeout: Duration::from_secs(db_connect_timeout),
            db_command_timeout: Duration::from_secs(db_command_timeout),
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(300)),
        })
    }

    /// Whether the database is the embedded SQLite file (where a master key may be generated).
    pub(crate) fn database_is_embedded(&self) -> bool {
        self.database_url.starts_with("sqlite://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every `CUTTLE_*` variable this file reads or names is a setting docs/configuration.md
    /// names (in backticks): a new setting cannot ship undocumented.
    #[test]
    fn every_setting_is_documented() {
        let source = include_str!("config.rs");
        let docs = include_str!("../../../docs/configuration.md");
        let mut names: Vec<&str> = source
            .split('"')
            .filter(|w| {
                w.starts_with("CUTTLE_")
                    && w.len() > "CUTTLE_".len()
                    && w.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 30, "{names:?}");
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !docs.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in docs/configuration.md: {missing:?}"
        );
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::validate(RawConfig::default()).unwrap();
        assert!(c.data_dir.ends_with("cuttle-data"));
        assert!(
            c.database_url.starts_with("sqlite://")
                && c.database_url.ends_with("cuttle-data/cuttle.db")
        );
        assert!(c.shared_path.ends_with("cuttle-data/shared") && c.shared_path_is_default);
        assert_eq!(c.roles, RoleSet::all());
        assert_eq!(c.task_cap, 5);
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.gateway_listen.to_string(), "0.0.0.0:10943");
        assert_eq!(
            c.public_grpc_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8444")
        );
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.offline_after, Duration::from_secs(60));
        assert_eq!(c.poll, Duration::from_millis(1000));
        assert_eq!(c.db_wait, Duration::from_secs(30));
        assert_eq!(c.db_connect_timeout, Duration::from_secs(5));
        assert_eq!(c.db_command_timeout, Duration::from_secs(30));
        assert!(c.database_is_embedded());
    }

    #[test]
    fn the_public_grpc_listener_is_off_when_set_empty() {
        let raw = RawConfig::from_env(&env(&[("CUTTLE_PUBLIC_GRPC_LISTEN", "")])).unwrap();
        assert_eq!(Config::validate(raw).unwrap().public_grpc_listen, None);
        let raw =
            RawConfig::from_env(&env(&[("CUTTLE_PUBLIC_GRPC_LISTEN", "0.0.0.0:9444")])).unwrap();
        let c = Config::validate(raw).unwrap();
        assert_eq!(c.public_grpc_listen, Some("0.0.0.0:9444".parse().unwrap()));
        let raw = RawConfig::from_env(&env(&[("CUTTLE_PUBLIC_GRPC_LISTEN", "nowhere")])).unwrap();
        let e = Config::validate(raw).unwrap_err().to_string();
        assert!(e.contains("CUTTLE_PUBLIC_GRPC_LISTEN"), "{e}");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: RawConfig =
            toml::from_str("task_cap = 1\nnode_name = \"from-file\"\npoll_ms = 50").unwrap();
        let env = RawConfig::from_env(&env(&[
            ("CUTTLE_TASK_CAP", "2"),
            ("CUTTLE_NODE_NAME", "from-env"),
        ]))
        .unwrap();
        let flags = RawConfig {
            task_cap: Some(3),
            ..Default::default()
        };
        let c = Config::validate(
            RawConfig::default()
                .overlay(file)
                .overlay(env)
                .overlay(flags),
        )
        .unwrap();
        assert_eq!(c.task_cap, 3);
        assert_eq!(c.node_name, "from-env");
        assert_eq!(c.poll, Duration::from_millis(50));
    }

    #[test]
    fn rejects_bad_settings_with_the_variable_name() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("CUTTLE_TASK_CAP", "-1")], "CUTTLE_TASK_CAP"),
            (&[("CUTTLE_TASK_CAP", "100000")], "CUTTLE_TASK_CAP"),
            (
                &[
                    ("CUTTLE_HEARTBEAT_SECS", "30"),
                    ("CUTTLE_OFFLINE_AFTER_SECS", "20"),
                ],
                "CUTTLE_OFFLINE_AFTER_SECS",
            ),
            (&[("CUTTLE_POLL_MS", "1")], "CUTTLE_POLL_MS"),
            (&[("CUTTLE_ROLES", "api,chef")], "CUTTLE_ROLES"),
            (&[("CUTTLE_NODE_NAME", "a b")], "CUTTLE_NODE_NAME"),
            (&[("CUTTLE_NODE_NAME", "..")], "CUTTLE_NODE_NAME"),
            (&[("CUTTLE_HTTP_LISTEN", "localhost")], "CUTTLE_HTTP_LISTEN"),
            (&[("CUTTLE_LOG_FORMAT", "xml")], "CUTTLE_LOG_FORMAT"),
            (&[("CUTTLE_LOG", "info,=[")], "CUTTLE_LOG"),
            (
                &[("CUTTLE_GATEWAY_ADVERTISE", "0.0.0.0:10943")],
                "CUTTLE_GATEWAY_ADVERTISE",
            ),
            (
                &[("CUTTLE_GRPC_ADVERTISE", "node1")],
                "CUTTLE_GRPC_ADVERTISE",
            ),
            (&[("CUTTLE_HTTP_TLS", "yes")], "CUTTLE_HTTP_TLS"),
            (
                &[("CUTTLE_HTTP_BODY_TIMEOUT_SECS", "0")],
                "CUTTLE_HTTP_BODY_TIMEOUT_SECS",
            ),
            (
                &[("CUTTLE_TASK_LOG_MAX_BYTES", "100")],
                "CUTTLE_TASK_LOG_MAX_BYTES",
            ),
            (
                &[("CUTTLE_HTTP_HEADER_TIMEOUT_SECS", "0")],
                "CUTTLE_HTTP_HEADER_TIMEOUT_SECS",
            ),
            (
                &[
                    ("CUTTLE_HTTP_MAX_CONNECTIONS", "10"),
                    ("CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT", "11"),
                ],
                "CUTTLE_HTTP_MAX_CONNECTIONS_PER_CLIENT",
            ),
            (&[("CUTTLE_HTTP_TLS_CERT", "/c.pem")], "CUTTLE_HTTP_TLS_KEY"),
            (
                &[
                    ("CUTTLE_HTTP_TLS", "cluster"),
                    ("CUTTLE_HTTP_TLS_CERT", "/c.pem"),
                    ("CUTTLE_HTTP_TLS_KEY", "/k.pem"),
                ],
                "CUTTLE_HTTP_TLS",
            ),
            (
                &[("CUTTLE_DB_CONNECT_TIMEOUT_SECS", "0")],
                "CUTTLE_DB_CONNECT_TIMEOUT_SECS",
            ),
            (
                &[("CUTTLE_DB_COMMAND_TIMEOUT_SECS", "99999")],
                "CUTTLE_DB_COMMAND_TIMEOUT_SECS",
            ),
            (
                &[("CUTTLE_TRUSTED_PROXIES", "10.0.0.0/99")],
                "CUTTLE_TRUSTED_PROXIES",
            ),
            (
                &[("CUTTLE_BUILTIN_WORKER", "unisolated")],
                "CUTTLE_BUILTIN_WORKER",
            ),
            (
                &[("CUTTLE_BUILTIN_WORKER_BIND", "relative/dir")],
                "CUTTLE_BUILTIN_WORKER_BIND",
            ),
            (
                &[
                    ("CUTTLE_DATA_DIR", "/srv/cuttle"),
                    ("CUTTLE_BUILTIN_WORKER_BIND", "/srv"),
                ],
                "CUTTLE_BUILTIN_WORKER_BIND",
            ),
        ];
        for (vars, want) in cases {
            let err = RawConfig::from_env(&env(vars)).and_then(Config::validate);
            let msg = format!("{:#}", err.expect_err(want));
            assert!(msg.contains(want), "{vars:?}: {msg}");
        }
        let unknown = toml::from_str::<RawConfig>("tsak_cap = 1");
        assert!(unknown.is_err(), "unknown keys in the file are errors");
    }
}

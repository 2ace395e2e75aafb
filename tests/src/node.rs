//! Real `cuttle-server` processes for the end-to-end tests: a cluster's database, shared store
//! and keys, each node's process, options, HTTP client and logs. Past 800 lines for a reason:
//! one harness type (`Node`) with every way a test talks to a node, kept in one place.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{free_port, temp_dir, wait_until, TempDir, TestPostgres, TestSqlServer};

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// Builds (once per process) and returns a workspace binary, unless `env_var` names one.
pub(crate) fn workspace_binary(env_var: &str, package: &str, bin: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("debug").join(bin)
}

/// The `cuttle` CLI binary: `CUTTLE_CLI_BIN`, or the workspace's debug build.
pub fn cli_binary() -> PathBuf {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| workspace_binary("CUTTLE_CLI_BIN", "cuttle-cli", "cuttle"))
        .clone()
}

/// Makes every node this process starts run `path` (e.g. a release build for benchmarks).
/// Has no effect once a node was started.
pub fn use_server_binary(path: PathBuf) {
    let _ = BIN.set(path);
}

/// The `cuttle-server` binary to test: `CUTTLE_SERVER_BIN`, or the workspace's debug build,
/// brought up to date with `cargo build` once per test process.
pub fn server_binary() -> PathBuf {
    BIN.get_or_init(|| workspace_binary("CUTTLE_SERVER_BIN", "cuttle-server", "cuttle-server"))
        .clone()
}

/// Which database a cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// One SQLite file on this host, shared by every node process.
    Sqlite,
    /// A real PostgreSQL database.
    Postgres,
    /// A real SQL Server database, on the server `CUTTLE_TEST_MSSQL_URL` names.
    SqlServer,
}

/// The shared parts of a test cluster: database, master key, admin API key, shared store.
pub struct Cluster {
    dir: TempDir,
    pub db_url: String,
    pub master_key: String,
    pub api_key: String,
    pg: Option<TestPostgres>,
    mssql: Option<TestSqlServer>,
}

/// Per-node settings; `Default` gives a fast-heartbeat node with every role.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    pub task_cap: u32,
    pub roles: String,
    pub heartbeat_secs: u64,
    pub offline_after_secs: u64,
    pub poll_ms: u64,
    pub shutdown_grace_secs: u64,
    /// Extra environment, applied last (may override anything above).
    pub env: Vec<(String, String)>,
    /// ERROR lines this node may log (substrings); any other ERROR line fails the test when
    /// the node is dropped.
    pub expected_errors: Vec<String>,
    /// The node serves its API over HTTPS (set `CUTTLE_HTTP_TLS*` in `env`); the harness
    /// talks to it so.
    pub https: Option<HttpsTrust>,
    /// The most file descriptors the node may hold (soft and hard limit), as a small host's
    /// default would be; the system's when `None`.
    pub open_files: Option<u64>,
}

/// How the harness trusts a node's HTTPS certificate.
#[derive(Debug, Clone)]
pub enum HttpsTrust {
    /// Certificates chaining to this CA (PEM).
    Ca(String),
    /// Any certificate (the cluster's self-signed one); tests check which by other means.
    Any,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: "node".into(),
            task_cap: 2,
            roles: "api,scheduler,worker,gateway".into(),
            heartbeat_secs: 1,
            offline_after_secs: 4,
            poll_ms: 200,
            shutdown_grace_secs: 5,
            env: Vec::new(),
            expected_errors: Vec::new(),
            https: None,
            open_files: None,
        }
    }
}

impl NodeOptions {
    pub fn named(name: &str, task_cap: u32) -> Self {
        NodeOptions {
            name: name.into(),
            task_cap,
            ..Default::default()
        }
    }
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Cluster {
    pub fn new(db: Database) -> Result<Cluster> {
        let dir = temp_dir("cluster");
        std::fs::create_dir_all(dir.path().join("shared"))?;
        // Scripts on the nodes run as their own user, and write only here (see scripts_dir).
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(&scripts)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o1777))?;
        }
        let (db_url, pg, mssql) = match db {
            Database::Sqlite => (
                format!("sqlite://{}", dir.path().join("cuttle.db").display()),
                None,
                None,
            ),
            Database::Postgres => {
                let pg = TestPostgres::start()?;
                (pg.url().to_owned(), Some(pg), None)
            }
            Database::SqlServer => {
                let ms = TestSqlServer::start()?;
                (ms.url().to_owned(), None, Some(ms))
            }
        };
        Ok(Cluster {
            dir,
            db_url,
            master_key: random_b64(32),
            api_key: format!("API-TEST{}", random_b64(24).replace(['+', '/', '='], "x")),
            pg,
            mssql,
        })
    }

    pub fn sqlite() -> Cluster {
        Cluster::new(Database::Sqlite).expect("sqlite cluster")
    }

    pub fn postgres() -> Cluster {
        Cluster::new(Database::Postgres).expect("postgres cluster")
    }

    pub fn postgres_server(&self) -> Option<&TestPostgres> {
        self.pg.as_ref()
    }

    /// Stops the cluster's database server (PostgreSQL started by the harness, or SQL Server
    /// through `CUTTLE_TEST_MSSQL_STOP`): for outage tests.
    pub fn stop_database(&self) -> Result<()> {
        match (&self.pg, &self.mssql) {
            (Some(pg), _) => pg.stop_server(),
            (_, Some(ms)) => ms.stop_server(),
            _ => bail!("this cluster's database has no server to stop"),
        }
    }

    /// Starts it again after [`Cluster::stop_database`].
    pub fn start_database(&self) -> Result<()> {
        match (&self.pg, &self.mssql) {
            (Some(pg), _) => pg.start_server(),
            (_, Some(ms)) => ms.start_server(),
            _ => bail!("this cluster's database has no server to start"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn shared_dir(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    /// The one host directory scripts on the nodes may write (`CUTTLE_BUILTIN_WORKER_BIND`):
    /// where tests and scripts leave each other files. Everything else a node script sees is
    /// read-only or hidden.
    pub fn scripts_dir(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    /// The command that starts a node with these options (not yet spawned).
    pub fn command(&self, opts: &NodeOptions, http_port: u16, grpc_port: u16) -> Command {
        let node_dir = self.dir.path().join(&opts.name);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let mut cmd = Command::new(server_binary());
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CUTTLE_DATA_DIR", &node_dir)
            .env("CUTTLE_DATABASE_URL", &self.db_url)
            .env("CUTTLE_MASTER_KEY", &self.master_key)
            .env("CUTTLE_ADMIN_API_KEY", &self.api_key)
            .env("CUTTLE_SHARED_PATH", self.shared_dir())
            .env("CUTTLE_NODE_NAME", &opts.name)
            .env("CUTTLE_ROLES", &opts.roles)
            .env("CUTTLE_TASK_CAP", opts.task_cap.to_string())
            .env("CUTTLE_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("CUTTLE_GRPC_LISTEN", format!("127.0.0.1:{grpc_port}"))
            .env(
                "CUTTLE_GATEWAY_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "CUTTLE_PUBLIC_GRPC_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("CUTTLE_HEARTBEAT_SECS", opts.heartbeat_secs.to_string())
            .env(
                "CUTTLE_OFFLINE_AFTER_SECS",
                opts.offline_after_secs.to_string(),
            )
            .env("CUTTLE_POLL_MS", opts.poll_ms.to_string())
            // Retention and the audit archive only where a test asks for them: their periodic
            // tasks would otherwise join every test's queue.
            .env("CUTTLE_MAINTENANCE_SECS", "0")
            .env(
                "CUTTLE_SHUTDOWN_GRACE_SECS",
                opts.shutdown_grace_secs.to_string(),
            )
            .env("CUTTLE_DB_WAIT_SECS", "10")
            .env("CUTTLE_BUILTIN_WORKER_BIND", self.scripts_dir())
            .env(
                "CUTTLE_LOG",
                "info,cuttle_api_gateway=debug,cuttle_task_worker=debug,cuttle_storage=debug",
            )
            .stdin(Stdio::null());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(n) = opts.open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
    }

    /// A `cuttle-server` command (`check`, `api-key create`, …) against this cluster's
    /// database, as an operator runs it on a node's host.
    pub fn server_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(server_binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CUTTLE_DATA_DIR", self.dir.path().join("cmd"))
            .env("CUTTLE_DATABASE_URL", &self.db_url)
            .env("CUTTLE_MASTER_KEY", &self.master_key)
            .env("CUTTLE_SHARED_PATH", self.shared_dir())
            .env("CUTTLE_DB_WAIT_SECS", "2");
        cmd
    }

    /// Runs a `cuttle-server` command (see [`Cluster::server_command`]) to its end with
    /// `stdin` as its input: whether it succeeded, and its stdout then stderr.
    pub fn run_server(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .server_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cuttle-server");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("write its input");
        }
        let out = child.wait_with_output().expect("wait for cuttle-server");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Spawns a node without waiting for it to be ready.
    pub fn spawn(&self, mut opts: NodeOptions) -> Node {
        let (http_port, grpc_port, gateway_port) = (free_port(), free_port(), free_port());
        let public_grpc_port = free_port();
        // Kept in the options, so a restart listens on the same ports (and a test's own
        // settings, later in the list, win).
        opts.env.insert(
            0,
            (
                "CUTTLE_GATEWAY_LISTEN".into(),
                format!("127.0.0.1:{gateway_port}"),
            ),
        );
        opts.env.insert(
            0,
            (
                "CUTTLE_PUBLIC_GRPC_LISTEN".into(),
                format!("127.0.0.1:{public_grpc_port}"),
            ),
        );
        let mut cmd = self.command(&opts, http_port, grpc_port);
        let node_dir = self.dir.path().join(&opts.name);
        let n = std::fs::read_dir(&node_dir).map(|d| d.count()).unwrap_or(0);
        let stdout = node_dir.join(format!("stdout.{n}.log"));
        let stderr = node_dir.join(format!("stderr.{n}.log"));
        cmd.stdout(File::create(&stdout).expect("stdout file"));
        cmd.stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("spawn cuttle-server");
        let agent = agent(opts.https.as_ref());
        Node {
            name: opts.name.clone(),
            opts,
            child: Some(child),
            http_port,
            grpc_port,
            gateway_port,
            public_grpc_port,
            api_key: self.api_key.clone(),
            stdout,
            stderr,
            agent,
        }
    }

    /// Starts a node and waits until its ping answers.
    pub fn start(&self, opts: NodeOptions) -> Node {
        let mut node = self.spawn(opts);
        node.wait_ready();
        node
    }

    /// Restarts a stopped node on the same ports.
    pub fn restart(&self, node: &mut Node) {
        let mut cmd = self.command(&node.opts, node.http_port, node.grpc_port);
        cmd.stdout(
            File::options()
                .append(true)
                .open(&node.stdout)
                .expect("stdout"),
        );
        cmd.stderr(
            File::options()
                .append(true)
                .open(&node.stderr)
                .expect("stderr"),
        );
        node.child = Some(cmd.spawn().expect("spawn cuttle-server"));
        node.wait_ready();
    }
}

/// An HTTP client for a node: plain, or HTTPS trusting what `https` says.
pub fn agent(https: Option<&HttpsTrust>) -> ureq::Agent {
    let builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)));
    let tls = match https {
        None => return builder.build().into(),
        Some(HttpsTrust::Any) => ureq::tls::TlsConfig::builder().disable_verification(true),
        Some(HttpsTrust::Ca(pem)) => {
            let ca = ureq::tls::Certificate::from_pem(pem.as_bytes())
                .expect("CA certificate PEM")
                .to_owned();
            ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        }
    };
    builder.tls_config(tls.build()).build().into()
}

/// One `cuttle-server` process. SIGTERM, then SIGKILL, on drop.
pub struct Node {
    pub name: String,
    pub opts: NodeOptions,
    child: Option<Child>,
    pub http_port: u16,
    pub grpc_port: u16,
    pub gateway_port: u16,
    /// The public gRPC API (`cuttle.v1`).
    pub public_grpc_port: u16,
    api_key: String,
    stdout: PathBuf,
    stderr: PathBuf,
    agent: ureq::Agent,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.opts.https.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Creates an API key with the admin key (`body` as `POST /api/keys` takes it): its id
    /// and the key.
    pub fn create_key(&self, body: &Value) -> (String, String) {
        let (status, created) = self.post("/api/keys", body);
        assert_eq!(status, 201, "{created}");
        (
            created["id"].as_str().expect("key id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }

    /// Creates an API key of `scope` named `name`; the key.
    pub fn key_with_scope(&self, name: &str, scope: &str) -> String {
        self.create_key(&serde_json::json!({"name": name, "scope": scope}))
            .1
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "node {} exited during start-up ({status}):\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            let has_api = self.opts.roles.split(',').any(|r| r.trim() == "api");
            if !has_api && self.stderr_text().contains("node registered") {
                return;
            }
            if let Ok(resp) = self.agent.get(&self.url("/api/nodes/ping")).call() {
                if has_api && resp.status().as_u16() != 503 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} did not become ready:\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes these environments in the default space (those that exist already are left as
    /// they are): targets are registered only in environments that exist.
    pub fn make_environments(&self, names: &[&str]) {
        for name in names {
            self.environment(name);
        }
    }

    /// The id of the default space's environment `name`, made now unless it exists.
    pub fn environment(&self, name: &str) -> String {
        let path = "/api/spaces/default/environments";
        let (status, body) = self.post(path, &serde_json::json!({ "name": name }));
        let found = match status {
            201 => body,
            409 => {
                let (_, list) = self.get(path);
                list["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|e| e["name"] == name).cloned())
                    .unwrap_or_else(|| panic!("environment {name}: 409 but not listed: {list}"))
            }
            _ => panic!("make environment {name}: {status} {body}"),
        };
        found["id"].as_str().expect("an environment id").to_owned()
    }

    /// Sends a request with the admin key; returns the status and the JSON body (or the text
    /// as a JSON string when the body is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.request_with_headers(&self.api_key, method, path, body, &[])
    }

    /// [`Node::request`] with another API key.
    pub fn request_with_key(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        self.request_with_headers(key, method, path, body, &[])
    }

    /// [`Node::request`] with another API key and more headers (`If-Match`, …).
    pub fn request_with_headers(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = self.url(path);
        let with = |mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            req = req.header("X-Api-Key", key);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req
        };
        let with_body = |mut req: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            req = req.header("X-Api-Key", key);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req
        };
        let resp = match method {
            "GET" => with(self.agent.get(&url)).call(),
            "DELETE" => with(self.agent.delete(&url)).call(),
            m => {
                let req = match m {
                    "POST" => self.agent.post(&url),
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    other => panic!("unsupported method {other}"),
                };
                with_body(req)
                    .header("Content-Type", "application/json")
                    .send(body.unwrap_or(""))
            }
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.name));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// The HTTP client this node's requests use (HTTPS trust included).
    pub fn http(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The admin API key this node's requests carry.
    pub fn api_key(&self) -> String {
        self.api_key.clone()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()))
    }

    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("PATCH", path, Some(&body.to_string()))
    }

    /// The ping's status code, with no API key.
    pub fn ping(&self) -> u16 {
        self.agent
            .get(&self.url("/api/nodes/ping"))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Enqueues a task; panics unless 201. Returns its id.
    pub fn enqueue(&self, task: Value) -> String {
        let (status, body) = self.post("/api/tasks", &task);
        assert_eq!(status, 201, "enqueue {task}: {body}");
        body["id"].as_str().expect("task id").to_owned()
    }

    pub fn task(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/tasks/{id}"));
        assert_eq!(status, 200, "get {id}: {body}");
        body
    }

    /// Polls a task until `pred` holds on it.
    pub fn wait_task(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(&format!("task {id} {what}"), timeout, || {
            let t = self.task(id);
            pred(&t).then_some(t)
        })
    }

    /// Polls a task until it reaches a terminal state.
    pub fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        self.wait_task(id, "to finish", timeout, |t| {
            matches!(
                t["state"].as_str(),
                Some("Success" | "Failed" | "Canceled" | "TimedOut")
            )
        })
    }

    pub fn task_log(&self, id: &str) -> String {
        self.task_log_and_completeness(id).0
    }

    /// A task's log and whether the node says it is complete (`X-Cuttle-Log-Complete`).
    pub fn task_log_and_completeness(&self, id: &str) -> (String, bool) {
        let mut resp = self
            .agent
            .get(&self.url(&format!("/api/tasks/{id}/log")))
            .header("X-Api-Key", &self.api_key)
            .call()
            .unwrap_or_else(|e| panic!("log of {id} on {}: {e}", self.name));
        let status = resp.status().as_u16();
        let complete = resp
            .headers()
            .get("x-cuttle-log-complete")
            .is_some_and(|v| v == "true");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "log of {id}: {text}");
        (text, complete)
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL: the node dies mid-flight, as on a crash or power loss.
    /// Sends SIGHUP (reload what can be reloaded).
    pub fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: the node freezes (no heartbeats) without dying.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Freezes the node between two of its database writes: a process stopped inside a SQLite
    /// write would hold the database's write lock while frozen, which no real pause of a live
    /// node's host does for longer than a write. Retries (thawing in between) while the frozen
    /// process holds a POSIX write lock (`/proc/locks`).
    pub fn freeze_between_writes(&self) {
        let pid = self.pid().expect("a running node");
        for _ in 0..200 {
            self.freeze();
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let writing = locks.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[1] == "POSIX" && f[3] == "WRITE" && f[4] == pid.to_string()
            });
            if !writing {
                return;
            }
            self.thaw();
            std::thread::sleep(Duration::from_millis(20)); // letting its write end
        }
        panic!(
            "node {} was inside a write at every try to freeze it",
            self.name
        );
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM without waiting.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                self.child = None;
                return Ok(st);
            }
            if self.child.is_none() {
                bail!("node {} is not running", self.name);
            }
            if Instant::now() > deadline {
                bail!("node {} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Node {
    /// ERROR lines in the node's log that the test did not declare in `expected_errors`.
    pub fn unexpected_errors(&self) -> Vec<String> {
        self.stderr_text()
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains("\"level\":\"ERROR\""))
            .filter(|l| {
                !self
                    .opts
                    .expected_errors
                    .iter()
                    .any(|e| l.contains(e.as_str()))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
            self.terminate();
            if self.wait_exit(Duration::from_secs(10)).is_err() {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        // A node that logged an error nobody expected is a failed test, even if every
        // assertion held (a panic already in flight is reported as it is).
        let errors = self.unexpected_errors();
        if !errors.is_empty() && !std::thread::panicking() {
            panic!(
                "node {} logged unexpected errors:\n{}",
                self.name,
                errors.join("\n")
            );
        }
    }
}

/// Runs a node command to completion (e.g. one expected to fail at start-up).
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Result<(ExitStatus, String, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut out)?;
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err)?;
            }
            return Ok((st, out, err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("command still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

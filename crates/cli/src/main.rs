//! `cuttle`: the operator CLI over the REST API.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports here

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cuttle_core::check_server_url;

mod deploy;
mod model;
mod output;
mod package;
mod process;
mod resources;
use output::{show, Output};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "cuttle",
    version,
    about = "Operate a Cuttle cluster over its REST API"
)]
struct Cli {
    /// Base URL of any node (or the load balancer)
    #[arg(
        long,
        env = "CUTTLE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API key
    #[arg(long, env = "CUTTLE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Allow plain http:// to another host (the key crosses the network in clear text)
    #[arg(long, global = true)]
    insecure: bool,
    /// The SHA-256 thumbprint of the certificate the server must present over HTTPS (a cluster
    /// serving its own certificate, CUTTLE_HTTP_TLS=cluster): any other is refused before the
    /// key is sent
    #[arg(
        long,
        env = "CUTTLE_SERVER_THUMBPRINT",
        global = true,
        value_name = "THUMBPRINT"
    )]
    server_thumbprint: Option<cuttle_tls::Thumbprint>,
    /// How results are printed: a table for people, JSON or YAML for programs
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Nodes of the cluster
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
    /// Tasks in the queue
    Task {
        #[command(subcommand)]
        action: TaskCmd,
    },
    /// Environments: list, create, delete
    Environment {
        #[command(subcommand)]
        action: model::EnvironmentCmd,
    },
    /// Projects: list, create, delete
    Project {
        #[command(subcommand)]
        action: model::ProjectCmd,
    },
    /// A project's variables: list, set (sensitive values from standard input)
    Variable {
        #[command(subcommand)]
        action: model::VariableCmd,
    },
    /// Runbooks: list, create, publish, delete, run
    Runbook {
        #[command(subcommand)]
        action: resources::RunbookCmd,
    },
    /// A project's deployment process or a runbook's: show, edit (YAML, in $EDITOR or a file)
    Process {
        #[command(subcommand)]
        action: process::ProcessCmd,
    },
    /// Spaces: list, create
    Space {
        #[command(subcommand)]
        action: resources::SpaceCmd,
    },
    /// Lifecycles: list, create (phases in order), delete
    Lifecycle {
        #[command(subcommand)]
        action: resources::LifecycleCmd,
    },
    /// Deployment targets: list, show, update (environments, roles), delete
    Target {
        #[command(subcommand)]
        action: resources::TargetCmd,
    },
    /// Print a shell's completion script: `cuttle completions bash > /etc/bash_completion.d/cuttle`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Releases of a project
    Release {
        #[command(subcommand)]
        action: ReleaseCmd,
    },
    /// Deploy a release of a project to an environment (checked against its lifecycle)
    Deploy {
        /// The project, by name or id
        #[arg(long)]
        project: String,
        /// The release's version
        #[arg(long)]
        release: String,
        /// The environment, by name or id
        #[arg(long)]
        environment: String,
        /// Follow the deployment's log; exit non-zero unless it succeeds
        #[arg(long)]
        wait: bool,
        /// The space, by name or id
        #[arg(long, default_value = "default")]
        space: String,
    },
    /// Packages of the built-in repository: upload, list, download, delete
    Package {
        #[command(subcommand)]
        action: PackageCmd,
    },
    /// Audit events: export a time range (archived and current) as JSON lines
    Events {
        #[command(subcommand)]
        action: EventsCmd,
    },
    /// API keys: create, list, revoke (admin keys only)
    ApiKey {
        #[command(subcommand)]
        action: KeyCmd,
    },
    /// Plan task caps for a deployment window (the HA guide's formula)
    Capacity {
        /// Projects to deploy in the window
        #[arg(long)]
        projects: u32,
        /// Average deployment duration in minutes
        #[arg(long)]
        minutes: u32,
        /// Deployment window in minutes
        #[arg(long)]
        window: u32,
        /// Nodes to spread the cap over
        #[arg(long, default_value_t = 2)]
        nodes: u32,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    List,
    /// Stop a node taking new tasks (its running tasks finish)
    Drain {
        name: String,
        /// Return only once the node runs no tasks
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 1)
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    Undrain {
        name: String,
    },
    SetTaskCap {
        name: String,
        cap: u32,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create a key and print it (last line of stdout): the only time it is shown
    Create {
        /// What the key is for (shown in lists and as the actor of its audit events)
        #[arg(long)]
        name: String,
        /// admin, operator, deployer, reader or register-target
        #[arg(long)]
        scope: String,
        /// How long the key works, e.g. 90d, 12h, 30m (forever when absent)
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// For a register-target key: the one target it may register
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// For a register-target key: an environment its target may claim (repeat for more)
        #[arg(long = "environment", value_name = "NAME")]
        environments: Vec<String>,
        /// For a register-target key: a role its target may claim (repeat for more)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// For a register-target key: keep working after its first registration
        #[arg(long)]
        reusable: bool,
    },
    /// Every key's id, name, scope, prefix and expiry (never the key)
    List,
    /// Revoke a key: every node refuses it within a second
    Revoke {
        /// The key, by name or id (`ApiKeys-3`)
        key: String,
    },
}

#[derive(Subcommand)]
enum ReleaseCmd {
    /// Create a release: the project's process and variables as they are now
    Create {
        /// The project, by name or id
        #[arg(long)]
        project: String,
        /// SemVer, e.g. 1.4.2
        #[arg(long)]
        version: String,
        #[arg(long)]
        notes: Option<String>,
        /// The space, by name or id
        #[arg(long, default_value = "default")]
        space: String,
    },
}

#[derive(Subcommand)]
enum EventsCmd {
    /// Every event from --from to --to (UTC: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ), oldest first,
    /// one JSON object per line on stdout, whether archived or still in the database
    Export {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum PackageCmd {
    /// Upload a package file named PackageId.Version.ext (zip, tar.gz, tgz, tar, nupkg)
    Upload {
        file: std::path::PathBuf,
        /// Overwrite the version if the repository already has it
        #[arg(long)]
        replace: bool,
        /// The space, by name or id
        #[arg(long, default_value = "default")]
        space: String,
    },
    /// Package versions, newest first (every package's latest with --latest)
    List {
        /// Only this package id's versions
        #[arg(long)]
        package_id: Option<String>,
        /// Only ids containing this text
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        latest: bool,
        #[arg(long, default_value = "default")]
        space: String,
    },
    /// Download a version; its SHA-256 is checked before it is put in place
    Download {
        package_id: String,
        version: String,
        /// A file, or a folder for PackageId.Version.ext (default: the current folder)
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long, default_value = "default")]
        space: String,
    },
    /// Delete a version (operator keys)
    Delete {
        package_id: String,
        version: String,
        #[arg(long, default_value = "default")]
        space: String,
    },
}

#[derive(Subcommand)]
enum TaskCmd {
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Show {
        id: String,
    },
    /// Print a task's log
    Log {
        id: String,
        /// Keep printing new lines until the task finishes
        #[arg(long)]
        follow: bool,
    },
    Cancel {
        id: String,
    },
}

/// An agent with `config`: over HTTPS it accepts only the pinned certificate, when there is one
/// (else what a public certificate authority vouches for).
fn agent_for(
    config: ureq::config::Config,
    pin: Option<cuttle_tls::Thumbprint>,
) -> Result<ureq::Agent> {
    Ok(match pin {
        Some(t) => cuttle_tls::pinned_agent(config, cuttle_tls::Pin::Only(t))?,
        None => config.into(),
    })
}

pub(crate) struct Api {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
    /// The certificate the server must present, when pinned.
    pin: Option<cuttle_tls::Thumbprint>,
}

impl Api {
    fn new(base: &str, key: Option<String>, pin: Option<cuttle_tls::Thumbprint>) -> Result<Api> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            key,
            agent: agent_for(config, pin)?,
            pin,
        })
    }

    /// An agent without the API calls' overall deadline: a large package takes what it takes
    /// (the server ends a stalled upload itself).
    pub(crate) fn streaming_agent(&self) -> Result<ureq::Agent> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .build();
        agent_for(config, self.pin)
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let key = self.key.as_deref().unwrap_or_default();
        let resp = match method {
            "GET" => self.agent.get(&url).header("X-Api-Key", key).call(),
            "DELETE" => self.agent.delete(&url).header("X-Api-Key", key).call(),
            "POST" => self
                .agent
                .post(&url)
                .header("X-Api-Key", key)
                .send_json(body.unwrap_or(json!({}))),
            "PATCH" => self
                .agent
                .patch(&url)
                .header("X-Api-Key", key)
                .send_json(body.unwrap_or(json!({}))),
            "PUT" => self
                .agent
                .put(&url)
                .header("X-Api-Key", key)
                .send_json(body.unwrap_or(json!({}))),
            other => bail!("unsupported method {other}"),
        };
        let mut resp = resp.with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().context("read response")?;
        Ok((status, text))
    }

    /// Calls and returns the JSON body; a 4xx/5xx becomes an error with the server's message.
    pub(crate) fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, text) = self.call(method, path, body)?;
        if status >= 400 {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {msg}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("parse response")
    }
}

const KEY_COLS: &[&str] = &[
    "id",
    "name",
    "scope",
    "prefix",
    "target",
    "created_at",
    "expires_at",
    "expired",
];

const PACKAGE_COLS: &[&str] = &[
    "package_id",
    "version",
    "format",
    "size",
    "uploaded_by",
    "uploaded_at",
];

const NODE_COLS: &[&str] = &[
    "name",
    "online",
    "draining",
    "task_cap",
    "running_tasks",
    "roles",
    "last_seen",
];
const TASK_COLS: &[&str] = &[
    "id",
    "kind",
    "state",
    "node",
    "queued_at",
    "completed_at",
    "error",
];

fn run(cli: Cli) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cuttle", &mut script);
        // A reader that stops early (`| head`) is not an error.
        return match std::io::stdout().write_all(&script) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("write the completion script"),
        };
    }
    check_server_url(&cli.server, cli.insecure)?;
    let api = Api::new(&cli.server, cli.api_key, cli.server_thumbprint)?;
    let out = cli.output;
    match cli.command {
        Command::Node { action } => match action {
            NodeCmd::List => show(out, &api.json("GET", "/api/nodes", None)?, NODE_COLS),
            NodeCmd::Drain {
                name,
                wait,
                timeout,
            } => {
                let node = api.json(
                    "PATCH",
                    &format!("/api/nodes/{name}"),
                    Some(json!({"draining": true})),
                )?;
                if wait {
                    let deadline = Instant::now() + Duration::from_secs(timeout);
                    loop {
                        let n = api.json("GET", &format!("/api/nodes/{name}"), None)?;
                        let running = n["running_tasks"].as_u64().unwrap_or(0);
                        if running == 0 {
                            show(out, &n, NODE_COLS);
                            break;
                        }
                        if Instant::now() >= deadline {
                            bail!("node {name} still runs {running} tasks after {timeout} s");
                        }
                        eprint!("\rwaiting for {name}: {running} tasks running   ");
                        let _ = std::io::stderr().flush();
                        std::thread::sleep(Duration::from_secs(1));
                    }
                } else {
                    show(out, &node, NODE_COLS);
                }
            }
            NodeCmd::Undrain { name } => show(
                out,
                &api.json(
                    "PATCH",
                    &format!("/api/nodes/{name}"),
                    Some(json!({"draining": false})),
                )?,
                NODE_COLS,
            ),
            NodeCmd::SetTaskCap { name, cap } => show(
                out,
                &api.json(
                    "PATCH",
                    &format!("/api/nodes/{name}"),
                    Some(json!({"task_cap": cap})),
                )?,
                NODE_COLS,
            ),
            NodeCmd::Delete { name } => {
                api.json("DELETE", &format!("/api/nodes/{name}"), None)?;
                println!(
                    "deleted node {name} (a live node adds itself again at its next heartbeat)"
                );
            }
        },
        Command::Environment { action } => model::environment(&api, out, action)?,
        Command::Project { action } => model::project(&api, out, action)?,
        Command::Variable { action } => model::variable(&api, out, action)?,
        Command::Runbook { action } => resources::runbook(&api, out, action)?,
        Command::Process { action } => process::process(&api, out, action)?,
        Command::Space { action } => resources::space(&api, out, action)?,
        Command::Lifecycle { action } => resources::lifecycle(&api, out, action)?,
        Command::Target { action } => resources::target(&api, out, action)?,
        Command::Completions { .. } => unreachable!("answered before any call"),
        Command::Release {
            action:
                ReleaseCmd::Create {
                    project,
                    version,
                    notes,
                    space,
                },
        } => {
            let r = deploy::create_release(&api, &space, &project, &version, notes)?;
            println!(
                "created release {} of {project} ({})",
                r["version"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
        }
        Command::Deploy {
            project,
            release,
            environment,
            wait,
            space,
        } => {
            let d = deploy::deploy(&api, &space, &project, &release, &environment, wait)?;
            println!(
                "{} {project} {release} to {environment}: {} (task {})",
                if wait { "deployed" } else { "queued" },
                d["id"].as_str().unwrap_or_default(),
                d["task_id"].as_str().unwrap_or_default()
            );
        }
        Command::ApiKey { action } => match action {
            KeyCmd::Create {
                name,
                scope,
                expires_in,
                target,
                environments,
                roles,
                reusable,
            } => {
                let body = json!({
                    "name": name, "scope": scope, "expires_in": expires_in, "target": target,
                    "environments": environments, "roles": roles, "reusable": reusable,
                });
                let created = api.json("POST", "/api/keys", Some(body))?;
                println!(
                    "created {} API key {} {:?}; it is shown only now:",
                    created["scope"].as_str().unwrap_or_default(),
                    created["id"].as_str().unwrap_or_default(),
                    created["name"].as_str().unwrap_or_default()
                );
                println!("{}", created["key"].as_str().unwrap_or_default());
            }
            KeyCmd::List => show(out, &api.json("GET", "/api/keys", None)?, KEY_COLS),
            KeyCmd::Revoke { key } => {
                let found = model::find(&api, "/api/keys", "API key", &key)?;
                let id = found["id"].as_str().unwrap_or_default();
                api.json("DELETE", &format!("/api/keys/{id}"), None)?;
                println!(
                    "revoked API key {id} {:?}",
                    found["name"].as_str().unwrap_or_default()
                );
            }
        },
        Command::Events {
            action: EventsCmd::Export { from, to },
        } => package::export_events(&api, from.as_deref(), to.as_deref())?,
        Command::Package { action } => match action {
            PackageCmd::Upload {
                file,
                replace,
                space,
            } => {
                let p = package::upload(&api, &space, &file, replace)?;
                if out == Output::Json {
                    show(out, &p, PACKAGE_COLS);
                } else {
                    println!(
                        "uploaded {} {} ({} bytes, SHA-256 {})",
                        p["package_id"].as_str().unwrap_or_default(),
                        p["version"].as_str().unwrap_or_default(),
                        p["size"],
                        p["sha256"].as_str().unwrap_or_default()
                    );
                }
            }
            PackageCmd::List {
                package_id,
                filter,
                latest,
                space,
            } => {
                let mut path = format!("/api/spaces/{space}/packages?limit=1000&latest={latest}");
                if let Some(id) = package_id {
                    path.push_str(&format!("&package_id={id}"));
                }
                if let Some(f) = filter {
                    path.push_str(&format!("&filter={f}"));
                }
                show(out, &api.json("GET", &path, None)?, PACKAGE_COLS)
            }
            PackageCmd::Download {
                package_id,
                version,
                out: dest,
                space,
            } => {
                let path = package::download(&api, &space, &package_id, &version, dest)?;
                println!("downloaded {package_id} {version} to {}", path.display());
            }
            PackageCmd::Delete {
                package_id,
                version,
                space,
            } => {
                let v = version.replace('+', "%2B");
                api.json(
                    "DELETE",
                    &format!("/api/spaces/{space}/packages/{package_id}/{v}"),
                    None,
                )?;
                println!("deleted {package_id} {version}");
            }
        },
        Command::Task { action } => match action {
            TaskCmd::List { state, limit } => {
                let mut path = format!("/api/tasks?limit={limit}");
                if let Some(st) = state {
                    path.push_str(&format!("&state={st}"));
                }
                show(out, &api.json("GET", &path, None)?, TASK_COLS)
            }
            TaskCmd::Show { id } => show(
                out,
                &api.json("GET", &format!("/api/tasks/{id}"), None)?,
                TASK_COLS,
            ),
            TaskCmd::Log { id, follow } => follow_log(&api, &id, follow)?,
            TaskCmd::Cancel { id } => show(
                out,
                &api.json("POST", &format!("/api/tasks/{id}/cancel"), None)?,
                TASK_COLS,
            ),
        },
        Command::Capacity {
            projects,
            minutes,
            window,
            nodes,
        } => {
            let Some(p) = cuttle_core::plan_capacity(projects, minutes, window, nodes) else {
                bail!("--projects, --minutes, --window and --nodes must all be positive");
            };
            let v = json!({
                "minimum_total_cap": p.minimum_total_cap,
                "recommended_total_cap": p.recommended_total_cap,
                "nodes": nodes,
                "per_node_cap": p.per_node_cap,
            });
            show(
                out,
                &v,
                &[
                    "minimum_total_cap",
                    "recommended_total_cap",
                    "nodes",
                    "per_node_cap",
                ],
            );
        }
    }
    Ok(())
}

/// Prints the log; with `follow`, keeps printing what is appended until the task finishes.
pub(crate) fn follow_log(api: &Api, id: &str, follow: bool) -> Result<()> {
    let mut printed = 0usize;
    loop {
        let finished = if follow {
            let t = api.json("GET", &format!("/api/tasks/{id}"), None)?;
            matches!(
                t["state"].as_str(),
                Some("Success" | "Failed" | "Canceled" | "TimedOut")
            )
        } else {
            true
        };
        let (status, text) = api.call("GET", &format!("/api/tasks/{id}/log"), None)?;
        if status >= 400 {
            bail!("{status}: {text}");
        }
        if text.len() > printed {
            print!("{}", &text[printed..]);
            let _ = std::io::stdout().flush();
            printed = text.len();
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}");
            eprintln!("cuttle: {line}");
            if let Some(h) = hint(&line) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to try after an error, for the ones a person meets first.
fn hint(error: &str) -> Option<&'static str> {
    let refused = [
        "Connection refused",
        "connection refused",
        "failed to lookup address",
    ];
    if refused.iter().any(|r| error.contains(r)) {
        Some("is a node running there? CUTTLE_SERVER (or --server) names one, http://127.0.0.1:8080 by default")
    } else if error.contains("401: ") {
        Some("set CUTTLE_API_KEY (or --api-key) to a working key of this cluster")
    } else if error.contains("403: ") {
        Some("an admin can make a key with the scope it names: cuttle api-key create --name … --scope …")
    } else if error.contains("409: ") && error.contains("changed since it was read") {
        Some("someone changed it meanwhile: read it again and reapply your change")
    } else {
        None
    }
}

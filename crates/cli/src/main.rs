//! `cuttle`: the operator CLI over the REST API.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports here

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cuttle_core::check_server_url;

mod cluster;
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
    /// The space, by name or id
    #[arg(long, env = "CUTTLE_SPACE", default_value = "default", global = true)]
    space: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Nodes of the cluster
    Node {
        #[command(subcommand)]
        action: cluster::NodeCmd,
    },
    /// Tasks in the queue
    Task {
        #[command(subcommand)]
        action: cluster::TaskCmd,
    },
    /// Environments: list, create, update (rename, describe), reorder, delete
    Environment {
        #[command(subcommand)]
        action: model::EnvironmentCmd,
    },
    /// Projects: list, create, update (settings), delete
    Project {
        #[command(subcommand)]
        action: model::ProjectCmd,
    },
    /// A project's variables: list, set (sensitive values from standard input), delete
    Variable {
        #[command(subcommand)]
        action: model::VariableCmd,
    },
    /// Runbooks: list, create, update, publish, delete, run
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
    /// Lifecycles: list, create and update (phases in order), delete
    Lifecycle {
        #[command(subcommand)]
        action: resources::LifecycleCmd,
    },
    /// Deployment targets: list, show, update (environments, roles), delete
    Target {
        #[command(subcommand)]
        action: resources::TargetCmd,
    },
    /// Print the manual page (roff: `cuttle man | man -l -`), or write one per command to --dir
    Man {
        /// Write `cuttle.1` and a page per subcommand (`cuttle-process-edit.1`, …) here
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Print a shell's completion script: `cuttle completions bash > /etc/bash_completion.d/cuttle`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Releases of a project: create, list
    Release {
        #[command(subcommand)]
        action: ReleaseCmd,
    },
    /// Deployments: list (newest first), show
    Deployment {
        #[command(subcommand)]
        action: deploy::DeploymentCmd,
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
        /// Only this target, by name (repeat for more; none: every target the steps select)
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// Skip this step, by name (repeat for more)
        #[arg(long = "skip-step", value_name = "STEP")]
        skip_steps: Vec<String>,
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
        action: cluster::KeyCmd,
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
    },
    /// A project's releases, newest version first
    List {
        /// The project, by name or id
        #[arg(long)]
        project: String,
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
    },
    /// Download a version; its SHA-256 is checked before it is put in place
    Download {
        package_id: String,
        version: String,
        /// A file, or a folder for PackageId.Version.ext (default: the current folder)
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Delete a version (operator keys)
    Delete { package_id: String, version: String },
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

const PACKAGE_COLS: &[&str] = &[
    "package_id",
    "version",
    "format",
    "size",
    "uploaded_by",
    "uploaded_at",
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
    if let Command::Man { dir } = &cli.command {
        use clap::CommandFactory;
        let command = versioned(Cli::command());
        return match dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
                clap_mangen::generate_to(command, d)
                    .with_context(|| format!("write the pages to {}", d.display()))?;
                println!("wrote the manual pages to {}", d.display());
                Ok(())
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(command).render(&mut page)?;
                match std::io::stdout().write_all(&page) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other.context("write the page"),
                }
            }
        };
    }
    check_server_url(&cli.server, cli.insecure)?;
    let api = Api::new(&cli.server, cli.api_key, cli.server_thumbprint)?;
    let out = cli.output;
    let space = cli.space;
    match cli.command {
        Command::Node { action } => cluster::node(&api, out, action)?,
        Command::Environment { action } => model::environment(&api, out, &space, action)?,
        Command::Project { action } => model::project(&api, out, &space, action)?,
        Command::Variable { action } => model::variable(&api, out, &space, action)?,
        Command::Runbook { action } => resources::runbook(&api, out, &space, action)?,
        Command::Process { action } => process::process(&api, out, &space, action)?,
        Command::Space { action } => resources::space(&api, out, action)?,
        Command::Lifecycle { action } => resources::lifecycle(&api, out, &space, action)?,
        Command::Target { action } => resources::target(&api, out, action)?,
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("answered before any call")
        }
        Command::Release { action } => match action {
            ReleaseCmd::Create {
                project,
                version,
                notes,
            } => {
                let r = deploy::create_release(&api, &space, &project, &version, notes)?;
                output::done(
                    out,
                    &r,
                    format_args!(
                        "created release {} of {project} ({})",
                        r["version"].as_str().unwrap_or_default(),
                        r["id"].as_str().unwrap_or_default()
                    ),
                );
            }
            ReleaseCmd::List { project } => {
                let p = model::find(
                    &api,
                    &format!("/api/spaces/{space}/projects"),
                    "project",
                    &project,
                )?;
                let path = format!(
                    "/api/spaces/{space}/projects/{}/releases",
                    p["id"].as_str().unwrap_or_default()
                );
                show(
                    out,
                    &api.json("GET", &path, None)?,
                    &["version", "id", "created_by", "created_at", "notes"],
                );
            }
        },
        Command::Deployment { action } => deploy::deployment(&api, out, &space, action)?,
        Command::Deploy {
            project,
            release,
            environment,
            wait,
            targets,
            skip_steps,
        } => {
            let pick = deploy::Pick {
                targets,
                skip_steps,
            };
            let d = deploy::deploy(&api, &space, (&project, &release, &environment), pick, wait)?;
            output::done(
                out,
                &d,
                format_args!(
                    "{} {project} {release} to {environment}: {} (task {})",
                    if wait { "deployed" } else { "queued" },
                    d["id"].as_str().unwrap_or_default(),
                    d["task_id"].as_str().unwrap_or_default()
                ),
            );
        }
        Command::ApiKey { action } => cluster::api_key(&api, out, action)?,
        Command::Events {
            action: EventsCmd::Export { from, to },
        } => package::export_events(&api, from.as_deref(), to.as_deref())?,
        Command::Package { action } => match action {
            PackageCmd::Upload { file, replace } => {
                let p = package::upload(&api, &space, &file, replace)?;
                output::done(
                    out,
                    &p,
                    format_args!(
                        "uploaded {} {} ({} bytes, SHA-256 {})",
                        p["package_id"].as_str().unwrap_or_default(),
                        p["version"].as_str().unwrap_or_default(),
                        p["size"],
                        p["sha256"].as_str().unwrap_or_default()
                    ),
                );
            }
            PackageCmd::List {
                package_id,
                filter,
                latest,
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
            } => {
                let path = package::download(&api, &space, &package_id, &version, dest)?;
                output::done(
                    out,
                    &json!({"package_id": package_id, "version": version, "path": path}),
                    format_args!("downloaded {package_id} {version} to {}", path.display()),
                );
            }
            PackageCmd::Delete {
                package_id,
                version,
            } => {
                let v = version.replace('+', "%2B");
                api.json(
                    "DELETE",
                    &format!("/api/spaces/{space}/packages/{package_id}/{v}"),
                    None,
                )?;
                output::deleted(
                    out,
                    &format!("{package_id}.{version}"),
                    format_args!("deleted {package_id} {version}"),
                );
            }
        },
        Command::Task { action } => cluster::task(&api, out, action)?,
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

/// Every subcommand with the program's version, as its manual page's title shows it (no
/// `--version` flag of its own: `release create --version` is the release's).
fn versioned(command: clap::Command) -> clap::Command {
    command.mut_subcommands(|sub| {
        versioned(
            sub.version(env!("CARGO_PKG_VERSION"))
                .disable_version_flag(true),
        )
    })
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

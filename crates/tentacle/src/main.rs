//! `cuttle-tentacle`: the agent on a deployment target. It trusts exactly one certificate, the
//! cluster's, and the cluster trusts exactly its own.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports here

mod agent;
mod beneath;
mod comms;
mod extract;
mod home;
mod reap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cuttle_tls::Thumbprint;
use serde_json::{json, Value};

use crate::agent::Agent;
use crate::home::{Config, Home};

const DEFAULT_LISTEN: &str = "0.0.0.0:10933";

#[derive(Parser)]
#[command(
    name = "cuttle-tentacle",
    version,
    about = "The Cuttle agent on a deployment target"
)]
struct Cli {
    /// The tentacle's home: certificate, key, configuration (default ~/.cuttle-tentacle)
    #[arg(long, env = "CUTTLE_TENTACLE_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CommsArg {
    Polling,
    Listening,
}

#[derive(Subcommand)]
enum Command {
    /// Create this tentacle's self-signed certificate and print its thumbprint
    NewCertificate {
        /// Replace an existing certificate (the cluster must then trust the new thumbprint)
        #[arg(long)]
        force: bool,
    },
    /// Print this tentacle's certificate thumbprint
    ShowThumbprint,
    /// Register this machine as a deployment target and remember how to reach the cluster
    Register(Box<Registration>),
    /// Add one more gateway (HOST:PORT) for a polling tentacle to keep a session with
    PollServer {
        #[arg(long)]
        server: String,
    },
    /// Run the agent in the foreground
    Run,
}

fn main() -> ExitCode {
    // Each script runs beneath `cuttle-tentacle __reap`, which ends everything it started.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == reap::ARG) {
        let argv: Vec<_> = args.collect();
        std::process::exit(reap::main(&argv));
    }
    let cli = Cli::parse();
    let export = cuttle_telemetry::trace::ExportSettings::from_env();
    let logs = match LogSettings::from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cuttle-tentacle: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli, logs, export) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cuttle-tentacle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `CUTTLE_LOG` (a filter, `info` by default) and `CUTTLE_LOG_FORMAT` (`text` or `json`), as
/// the server reads them.
struct LogSettings {
    filter: String,
    format: cuttle_telemetry::logging::Format,
}

impl LogSettings {
    fn from_env() -> std::result::Result<LogSettings, String> {
        use cuttle_telemetry::logging::{check_filter, Format};
        let filter = std::env::var("CUTTLE_LOG").unwrap_or_else(|_| "info".to_owned());
        if let Some(e) = check_filter(&filter) {
            return Err(format!("CUTTLE_LOG is not a log filter ({e})"));
        }
        let format = match std::env::var("CUTTLE_LOG_FORMAT") {
            Err(_) => Format::Text,
            Ok(v) => Format::parse(&v)
                .ok_or_else(|| format!("CUTTLE_LOG_FORMAT must be text or json, got {v:?}"))?,
        };
        Ok(LogSettings { filter, format })
    }

    fn init(&self, tracing: Option<&cuttle_telemetry::trace::Tracing>) {
        cuttle_telemetry::logging::init(&self.filter, &[], self.format, tracing);
    }
}

/// The agent's traces, as the `OTEL_*` variables say: service `cuttle-tentacle`, instance the
/// target's name.
fn start_tracing(
    home: &Home,
    export: &cuttle_telemetry::trace::ExportSettings,
) -> Result<cuttle_telemetry::trace::Tracing> {
    use cuttle_telemetry::trace::{destination, Service, Tracing};
    let name = home.load().map(|c| c.name).unwrap_or_default();
    let service = Service {
        name: "cuttle-tentacle",
        instance: name,
        version: env!("CARGO_PKG_VERSION"),
    };
    let destination = destination().map_err(anyhow::Error::msg)?;
    Tracing::start(&service, destination, export).map_err(anyhow::Error::msg)
}

fn run(cli: Cli, logs: LogSettings, export: cuttle_telemetry::trace::ExportSettings) -> Result<()> {
    let dir = match cli.home {
        Some(d) => d,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set; give --home")?)
            .join(".cuttle-tentacle"),
    };
    let home = Home::new(dir);
    if !matches!(cli.command, Command::Run) {
        logs.init(None);
    }
    match cli.command {
        Command::NewCertificate { force } => {
            let id = home.new_certificate(force)?;
            println!("{}", id.thumbprint());
            Ok(())
        }
        Command::ShowThumbprint => {
            println!("{}", home.identity()?.thumbprint());
            Ok(())
        }
        Command::Register(r) => register(&home, *r),
        Command::PollServer { server } => {
            let mut config = home.load()?;
            if config.comms != "polling" {
                bail!(
                    "this tentacle is registered as {}; poll-server is for polling tentacles",
                    config.comms
                );
            }
            if !config.gateways.contains(&server) {
                config.gateways.push(server);
            }
            home.save(&config)?;
            println!("polling {}", config.gateways.join(", "));
            Ok(())
        }
        Command::Run => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start the runtime")?;
            // The exporters run on the runtime: made inside it.
            let tracing = runtime.block_on(async { start_tracing(&home, &export) })?;
            logs.init(Some(&tracing));
            let outcome = runtime.block_on(run_agent(&home));
            runtime.block_on(async {
                tokio::task::spawn_blocking(move || drop(tracing))
                    .await
                    .ok()
            });
            outcome
        }
    }
}

#[derive(clap::Args)]
struct Registration {
    /// Base URL of any node (or the load balancer)
    #[arg(long)]
    server: String,
    #[arg(long, env = "CUTTLE_API_KEY", hide_env_values = true)]
    api_key: String,
    #[arg(long)]
    name: String,
    #[arg(long = "environment")]
    environments: Vec<String>,
    #[arg(long = "role")]
    roles: Vec<String>,
    #[arg(long, value_enum)]
    comms: CommsArg,
    /// The name workers use to reach a listening tentacle (default: this host's name)
    #[arg(long)]
    public_hostname: Option<String>,
    /// Where a listening tentacle listens
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The cluster's thumbprint (any node logs it at start): over HTTPS the server must present
    /// this certificate (a cluster serving its own, CUTTLE_HTTP_TLS=cluster) or one a public
    /// certificate authority vouches for, and it must name this cluster — checked before the
    /// API key is sent
    #[arg(long)]
    cluster_thumbprint: Option<Thumbprint>,
    /// The certificate the server must present over HTTPS, exactly (when it is not the
    /// cluster's: a balancer's own self-signed one, say)
    #[arg(long)]
    server_thumbprint: Option<Thumbprint>,
    /// Allow plain http:// to another host (the key crosses the network in clear text)
    #[arg(long)]
    insecure: bool,
    /// A --role no step, target or key uses yet is meant (otherwise it is refused as a likely
    /// typo)
    #[arg(long)]
    new_role: bool,
}

fn register(home: &Home, r: Registration) -> Result<()> {
    cuttle_core::check_server_url(&r.server, r.insecure)?;
    let identity = home.identity()?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    // The server is checked in the TLS handshake, by the certificate it proves it holds — not
    // by what it says.
    let agent: ureq::Agent = match (r.server_thumbprint, r.cluster_thumbprint) {
        (Some(t), _) => cuttle_tls::pinned_agent(config, cuttle_tls::Pin::Only(t))?,
        (None, Some(t)) => cuttle_tls::pinned_agent(config, cuttle_tls::Pin::OrPublicCa(t))?,
        (None, None) => config.into(),
    };
    let base = r.server.trim_end_matches('/');
    // Asked without the key: a server that is not the pinned cluster never sees it.
    let resp = agent
        .get(format!("{base}/api/cluster/identity"))
        .call()
        .map_err(|e| {
            let hint = if base.starts_with("https://") && r.cluster_thumbprint.is_none() {
                " (a cluster serving its own certificate needs --cluster-thumbprint: any \
                 node logs it at start, `cluster certificate thumbprint=…`)"
            } else {
                ""
            };
            anyhow::anyhow!("reach the server: {e}{hint}")
        })?;
    let cluster = expect_status(resp, 200, "the server's cluster identity")?;
    let thumbprint: Thumbprint = cluster["thumbprint"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .context("the server's cluster thumbprint")?;
    match &r.cluster_thumbprint {
        Some(pinned) if *pinned != thumbprint => bail!(
            "the server presents cluster {thumbprint}, not the pinned {pinned}: refusing to \
             register (the API key was not sent)"
        ),
        Some(_) => {}
        None => {
            #[allow(clippy::print_stderr)] // the operator must see what is about to be trusted
            {
                eprintln!(
                    "trusting cluster {thumbprint} as the server presents it; pin it with \
                     --cluster-thumbprint {thumbprint} (check it against a node's log)"
                );
            }
        }
    }
    let (comms, endpoint) = match r.comms {
        CommsArg::Polling => ("polling", None),
        CommsArg::Listening => {
            let host = match r.public_hostname {
                Some(h) => h,
                None => hostname()?,
            };
            ("listening", Some(format!("{host}:{}", r.listen.port())))
        }
    };
    let body = json!({
        "name": r.name, "environments": r.environments, "roles": r.roles, "comms": comms,
        "thumbprint": identity.thumbprint().to_string(), "endpoint": endpoint,
        "new_roles": r.new_role,
    });
    // The gateways are shown to a caller with a key only: asked now that the server is known
    // to be the cluster (the key may be used up by the registration).
    let resp = agent
        .get(format!("{base}/api/cluster/identity"))
        .header("X-Api-Key", &r.api_key)
        .call()
        .context("reach the server")?;
    let cluster = expect_status(resp, 200, "the cluster's gateways")?;
    let resp = agent
        .post(format!("{base}/api/targets"))
        .header("X-Api-Key", &r.api_key)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .context("reach the server")?;
    if resp.status().as_u16() == 409 {
        let status = expect_status(resp, 201, "registration").unwrap_err();
        bail!(
            "{status:#}\nTo register this machine again under that name, an operator first removes \
             the old registration (`DELETE /api/targets/ID`; `GET /api/targets` lists the ids), \
             then this command is run again"
        );
    }
    let target = expect_status(resp, 201, "registration")?;
    let gateways = cluster["gateways"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let config = Config {
        name: r.name,
        comms: comms.to_owned(),
        server: base.to_owned(),
        target_id: target["id"].as_str().unwrap_or_default().to_owned(),
        cluster_thumbprint: thumbprint.to_string(),
        cluster_thumbprints: Vec::new(),
        gateways: if comms == "polling" {
            gateways
        } else {
            Vec::new()
        },
        listen: (comms == "listening").then(|| r.listen.to_string()),
    };
    home.save(&config)?;
    println!(
        "registered as {} ({comms}); cluster thumbprint {thumbprint}",
        config.target_id
    );
    Ok(())
}

/// The JSON body of an answer with status `want`; otherwise an error with the server's message.
fn expect_status(
    mut resp: ureq::http::Response<ureq::Body>,
    want: u16,
    what: &str,
) -> Result<Value> {
    let status = resp.status().as_u16();
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if status != want {
        bail!(
            "{what}: the server answered {status}: {}",
            body["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(body)
}

fn hostname() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        bail!("cannot read this host's name; give --public-hostname");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

async fn run_agent(home: &Home) -> Result<()> {
    let open_files = cuttle_proto::admission::raise_open_file_limit();
    tracing::debug!(open_files, "open-file limit");
    let config = home.load()?;
    let identity = home.identity()?;
    let cluster = cuttle_tls::Trusted::new(config.trusted_clusters()?);
    let work_root = home.dir().join("work");
    tokio::fs::create_dir_all(&work_root)
        .await
        .with_context(|| format!("create {}", work_root.display()))?;
    let files_root = home.dir().join("files");
    tokio::fs::create_dir_all(&files_root)
        .await
        .with_context(|| format!("create {}", files_root.display()))?;
    let agent = Agent {
        work_root,
        files_root,
        cluster: cluster.clone(),
        home: home.dir().to_owned(),
    };
    tracing::info!(target = %config.target_id, thumbprint = %identity.thumbprint(), comms = %config.comms, "tentacle starting");
    match config.comms.as_str() {
        "polling" => {
            if config.gateways.is_empty() {
                bail!("no gateway to poll: register again, or add one with `cuttle-tentacle poll-server`");
            }
            let mut sessions = tokio::task::JoinSet::new();
            for gateway in config.gateways {
                sessions.spawn(comms::poll(
                    gateway,
                    identity.clone(),
                    cluster.clone(),
                    agent.clone(),
                ));
            }
            tokio::select! {
                _ = sessions.join_next() => bail!("a gateway session ended unexpectedly"),
                r = tokio::signal::ctrl_c() => r.context("wait for a signal"),
            }
        }
        "listening" => {
            let addr: SocketAddr = config
                .listen
                .as_deref()
                .unwrap_or(DEFAULT_LISTEN)
                .parse()
                .context("listen address in the configuration")?;
            tokio::select! {
                r = comms::listen(addr, identity, cluster, agent) => r,
                r = tokio::signal::ctrl_c() => r.context("wait for a signal"),
            }
        }
        other => bail!("unknown comms {other:?} in the configuration"),
    }
}

//! `cuttle-server`: a Cuttle node, and the commands that prepare its database.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program reports here

mod admin;
mod advertise;
mod backup;
mod cluster_cert;
mod config;
mod data_keys;
mod harden;
mod node;
mod node_name;
mod rotate;
mod startup;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{Config, RawConfig};

/// A Cuttle node: hosts any subset of the roles api, scheduler, worker and gateway.
#[derive(Parser)]
#[command(name = "cuttle-server", version)]
struct Cli {
    /// TOML file with settings (environment and flags override it)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print the effective settings as TOML and exit (secrets redacted)
    #[arg(long, global = true)]
    dump_config: bool,
    #[command(flatten)]
    settings: RawConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node
    Run,
    /// Shared-store settings
    Path {
        /// Store DIR in the database as the shared-store root every node uses
        #[arg(long, value_name = "DIR")]
        cluster_shared: PathBuf,
    },
    /// API keys
    ApiKey {
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// People who sign in to the web UI with a name and password
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// The cluster certificate: rotate it without losing a tentacle
    ClusterCertificate {
        #[command(subcommand)]
        action: ClusterCertAction,
    },
    /// The master key
    MasterKey {
        #[command(subcommand)]
        action: MasterKeyAction,
    },
    /// The key sensitive values are sealed with (under the master key)
    VariableKey {
        #[command(subcommand)]
        action: VariableKeyAction,
    },
    /// The secret API keys and web sessions are hashed with (under the master key)
    ApiKeySecret {
        #[command(subcommand)]
        action: ApiKeySecretAction,
    },
    /// Back up the database and the shared store into a new directory, while the cluster runs
    Backup {
        /// The directory to create (written as DIR.partial, renamed when whole)
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into an empty database and an empty shared store
    Restore {
        /// A directory `backup` made
        #[arg(long)]
        from: PathBuf,
    },
    /// Apply pending database migrations, then exit
    UpgradeDatabase,
    /// Run the start-up checks (database, schema, master key, shared store) and exit
    Check,
}

#[derive(Subcommand)]
enum ApiKeyAction {
    /// Create an API key and print it (last line of stdout): the only time it is shown
    Create {
        /// What the key is for (shown in lists and as the actor of its audit events)
        #[arg(long)]
        name: String,
        /// admin, operator, deployer, reader or register-target
        #[arg(long, default_value = "admin")]
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
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create a user of the web UI (the password: typed twice, or --password-stdin)
    Create {
        /// The name they sign in with (letters, digits, '.', '_', '-', '@')
        #[arg(long)]
        username: String,
        /// admin, operator, deployer or reader
        #[arg(long, default_value = "admin")]
        scope: String,
        /// Read the password from one line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give a user a new password; their earlier sessions end
    SetPassword {
        #[arg(long)]
        username: String,
        /// Read the password from one line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user; their sessions end
    Delete {
        #[arg(long)]
        username: String,
    },
    /// List the users and their scopes
    List,
}

#[derive(Subcommand)]
enum ClusterCertAction {
    /// The current, staged and retired certificates, and what the next step waits for
    Status,
    /// Make the next certificate: nodes accept it within seconds, tentacles trust it from
    /// their next health check
    Stage,
    /// Make the staged certificate current (nodes present it from their next restart); refused
    /// while a target does not trust it yet
    Activate {
        /// Activate even so: targets that do not trust it are cut off until registered again
        #[arg(long)]
        force: bool,
    },
    /// Stop accepting the retired certificate; refused while an online node still presents it
    Finish {
        /// Finish even so: such nodes are cut off from the others and from tentacles
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum MasterKeyAction {
    /// Re-encrypt every secret in the database under a new key (running nodes keep working;
    /// restart each with the new key)
    Rotate {
        /// Read the new key (base64 of 16 or 32 random bytes) from this file
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "generate",
            required_unless_present = "generate"
        )]
        new_key_file: Option<PathBuf>,
        /// Generate the new key and write it to this new file (mode 0600)
        #[arg(long, value_name = "FILE")]
        generate: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VariableKeyAction {
    /// Replace the variable key: every sensitive value is re-sealed under a new one and the old
    /// one forgotten, while the cluster runs
    Rotate,
}

#[derive(Subcommand)]
enum ApiKeySecretAction {
    /// Replace the secret: every key keeps working and is re-hashed at its next use; web
    /// sessions end
    Rotate,
    /// The secrets, and the keys `finish` waits for
    Status,
    /// Forget the previous secret; refused while a working key is not re-hashed yet
    Finish {
        /// Finish even so: keys not re-hashed yet are revoked
        #[arg(long)]
        force: bool,
    },
}

fn load(cli: &Cli) -> Result<Config> {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CUTTLE_"))
        .collect();
    let mut raw = RawConfig::default();
    if let Some(path) = &cli.config {
        raw = raw.overlay(RawConfig::from_file(path)?);
    }
    raw = raw
        .overlay(RawConfig::from_env(&env)?)
        .overlay(cli.settings.clone());
    if cli.dump_config {
        let mut shown = raw.clone();
        if shown.master_key.is_some() {
            shown.master_key = Some("<redacted>".into());
        }
        if shown.admin_api_key.is_some() {
            shown.admin_api_key = Some("<redacted>".into());
        }
        if let Some(url) = &shown.database_url {
            shown.database_url = Some(cuttle_storage::redact_database_url(url));
        }
        print!("{}", toml::to_string(&shown).context("render settings")?);
        std::process::exit(0);
    }
    let mut cfg = Config::validate(raw)?;
    cfg.config_file = cli
        .config
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    Ok(cfg)
}

fn init_logging(cfg: &Config, tracing: Option<&cuttle_telemetry::trace::Tracing>) {
    use cuttle_telemetry::logging::{init, Format};
    // tiberius logs every error the server sends at ERROR, including those Cuttle handles (a
    // deadlock victim run again, a lost race on a unique key); Cuttle logs the ones it cannot
    // handle, with context. Shown again when the filter names tiberius.
    let quiet = ["tiberius::tds::stream::token=off"];
    let format = if cfg.log_json {
        Format::Json
    } else {
        Format::Text
    };
    init(&cfg.log, &quiet, format, tracing);
}

/// The node's traces: exported where the `OTEL_*` variables say (`run` only; the one-shot
/// commands trace nothing), trace ids and propagation always.
fn start_tracing(
    cli: &Cli,
    cfg: &Config,
    export: &cuttle_telemetry::trace::ExportSettings,
) -> Result<cuttle_telemetry::trace::Tracing> {
    use cuttle_telemetry::trace::{destination, Destination, Service, Tracing};
    let destination = match cli.command {
        Command::Run => destination().map_err(anyhow::Error::msg)?,
        _ => Destination::None,
    };
    let service = Service {
        name: "cuttle-server",
        instance: cfg.node_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
    };
    Tracing::start(&service, destination, export).map_err(anyhow::Error::msg)
}

async fn execute(cli: Cli, cfg: Config) -> Result<()> {
    match cli.command {
        Command::Run => node::run(cfg).await,
        Command::Path { cluster_shared } => {
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let shared = startup::set_shared_path(&store, &cluster_shared).await?;
            println!(
                "shared store for the cluster is now {}",
                shared.root().display()
            );
            Ok(())
        }
        Command::ApiKey {
            action:
                ApiKeyAction::Create {
                    name,
                    scope,
                    expires_in,
                    target,
                    environments,
                    roles,
                    reusable,
                },
        } => {
            let req = cuttle_core::ApiKeyRequest {
                name,
                scope: scope.parse()?,
                expires_in,
                target,
                environments,
                roles,
                reusable,
            };
            req.validate()?;
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let master_key = startup::master_key(&cfg, &store).await?;
            let hasher = store.api_key_hasher(&master_key).await?;
            let key = startup::create_api_key(&store, &hasher, &req).await?;
            println!(
                "created {} API key {:?}; it is shown only now:",
                req.scope, req.name
            );
            println!("{key}");
            Ok(())
        }
        Command::Admin { action } => {
            // The password is read before the database is reached: a typo costs no connection.
            let password = match &action {
                AdminAction::Create { password_stdin, .. }
                | AdminAction::SetPassword { password_stdin, .. } => {
                    Some(admin::read_password(*password_stdin)?)
                }
                _ => None,
            };
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            match action {
                AdminAction::Create {
                    username, scope, ..
                } => {
                    let password = password.unwrap_or_default();
                    admin::create(&store, &username, scope.parse()?, &password).await
                }
                AdminAction::SetPassword { username, .. } => {
                    let password = password.unwrap_or_default();
                    admin::set_password(&store, &username, &password).await
                }
                AdminAction::Delete { username } => admin::delete(&store, &username).await,
                AdminAction::List => admin::list(&store).await,
            }
        }
        Command::ClusterCertificate { action } => {
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let key = startup::master_key(&cfg, &store).await?;
            let offline_after = cfg.offline_after;
            match action {
                ClusterCertAction::Status => {
                    print!(
                        "{}",
                        cluster_cert::status(&store, &key, offline_after).await?
                    );
                }
                ClusterCertAction::Stage => {
                    let t = cluster_cert::stage(&store, &key).await?;
                    println!(
                        "staged cluster certificate {t}: nodes accept it within seconds; each \
                         tentacle trusts it from its next health check. Then run `activate`."
                    );
                }
                ClusterCertAction::Activate { force } => {
                    let t = cluster_cert::activate(&store, &key, offline_after, force).await?;
                    println!(
                        "cluster certificate {t} is now current: restart the nodes one at a time \
                         (each presents it from its restart), then run `finish`."
                    );
                }
                ClusterCertAction::Finish { force } => {
                    let t = cluster_cert::finish(&store, offline_after, force).await?;
                    println!(
                        "retired cluster certificate {t} is no longer accepted; tentacles stop \
                         trusting it at their next health check."
                    );
                }
            }
            Ok(())
        }
        Command::MasterKey {
            action:
                MasterKeyAction::Rotate {
                    new_key_file,
                    generate,
                },
        } => {
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let old = startup::master_key(&cfg, &store).await?;
            let (new, file) = match (&new_key_file, &generate) {
                (Some(f), _) => (rotate::NewKey::File(f), f),
                (None, Some(f)) => (rotate::NewKey::Generate(f), f),
                (None, None) => anyhow::bail!("give --new-key-file FILE or --generate FILE"),
            };
            let n = rotate::rotate_master_key(&store, &old, new).await?;
            println!(
                "re-encrypted {n} secret(s) under the new master key in {}; running nodes keep \
                 working: set CUTTLE_MASTER_KEY (or master.key) to it on every node and restart \
                 them one at a time. A node started with the old key now refuses to start.",
                file.display()
            );
            Ok(())
        }
        Command::VariableKey {
            action: VariableKeyAction::Rotate,
        } => {
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let key = startup::master_key(&cfg, &store).await?;
            let done = data_keys::rotate_variable_key(&store, &key, cfg.offline_after, |line| {
                println!("{line}")
            })
            .await?;
            println!(
                "variable key rotated: {} sensitive value(s) re-sealed in {} document(s) and {} \
                 release(s)",
                done.values, done.documents, done.releases
            );
            Ok(())
        }
        Command::ApiKeySecret { action } => {
            let store = startup::connect(&cfg).await?;
            startup::prepare_schema(&store).await?;
            let key = startup::master_key(&cfg, &store).await?;
            match action {
                ApiKeySecretAction::Rotate => {
                    let id =
                        data_keys::rotate_api_key_secret(&store, &key, cfg.offline_after).await?;
                    println!(
                        "API-key secret {id} is current: every node takes it up within seconds; \
                         each key is re-hashed at its next use (`status` lists those waiting), \
                         web sessions end. Then run `finish`."
                    );
                }
                ApiKeySecretAction::Status => {
                    print!("{}", data_keys::api_key_secret_status(&store, &key).await?);
                }
                ApiKeySecretAction::Finish { force } => {
                    let revoked =
                        data_keys::finish_api_key_secret(&store, &key, cfg.offline_after, force)
                            .await?;
                    println!(
                        "the previous API-key secret is forgotten ({revoked} key(s) not re-hashed \
                         were revoked)"
                    );
                }
            }
            Ok(())
        }
        Command::Backup { to } => backup::backup(&cfg, &to).await,
        Command::Restore { from } => backup::restore(&cfg, &from).await,
        Command::UpgradeDatabase => {
            let store = startup::connect(&cfg).await?;
            let report = store.migrate().await?;
            if report.applied_any() {
                println!(
                    "database schema upgraded from version {} to {}",
                    report.from, report.to
                );
            } else {
                println!("database schema is current (version {})", report.to);
            }
            Ok(())
        }
        Command::Check => {
            let store = startup::connect(&cfg).await?;
            println!("ok: database {} reachable", store.target());
            store.check_schema().await?;
            println!("ok: schema version {}", store.schema_version().await?);
            startup::master_key(&cfg, &store).await?;
            println!("ok: master key matches the database");
            let shared = startup::shared_store(&cfg, &store).await?;
            println!("ok: shared store {} is writable", shared.root().display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Everything the node creates — its data directory, the SQLite database, the master key,
    // task logs, artifacts and packages in the shared store — is its own user's alone. Set
    // before any thread starts; scripts get the usual 022 back (task-worker's exec).
    // SAFETY: umask has no preconditions; no other thread exists yet.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cuttle-server: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The secrets are in `cfg` now, the collector's credentials in `export`: wiped from the
    // environment before any thread starts.
    let export = cuttle_telemetry::trace::ExportSettings::from_env();
    harden::harden_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cuttle-server: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporters run on the runtime: made inside it.
    let tracing = match runtime.block_on(async { start_tracing(&cli, &cfg, &export) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cuttle-server: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg, Some(&tracing));
    let outcome = runtime.block_on(execute(cli, cfg));
    // What the node traced last (its drain) is sent before it exits.
    runtime.block_on(async {
        tokio::task::spawn_blocking(move || drop(tracing))
            .await
            .ok()
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cuttle-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

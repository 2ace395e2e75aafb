//! `cuttle node`, `cuttle task`, `cuttle api-key`: the cluster itself — its nodes (caps,
//! draining), the queue, and the keys that reach it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;

use crate::output::{show, Output};
use crate::{model, Api};

#[derive(Subcommand)]
pub(crate) enum NodeCmd {
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
pub(crate) enum KeyCmd {
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
pub(crate) enum TaskCmd {
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
        /// Keep printing new lines until the task finishes; exit non-zero unless it succeeded
        #[arg(long)]
        follow: bool,
    },
    Cancel {
        id: String,
    },
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

const NODE_COLS: &[&str] = &[
    "name",
    "online",
    "draining",
    "task_cap",
    "running_tasks",
    "roles",
    "http_address",
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

pub(crate) fn node(api: &Api, out: Output, action: NodeCmd) -> Result<()> {
    match action {
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
            crate::output::deleted(
                out,
                &name,
                format_args!(
                    "deleted node {name} (a live node adds itself again at its next heartbeat)"
                ),
            );
        }
    }
    Ok(())
}

pub(crate) fn api_key(api: &Api, out: Output, action: KeyCmd) -> Result<()> {
    match action {
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
            // The key on the last line (a script takes it with `tail -n 1`), or in the object.
            crate::output::done(
                out,
                &created,
                format_args!(
                    "created {} API key {} {:?}; it is shown only now:\n{}",
                    created["scope"].as_str().unwrap_or_default(),
                    created["id"].as_str().unwrap_or_default(),
                    created["name"].as_str().unwrap_or_default(),
                    created["key"].as_str().unwrap_or_default()
                ),
            );
        }
        KeyCmd::List => show(out, &api.json("GET", "/api/keys", None)?, KEY_COLS),
        KeyCmd::Revoke { key } => {
            // Names are not unique: revoking by one that several keys share would be a guess.
            let keys = api.json("GET", "/api/keys", None)?;
            let named: Vec<&str> = keys["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|k| k["name"].as_str() == Some(key.as_str()))
                .filter_map(|k| k["id"].as_str())
                .collect();
            if named.len() > 1 {
                bail!(
                    "{} keys are named {key:?} ({}): revoke one by its id",
                    named.len(),
                    named.join(", ")
                );
            }
            let found = model::find(api, "/api/keys", "API key", &key)?;
            let id = found["id"].as_str().unwrap_or_default();
            api.json("DELETE", &format!("/api/keys/{id}"), None)?;
            crate::output::deleted(
                out,
                id,
                format_args!(
                    "revoked API key {id} {:?}",
                    found["name"].as_str().unwrap_or_default()
                ),
            );
        }
    }
    Ok(())
}

pub(crate) fn task(api: &Api, out: Output, action: TaskCmd) -> Result<()> {
    match action {
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
        TaskCmd::Log { id, follow } => {
            follow_log(api, &id, follow)?;
            if follow {
                // Followed to its end: the exit status says how it ended, as `deploy --wait`.
                let t = api.json("GET", &format!("/api/tasks/{id}"), None)?;
                if t["state"] != "Success" {
                    bail!(
                        "task {id} ended {}: {}",
                        t["state"].as_str().unwrap_or("?"),
                        t["error"].as_str().unwrap_or("no reason given")
                    );
                }
            }
        }
        TaskCmd::Cancel { id } => show(
            out,
            &api.json("POST", &format!("/api/tasks/{id}/cancel"), None)?,
            TASK_COLS,
        ),
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

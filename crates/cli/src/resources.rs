//! `cuttle space`, `cuttle lifecycle`, `cuttle target`, `cuttle runbook`: the rest of what a
//! team configures, by the names people use.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::model::{find, remove};
use crate::output::{done, show, Output};
use crate::Api;

#[derive(Subcommand)]
pub(crate) enum SpaceCmd {
    /// Every space
    List,
    /// Add a space (admin keys only)
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum LifecycleCmd {
    /// The space's lifecycles
    List,
    /// Add a lifecycle: the phases a release goes through, in order
    Create {
        name: String,
        /// A phase, in order (repeat): `NAME` (the phase of the environment so named) or
        /// `NAME=ENV[,ENV…]`, then `;optional` (it never holds the next one back) and `;min=N`
        /// (successful environments needed before the next opens; 0: all). None: one phase per
        /// environment, in their order
        #[arg(long = "phase", value_name = "PHASE")]
        phases: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// One lifecycle, by name or id (all its fields with --output json or yaml)
    Show {
        /// The lifecycle, by name or id
        name: String,
    },
    /// Change a lifecycle: its phases (given: they replace the ones it has), name, description
    Update {
        /// The lifecycle, by name or id
        name: String,
        /// A phase, in order (repeat), as for `create`: they replace the lifecycle's phases
        #[arg(long = "phase", value_name = "PHASE")]
        phases: Vec<String>,
        /// Its new name
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a lifecycle (refused while a project goes through it)
    Delete {
        /// The lifecycle, by name or id
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TargetCmd {
    /// Every deployment target, with its health
    List,
    /// One target
    Show {
        /// The target, by name or id
        name: String,
    },
    /// Change a target: its environments and/or roles (replacing the ones it has), its name,
    /// its listening endpoint
    Update {
        /// The target, by name or id
        name: String,
        /// Its new name
        #[arg(long)]
        rename: Option<String>,
        /// A listening target's `host:port`
        #[arg(long)]
        endpoint: Option<String>,
        /// An environment it deploys in (repeat; replaces the ones it has)
        #[arg(long = "environment", value_name = "NAME")]
        environments: Vec<String>,
        /// A role it has (repeat; replaces the ones it has)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Take a role nothing uses yet (rather than refuse it as a likely typo)
        #[arg(long)]
        new_roles: bool,
    },
    /// Remove a target (its tentacle is no longer trusted)
    Delete {
        /// The target, by name or id
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RunbookCmd {
    /// The space's runbooks
    List,
    /// Add a runbook to a project (give it steps with `cuttle process edit --runbook NAME`)
    Create {
        name: String,
        /// Its project, by name or id
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// One runbook, by name or id (all its fields with --output json or yaml)
    Show {
        /// The runbook, by name or id
        name: String,
    },
    /// Rename a runbook or change its description
    Update {
        /// The runbook, by name or id
        runbook: String,
        /// Its new name
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Freeze a runbook's process and its project's variables: what runs use
    Publish {
        /// The runbook, by name or id
        runbook: String,
    },
    /// Remove a runbook
    Delete {
        /// The runbook, by name or id
        runbook: String,
    },
    /// Run a runbook's published process in an environment
    Run {
        /// The runbook, by name or id
        #[arg(long)]
        runbook: String,
        /// The environment, by name or id
        #[arg(long)]
        environment: String,
        /// Follow the run's log; exit non-zero unless it succeeds
        #[arg(long)]
        wait: bool,
        /// Only this target, by name (repeat for more; none: every target the steps select)
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
}

const SPACE_COLS: &[&str] = &["id", "name", "description"];
const LIFECYCLE_COLS: &[&str] = &["id", "name", "phases", "version"];
const TARGET_COLS: &[&str] = &["id", "name", "environments", "roles", "comms", "health"];
const RUNBOOK_COLS: &[&str] = &["id", "name", "project_id", "published", "version"];

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_default()
}

pub(crate) fn space(api: &Api, out: Output, cmd: SpaceCmd) -> Result<()> {
    match cmd {
        SpaceCmd::List => show(out, &api.json("GET", "/api/spaces", None)?, SPACE_COLS),
        SpaceCmd::Create { name, description } => {
            let body = json!({"name": name, "description": description});
            let s = api.json("POST", "/api/spaces", Some(body))?;
            done(out, &s, format_args!("created space {} {name:?}", id(&s)));
        }
    }
    Ok(())
}

/// A `--phase` as written: `NAME` or `NAME=ENV[,ENV…]`, then `;optional` and `;min=N` if
/// wanted.
#[derive(Debug, PartialEq, Eq)]
struct PhaseArg {
    name: String,
    environments: Vec<String>,
    optional: bool,
    minimum: u32,
}

fn phase_of(raw: &str) -> Result<PhaseArg> {
    let mut parts = raw.split(';');
    let head = parts.next().unwrap_or_default();
    let (name, environments) = match head.split_once('=') {
        Some((name, envs)) => (
            name.trim(),
            envs.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => (head.trim(), vec![head.trim().to_owned()]),
    };
    if name.is_empty() {
        bail!("--phase {raw:?}: a phase needs a name (`NAME` or `NAME=ENV,ENV`)");
    }
    let mut phase = PhaseArg {
        name: name.to_owned(),
        environments,
        optional: false,
        minimum: 0,
    };
    for option in parts.map(str::trim) {
        match option.split_once('=') {
            None if option == "optional" => phase.optional = true,
            Some(("min", n)) => {
                phase.minimum = n.trim().parse().with_context(|| {
                    format!("--phase {raw:?}: `min=N` takes a whole number, not {n:?}")
                })?;
            }
            _ => bail!(
                "--phase {raw:?}: {option:?} is not `optional` or `min=N` (successful \
                 environments needed before the next phase opens)"
            ),
        }
    }
    Ok(phase)
}

/// A lifecycle's phases in a table's cell: their names.
fn phase_names(l: &mut Value) {
    let names: Vec<Value> = l["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].clone())
        .collect();
    l["phases"] = Value::Array(names);
}

/// The `--phase`s as the API takes them: each environment named by its id.
fn phases_written(api: &Api, space: &str, phases: &[String]) -> Result<Vec<Value>> {
    let environments = format!("/api/spaces/{space}/environments");
    let mut written = Vec::new();
    for raw in phases {
        let phase = phase_of(raw)?;
        let mut ids = Vec::new();
        for e in &phase.environments {
            ids.push(id(&find(api, &environments, "environment", e)?).to_owned());
        }
        written.push(json!({
            "name": phase.name, "environments": ids, "optional": phase.optional,
            "minimum_environments_before_promotion": phase.minimum,
        }));
    }
    Ok(written)
}

pub(crate) fn lifecycle(api: &Api, out: Output, space: &str, cmd: LifecycleCmd) -> Result<()> {
    match cmd {
        LifecycleCmd::List => {
            let mut list = api.json("GET", &format!("/api/spaces/{space}/lifecycles"), None)?;
            if out == Output::Table {
                list["items"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .for_each(phase_names);
            }
            show(out, &list, LIFECYCLE_COLS);
        }
        LifecycleCmd::Create {
            name,
            phases,
            description,
        } => {
            let written = phases_written(api, space, &phases)?;
            let body = json!({"name": name, "description": description, "phases": written});
            let l = api.json(
                "POST",
                &format!("/api/spaces/{space}/lifecycles"),
                Some(body),
            )?;
            let order: Vec<String> = phases
                .iter()
                .filter_map(|p| phase_of(p).ok().map(|p| p.name))
                .collect();
            let order = if order.is_empty() {
                "one phase per environment".to_owned()
            } else {
                order.join(" → ")
            };
            done(
                out,
                &l,
                format_args!("created lifecycle {} {name:?}: {order}", id(&l)),
            );
        }
        LifecycleCmd::Show { name } => {
            let list = format!("/api/spaces/{space}/lifecycles");
            let mut l = find(api, &list, "lifecycle", &name)?;
            if out == Output::Table {
                phase_names(&mut l);
            }
            show(out, &l, LIFECYCLE_COLS);
        }
        LifecycleCmd::Update {
            name,
            phases,
            rename,
            description,
        } => {
            let list = format!("/api/spaces/{space}/lifecycles");
            let l = find(api, &list, "lifecycle", &name)?;
            let phases = if phases.is_empty() {
                None
            } else {
                Some(Value::Array(phases_written(api, space, &phases)?))
            };
            let changes = crate::model::members(&[
                ("name", rename.map(Value::from)),
                ("description", description.map(Value::from)),
                ("phases", phases),
            ])?;
            let changed =
                crate::model::patch_document(api, &format!("{list}/{}", id(&l)), changes)?;
            show(out, &changed, LIFECYCLE_COLS);
        }
        LifecycleCmd::Delete { name } => {
            remove(
                api,
                out,
                &format!("/api/spaces/{space}/lifecycles"),
                "lifecycle",
                &name,
            )?;
        }
    }
    Ok(())
}

pub(crate) fn target(api: &Api, out: Output, cmd: TargetCmd) -> Result<()> {
    match cmd {
        TargetCmd::List => show(out, &api.json("GET", "/api/targets", None)?, TARGET_COLS),
        TargetCmd::Show { name } => show(
            out,
            &find(api, "/api/targets", "target", &name)?,
            TARGET_COLS,
        ),
        TargetCmd::Update {
            name,
            rename,
            endpoint,
            environments,
            roles,
            new_roles,
        } => {
            let listed = |l: Vec<String>| (!l.is_empty()).then(|| json!(l));
            let mut body = crate::model::members(&[
                ("name", rename.map(Value::from)),
                ("endpoint", endpoint.map(Value::from)),
                ("environments", listed(environments)),
                ("roles", listed(roles)),
            ])?;
            let t = find(api, "/api/targets", "target", &name)?;
            if new_roles {
                body["new_roles"] = json!(true);
            }
            let changed = api.json("PATCH", &format!("/api/targets/{}", id(&t)), Some(body))?;
            show(out, &changed, TARGET_COLS);
        }
        TargetCmd::Delete { name } => {
            remove(api, out, "/api/targets", "target", &name)?;
        }
    }
    Ok(())
}

pub(crate) fn runbook(api: &Api, out: Output, space: &str, cmd: RunbookCmd) -> Result<()> {
    match cmd {
        RunbookCmd::List => {
            let list = api.json("GET", &format!("/api/spaces/{space}/runbooks"), None)?;
            show(out, &list, RUNBOOK_COLS);
        }
        RunbookCmd::Create {
            name,
            project,
            description,
        } => {
            let p = find(
                api,
                &format!("/api/spaces/{space}/projects"),
                "project",
                &project,
            )?;
            let body = json!({"name": name, "project_id": id(&p), "description": description});
            let r = api.json("POST", &format!("/api/spaces/{space}/runbooks"), Some(body))?;
            done(
                out,
                &r,
                format_args!("created runbook {} {name:?} in {project}", id(&r)),
            );
        }
        RunbookCmd::Show { name } => {
            let list = format!("/api/spaces/{space}/runbooks");
            show(out, &find(api, &list, "runbook", &name)?, RUNBOOK_COLS);
        }
        RunbookCmd::Update {
            runbook,
            rename,
            description,
        } => {
            let list = format!("/api/spaces/{space}/runbooks");
            let r = find(api, &list, "runbook", &runbook)?;
            let changes = crate::model::members(&[
                ("name", rename.map(Value::from)),
                ("description", description.map(Value::from)),
            ])?;
            let changed =
                crate::model::patch_document(api, &format!("{list}/{}", id(&r)), changes)?;
            show(out, &changed, RUNBOOK_COLS);
        }
        RunbookCmd::Publish { runbook } => {
            let list = format!("/api/spaces/{space}/runbooks");
            let r = find(api, &list, "runbook", &runbook)?;
            let published = api.json("POST", &format!("{list}/{}/publish", id(&r)), None)?;
            let at = published["published"]["published_at"]
                .as_str()
                .context("the runbook came back without `published`")?;
            done(
                out,
                &published,
                format_args!("published runbook {} {runbook:?} at {at}", id(&r)),
            );
        }
        RunbookCmd::Delete { runbook } => {
            remove(
                api,
                out,
                &format!("/api/spaces/{space}/runbooks"),
                "runbook",
                &runbook,
            )?;
        }
        RunbookCmd::Run {
            runbook,
            environment,
            wait,
            targets,
        } => {
            let t =
                crate::deploy::run_runbook(api, space, (&runbook, &environment), targets, wait)?;
            done(
                out,
                &t,
                format_args!(
                    "{} runbook {runbook} in {environment}: task {}",
                    if wait { "ran" } else { "queued" },
                    id(&t)
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::phase_of;

    #[test]
    fn a_phase_is_a_name_or_a_name_and_its_environments() {
        let p = phase_of("Production").unwrap();
        assert_eq!(
            (p.name.as_str(), p.environments),
            ("Production", vec!["Production".to_owned()])
        );
        let p = phase_of("Test=QA, Staging;optional; min=1").unwrap();
        assert_eq!(p.environments, ["QA", "Staging"]);
        assert!(p.optional);
        assert_eq!(p.minimum, 1);
        assert!(phase_of("=Dev").is_err());
        assert!(phase_of("Test;sometimes").is_err());
        assert!(phase_of("Test;min=x").is_err());
    }
}

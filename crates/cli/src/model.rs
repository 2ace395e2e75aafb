//! `cuttle environment`, `cuttle project`, `cuttle variable`: the deployment model from the
//! command line, named as people name things (`Production`, `Shop`), never by id. A sensitive
//! value is read from standard input, never taken from the command line (`ps` shows it).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::output::{deleted, done, show, Output};
use crate::Api;

#[derive(Subcommand)]
pub(crate) enum EnvironmentCmd {
    /// The space's environments, in their order
    List,
    /// Add an environment (it goes last)
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// One environment, by name or id (all its fields with --output json or yaml)
    Show {
        /// The environment, by name or id
        name: String,
    },
    /// Rename an environment or change its description
    Update {
        /// The environment, by name or id
        name: String,
        /// Its new name
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Put the environments in a new order: name every one of them, in that order
    Reorder {
        /// Every environment of the space, by name or id, in the new order
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove an environment (refused while a lifecycle names it)
    Delete {
        /// The environment, by name or id
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ProjectCmd {
    /// Every project of the space
    List,
    /// Add a project
    Create {
        name: String,
        /// Its lifecycle, by name or id (the space's default lifecycle when left out)
        #[arg(long)]
        lifecycle: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// One project, by name or id (all its fields with --output json or yaml)
    Show {
        /// The project, by name or id
        name: String,
    },
    /// Change a project's settings (what is not given stays)
    Update {
        /// The project, by name or id
        name: String,
        /// Its new name
        #[arg(long)]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Its lifecycle, by name or id
        #[arg(long)]
        lifecycle: Option<String>,
        /// The newest releases kept (0: all)
        #[arg(long)]
        releases_to_keep: Option<u32>,
    },
    /// Remove a project
    Delete {
        /// The project, by name or id
        name: String,
    },
}

/// Where a variable's value applies: none of them given, everywhere.
#[derive(clap::Args)]
pub(crate) struct ScopeArgs {
    /// Only in this environment, by name or id (repeat for more)
    #[arg(long = "environment", value_name = "NAME")]
    environments: Vec<String>,
    /// Only on targets with this role (repeat for more)
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Only on this target, by name (repeat for more)
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
}

/// A variable's scope as stored (environments by id), each list in order: two scopes are the
/// same when these are equal.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scope {
    environments: Vec<String>,
    roles: Vec<String>,
    targets: Vec<String>,
}

impl Scope {
    /// The scope of a variable as the API shows it.
    fn of(v: &Value) -> Scope {
        let list = |k: &str| -> Vec<String> {
            let mut l: Vec<String> = v["scope"][k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect();
            l.sort();
            l
        };
        Scope {
            environments: list("environments"),
            roles: list("roles"),
            targets: list("targets"),
        }
    }

    /// The scope the options name, environments looked up by name.
    fn named(api: &Api, space: &str, args: &ScopeArgs) -> Result<Scope> {
        let list = format!("/api/spaces/{space}/environments");
        let mut environments = Vec::new();
        for e in &args.environments {
            environments.push(id(&find(api, &list, "environment", e)?).to_owned());
        }
        let mut scope = Scope {
            environments,
            roles: args.roles.clone(),
            targets: args.targets.clone(),
        };
        scope.environments.sort();
        scope.roles.sort();
        scope.targets.sort();
        Ok(scope)
    }

    fn is_everywhere(&self) -> bool {
        self.environments.is_empty() && self.roles.is_empty() && self.targets.is_empty()
    }

    fn to_json(&self) -> Value {
        json!({"environments": self.environments, "roles": self.roles, "targets": self.targets})
    }
}

/// How a scope given on the command line reads in a sentence.
fn described(args: &ScopeArgs) -> String {
    let mut parts = Vec::new();
    if !args.environments.is_empty() {
        parts.push(args.environments.join(", "));
    }
    if !args.roles.is_empty() {
        parts.push(format!("role(s) {}", args.roles.join(", ")));
    }
    if !args.targets.is_empty() {
        parts.push(format!("target(s) {}", args.targets.join(", ")));
    }
    if parts.is_empty() {
        "everywhere".to_owned()
    } else {
        parts.join("; ")
    }
}

#[derive(Subcommand)]
pub(crate) enum VariableCmd {
    /// A project's variables (a sensitive value is never shown)
    List {
        /// The project, by name or id
        project: String,
    },
    /// Set a project's variable: the one with this name and exactly this scope is replaced,
    /// or added. A sensitive value is read from standard input
    Set {
        /// The project, by name or id
        project: String,
        name: String,
        /// The value (not with --sensitive: then it is read from standard input)
        value: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Stored encrypted, never shown, masked in logs
        #[arg(long)]
        sensitive: bool,
    },
    /// Remove a project's variable: the one with this name and exactly these environments
    Delete {
        /// The project, by name or id
        project: String,
        name: String,
        /// The scope of the one to remove (none given: the unscoped one)
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

const ENVIRONMENT_COLS: &[&str] = &["id", "name", "description", "version"];
const PROJECT_COLS: &[&str] = &["id", "name", "lifecycle_id", "version", "modified_at"];
const VARIABLE_COLS: &[&str] = &["id", "name", "value", "sensitive", "scope"];

/// The item of `list` named `name` (whatever its case) or with that id.
pub(crate) fn find(api: &Api, list: &str, what: &str, name: &str) -> Result<Value> {
    let items = api.json("GET", list, None)?;
    items["items"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|i| {
                i["id"].as_str() == Some(name)
                    || i["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
        .cloned()
        .with_context(|| format!("no {what} named {name:?}"))
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap_or_default()
}

/// Deletes the item of `list` named `name` (or with that id) and says so.
pub(crate) fn remove(api: &Api, out: Output, list: &str, what: &str, name: &str) -> Result<()> {
    let item = find(api, list, what, name)?;
    api.json("DELETE", &format!("{list}/{}", id(&item)), None)?;
    deleted(
        out,
        id(&item),
        format_args!("deleted {what} {} {name:?}", id(&item)),
    );
    Ok(())
}

/// Changes what `changes` names of the document at `path` (a JSON merge patch), at the version
/// just read: a change made in between is refused (`409`), never overwritten.
pub(crate) fn patch_document(api: &Api, path: &str, mut changes: Value) -> Result<Value> {
    let current = api.json("GET", path, None)?;
    changes["version"] = current["version"].clone();
    api.json("PATCH", path, Some(changes))
}

/// `changes` with the members given (`None`: left out, so kept).
pub(crate) fn members(pairs: &[(&str, Option<Value>)]) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in pairs {
        if let Some(v) = value {
            out.insert((*name).to_owned(), v.clone());
        }
    }
    if out.is_empty() {
        bail!("nothing to change: give at least one of the options (see --help)");
    }
    Ok(Value::Object(out))
}

pub(crate) fn environment(api: &Api, out: Output, space: &str, cmd: EnvironmentCmd) -> Result<()> {
    match cmd {
        EnvironmentCmd::List => {
            let list = api.json("GET", &format!("/api/spaces/{space}/environments"), None)?;
            show(out, &list, ENVIRONMENT_COLS);
        }
        EnvironmentCmd::Create { name, description } => {
            let body = json!({"name": name, "description": description});
            let e = api.json(
                "POST",
                &format!("/api/spaces/{space}/environments"),
                Some(body),
            )?;
            done(
                out,
                &e,
                format_args!("created environment {} {name:?}", id(&e)),
            );
        }
        EnvironmentCmd::Show { name } => {
            let list = format!("/api/spaces/{space}/environments");
            show(
                out,
                &find(api, &list, "environment", &name)?,
                ENVIRONMENT_COLS,
            );
        }
        EnvironmentCmd::Update {
            name,
            rename,
            description,
        } => {
            let list = format!("/api/spaces/{space}/environments");
            let e = find(api, &list, "environment", &name)?;
            let changes = members(&[
                ("name", rename.map(Value::from)),
                ("description", description.map(Value::from)),
            ])?;
            let changed = patch_document(api, &format!("{list}/{}", id(&e)), changes)?;
            show(out, &changed, ENVIRONMENT_COLS);
        }
        EnvironmentCmd::Reorder { names } => {
            let list = format!("/api/spaces/{space}/environments");
            let mut ids = Vec::new();
            for n in &names {
                ids.push(id(&find(api, &list, "environment", n)?).to_owned());
            }
            let ordered = api.json(
                "POST",
                &format!("{list}/reorder"),
                Some(json!({"ids": ids})),
            )?;
            show(out, &ordered, ENVIRONMENT_COLS);
        }
        EnvironmentCmd::Delete { name } => {
            remove(
                api,
                out,
                &format!("/api/spaces/{space}/environments"),
                "environment",
                &name,
            )?;
        }
    }
    Ok(())
}

pub(crate) fn project(api: &Api, out: Output, space: &str, cmd: ProjectCmd) -> Result<()> {
    match cmd {
        ProjectCmd::List => {
            let list = api.json("GET", &format!("/api/spaces/{space}/projects"), None)?;
            show(out, &list, PROJECT_COLS);
        }
        ProjectCmd::Create {
            name,
            lifecycle,
            description,
        } => {
            let lifecycle_id = match lifecycle {
                Some(l) => {
                    let list = format!("/api/spaces/{space}/lifecycles");
                    Some(id(&find(api, &list, "lifecycle", &l)?).to_owned())
                }
                None => None,
            };
            let body =
                json!({"name": name, "description": description, "lifecycle_id": lifecycle_id});
            let p = api.json("POST", &format!("/api/spaces/{space}/projects"), Some(body))?;
            done(out, &p, format_args!("created project {} {name:?}", id(&p)));
        }
        ProjectCmd::Show { name } => {
            let list = format!("/api/spaces/{space}/projects");
            show(out, &find(api, &list, "project", &name)?, PROJECT_COLS);
        }
        ProjectCmd::Update {
            name,
            rename,
            description,
            lifecycle,
            releases_to_keep,
        } => {
            let list = format!("/api/spaces/{space}/projects");
            let p = find(api, &list, "project", &name)?;
            let lifecycle_id = match lifecycle {
                Some(l) => {
                    let lifecycles = format!("/api/spaces/{space}/lifecycles");
                    Some(json!(id(&find(api, &lifecycles, "lifecycle", &l)?)))
                }
                None => None,
            };
            let changes = members(&[
                ("name", rename.map(Value::from)),
                ("description", description.map(Value::from)),
                ("lifecycle_id", lifecycle_id),
                (
                    "retention",
                    releases_to_keep.map(|n| json!({"releases_to_keep": n})),
                ),
            ])?;
            let changed = patch_document(api, &format!("{list}/{}", id(&p)), changes)?;
            show(out, &changed, PROJECT_COLS);
        }
        ProjectCmd::Delete { name } => {
            remove(
                api,
                out,
                &format!("/api/spaces/{space}/projects"),
                "project",
                &name,
            )?;
        }
    }
    Ok(())
}

pub(crate) fn variable(api: &Api, out: Output, space: &str, cmd: VariableCmd) -> Result<()> {
    match cmd {
        VariableCmd::List { project } => {
            let p = find(
                api,
                &format!("/api/spaces/{space}/projects"),
                "project",
                &project,
            )?;
            let path = format!("/api/spaces/{space}/projects/{}/variables", id(&p));
            let mut vars = api.json("GET", &path, None)?;
            // Shown as a list: the rows are the variables.
            vars["items"] = vars["variables"].take();
            show(out, &vars, VARIABLE_COLS);
        }
        VariableCmd::Set {
            project,
            name,
            value,
            scope,
            sensitive,
        } => {
            let value = match (value, sensitive) {
                (Some(_), true) => bail!(
                    "a sensitive value is not taken from the command line (every user of this \
                     host can read it there): leave it out and give it on standard input"
                ),
                (Some(v), false) => v,
                (None, _) => read_value(&name)?,
            };
            let p = find(
                api,
                &format!("/api/spaces/{space}/projects"),
                "project",
                &project,
            )?;
            let wanted = Scope::named(api, space, &scope)?;
            let path = format!("/api/spaces/{space}/projects/{}/variables", id(&p));
            let current = api.json("GET", &path, None)?;
            let body = with_variable(&current, &name, &value, &wanted, sensitive)?;
            let saved = api.json("PUT", &path, Some(body))?;
            let scope = described(&scope);
            done(
                out,
                &saved,
                format_args!(
                    "set {}{name} on {} for {scope}",
                    if sensitive { "sensitive " } else { "" },
                    p["name"].as_str().unwrap_or_default()
                ),
            );
        }
        VariableCmd::Delete {
            project,
            name,
            scope,
        } => {
            let p = find(
                api,
                &format!("/api/spaces/{space}/projects"),
                "project",
                &project,
            )?;
            let wanted = Scope::named(api, space, &scope)?;
            let path = format!("/api/spaces/{space}/projects/{}/variables", id(&p));
            let current = api.json("GET", &path, None)?;
            let body = without_variable(&current, &name, &wanted)?;
            let saved = api.json("PUT", &path, Some(body))?;
            done(
                out,
                &saved,
                format_args!(
                    "deleted {name} from {}",
                    p["name"].as_str().unwrap_or_default()
                ),
            );
        }
    }
    Ok(())
}

/// A variable as shown, as a `PUT` keeps it (a sensitive one by its id, its value unsent).
fn kept(v: &Value) -> Value {
    let mut out = json!({"id": v["id"], "name": v["name"], "sensitive": v["sensitive"]});
    if !v["scope"].is_null() {
        out["scope"] = v["scope"].clone();
    }
    if v["sensitive"] != true {
        out["value"] = v["value"].clone();
    }
    out
}

/// The body of a `PUT …/variables` without the variable `name` of exactly `scope`.
fn without_variable(current: &Value, name: &str, scope: &Scope) -> Result<Value> {
    let version = current["version"]
        .as_i64()
        .context("the variables came without their version")?;
    let all = current["variables"].as_array().cloned().unwrap_or_default();
    let rest: Vec<Value> = all
        .iter()
        .filter(|v| !(v["name"].as_str() == Some(name) && Scope::of(v) == *scope))
        .map(kept)
        .collect();
    if rest.len() == all.len() {
        bail!("no variable {name} with exactly that scope");
    }
    Ok(json!({"version": version, "variables": rest}))
}

/// The body of a `PUT …/variables` that keeps every variable of `current` (sensitive ones by
/// id, their values untouched) and sets `name` for exactly `scope`.
fn with_variable(
    current: &Value,
    name: &str,
    value: &str,
    scope: &Scope,
    sensitive: bool,
) -> Result<Value> {
    let version = current["version"]
        .as_i64()
        .context("the variables came without their version")?;
    let mut all = Vec::new();
    let mut replaced = false;
    for v in current["variables"].as_array().into_iter().flatten() {
        let mut out = kept(v);
        if v["name"].as_str() == Some(name) && Scope::of(v) == *scope {
            if v["sensitive"] == true && !sensitive {
                bail!(
                    "{name} is sensitive here: give --sensitive (and its value on standard \
                     input) to replace it, or delete it first to make it plain"
                );
            }
            out["value"] = json!(value);
            out["sensitive"] = json!(sensitive);
            replaced = true;
        }
        all.push(out);
    }
    if !replaced {
        let mut new = json!({"name": name, "value": value, "sensitive": sensitive});
        if !scope.is_everywhere() {
            new["scope"] = scope.to_json();
        }
        all.push(new);
    }
    Ok(json!({"version": version, "variables": all}))
}

/// A value from standard input: one line, its end of line dropped.
fn read_value(name: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value of {name} (then Enter): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("read the value from standard input")?;
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        bail!("no value for {name} on standard input");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_is_replaced_in_its_scope_or_added_and_sensitive_values_stay_untouched() {
        let current = json!({"version": 4, "variables": [
            {"id": "a", "name": "ConnStr", "value": "Server=dev", "sensitive": false, "scope": null},
            {"id": "b", "name": "ConnStr", "value": "Server=prod", "sensitive": false,
             "scope": {"environments": ["Environments-3"]}},
            {"id": "c", "name": "Password", "value": null, "sensitive": true, "scope": null},
        ]});
        let prod = Scope {
            environments: vec!["Environments-3".to_owned()],
            ..Scope::default()
        };
        let body = with_variable(&current, "ConnStr", "Server=db9", &prod, false).unwrap();
        assert_eq!(body["version"], 4);
        let vars = body["variables"].as_array().unwrap();
        assert_eq!(vars.len(), 3);
        assert_eq!(
            vars[0]["value"], "Server=dev",
            "another scope is left alone"
        );
        assert_eq!(vars[1]["value"], "Server=db9");
        assert!(
            vars[2].get("value").is_none(),
            "a sensitive value is kept by its id, never sent back: {}",
            vars[2]
        );
        let body = with_variable(&current, "ApiKey", "k", &Scope::default(), true).unwrap();
        let added = &body["variables"][3];
        assert_eq!(
            (&added["name"], &added["sensitive"], added.get("id")),
            (&json!("ApiKey"), &json!(true), None)
        );
    }
}

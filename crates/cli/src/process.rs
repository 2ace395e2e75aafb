//! `cuttle process show|edit`: a project's deployment process, or a runbook's, as YAML. `edit`
//! opens `$VISUAL`/`$EDITOR` on it (or reads `--file`), and saves it at the version it was read
//! at: a change made meanwhile is refused, not overwritten.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::model::find;
use crate::output::{show, yaml, Output};
use crate::Api;

/// Whose process.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Owner {
    /// A project's deployment process, by the project's name or id
    #[arg(long)]
    project: Option<String>,
    /// A runbook's process, by the runbook's name or id
    #[arg(long)]
    runbook: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ProcessCmd {
    /// Print the process (YAML unless --output says otherwise)
    Show {
        #[command(flatten)]
        owner: Owner,
    },
    /// Change the process in $VISUAL or $EDITOR (or from --file), saved at the version read
    Edit {
        #[command(flatten)]
        owner: Owner,
        /// Take the process from this YAML (or JSON) file instead of an editor: its `steps`
        /// (or a list of steps), and its `version` if it names one (else the current one)
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// The path of the owner's process, and what to call it in messages.
fn locate(api: &Api, space: &str, owner: &Owner) -> Result<(String, String)> {
    match (&owner.project, &owner.runbook) {
        (Some(p), _) => {
            let project = find(api, &format!("/api/spaces/{space}/projects"), "project", p)?;
            let id = project["id"].as_str().unwrap_or_default();
            Ok((
                format!("/api/spaces/{space}/projects/{id}/deploymentprocess"),
                format!(
                    "the deployment process of {}",
                    project["name"].as_str().unwrap_or(p)
                ),
            ))
        }
        (None, Some(r)) => {
            let runbook = find(api, &format!("/api/spaces/{space}/runbooks"), "runbook", r)?;
            let id = runbook["id"].as_str().unwrap_or_default();
            Ok((
                format!("/api/spaces/{space}/runbooks/{id}/process"),
                format!(
                    "the process of runbook {}",
                    runbook["name"].as_str().unwrap_or(r)
                ),
            ))
        }
        (None, None) => bail!("name a --project or a --runbook"),
    }
}

pub(crate) fn process(api: &Api, out: Output, space: &str, cmd: ProcessCmd) -> Result<()> {
    match cmd {
        ProcessCmd::Show { owner } => {
            let (path, _) = locate(api, space, &owner)?;
            let current = api.json("GET", &path, None)?;
            match out {
                Output::Table => print!("{}", yaml(&editable(&current))),
                _ => show(out, &current, &[]),
            }
            Ok(())
        }
        ProcessCmd::Edit { owner, file } => {
            let (path, what) = locate(api, space, &owner)?;
            let current = api.json("GET", &path, None)?;
            let version = current["version"]
                .as_i64()
                .context("the process came without its version")?;
            let (text, kept) = match &file {
                Some(f) => (
                    std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?,
                    None,
                ),
                None => {
                    let draft = draft_path(&path);
                    let before = format!(
                        "# {what}, at version {version}. Save and quit to apply it; leave it \
                         unchanged (or empty) to change nothing.\n{}",
                        yaml(&editable(&current))
                    );
                    write_draft(&draft, &before)?;
                    edit(&draft)?;
                    let after = std::fs::read_to_string(&draft)
                        .with_context(|| format!("read {}", draft.display()))?;
                    if after == before || after.trim().is_empty() {
                        let _ = std::fs::remove_file(&draft);
                        println!("{what}: unchanged");
                        return Ok(());
                    }
                    (after, Some(draft))
                }
            };
            let body = match parse(&text, version) {
                Ok(b) => b,
                Err(e) => return Err(kept_for_retry(e, kept.as_deref(), &owner, space)),
            };
            match api.json("PUT", &path, Some(body)) {
                Ok(saved) => {
                    if let Some(k) = kept {
                        let _ = std::fs::remove_file(k);
                    }
                    let steps = saved["steps"].as_array().map_or(0, Vec::len);
                    crate::output::done(
                        out,
                        &saved,
                        format_args!(
                            "saved {what}: {steps} step(s), version {}",
                            saved["version"]
                        ),
                    );
                    Ok(())
                }
                Err(e) => Err(kept_for_retry(e, kept.as_deref(), &owner, space)),
            }
        }
    }
}

/// What a person edits: the version read and the steps (not the owner's id).
fn editable(current: &Value) -> Value {
    json!({"version": current["version"], "steps": current["steps"]})
}

/// The body of the `PUT`: the steps of `text` (YAML or JSON: `{steps: […], version?}` or just
/// the list), at the version it names, else `current`.
fn parse(text: &str, current: i64) -> Result<Value> {
    let v: Value = yaml_serde::from_str(text).context("the process is not valid YAML")?;
    let (steps, version) = match v {
        Value::Array(steps) => (Value::Array(steps), current),
        Value::Object(mut m) => {
            let steps = m
                .remove("steps")
                .context("the process has no `steps` (a list of steps)")?;
            let version = match m.remove("version") {
                None | Some(Value::Null) => current,
                Some(v) => v.as_i64().context("`version` is a whole number")?,
            };
            m.remove("project_id");
            m.remove("runbook_id");
            if let Some(k) = m.keys().next() {
                bail!("the process has `{k}`, which is not one of `steps` and `version`");
            }
            (steps, version)
        }
        _ => bail!("the process is a list of steps, or an object with `steps`"),
    };
    Ok(json!({"steps": steps, "version": version}))
}

/// Where an edit is drafted: the system's temporary folder, named after the process.
fn draft_path(api_path: &str) -> PathBuf {
    let name: String = api_path
        .trim_start_matches("/api/spaces/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "cuttle-{name}-{}-{nanos:09}.yaml",
        std::process::id()
    ))
}

/// Writes a new draft readable by its owner only, never through a file or link someone else
/// put at that path first (the temporary folder is shared).
fn write_draft(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// Runs the person's editor on `file` and waits for it.
fn edit(file: &Path) -> Result<()> {
    let chosen = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty());
    let editor = match chosen {
        Some(e) => e,
        None if std::io::stdin().is_terminal() => "vi".into(),
        None => bail!("no terminal to edit on: give the process with --file (or set EDITOR)"),
    };
    // As a shell would run it: `EDITOR="code --wait"` works.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file)
        .status()
        .with_context(|| format!("run the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing was changed");
    }
    Ok(())
}

/// An edit that could not be saved is not lost: the message says where it is and how to retry.
fn kept_for_retry(
    e: anyhow::Error,
    kept: Option<&Path>,
    owner: &Owner,
    space: &str,
) -> anyhow::Error {
    let Some(kept) = kept else {
        return e;
    };
    let which = match (&owner.project, &owner.runbook) {
        (Some(p), _) => format!("--project {p:?}"),
        (_, Some(r)) => format!("--runbook {r:?}"),
        _ => String::new(),
    };
    let space = if space == "default" {
        String::new()
    } else {
        format!(" --space {space:?}")
    };
    e.context(format!(
        "your edit is kept in {}: fix it and run `cuttle process edit {which}{space} --file {}`",
        kept.display(),
        kept.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_is_its_owners_alone_and_never_written_through_what_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let path = draft_path("/api/spaces/default/projects/Projects-1/deploymentprocess");
        write_draft(&path, "steps: []\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            write_draft(&path, "again").is_err(),
            "an existing file is not reused"
        );
        std::fs::remove_file(&path).unwrap();
        let link = draft_path("/api/spaces/default/runbooks/Runbooks-1/process");
        std::os::unix::fs::symlink("/tmp/cuttle-draft-target-that-must-not-appear", &link).unwrap();
        assert!(write_draft(&link, "x").is_err(), "a link is not followed");
        assert!(!Path::new("/tmp/cuttle-draft-target-that-must-not-appear").exists());
        std::fs::remove_file(&link).unwrap();
    }

    #[test]
    fn a_process_is_read_as_yaml_or_json_with_or_without_its_version() {
        let yaml_text = "# a comment\nversion: 4\nsteps:\n  - name: Hello\n    action:\n      type: script\n      script: echo hi\n";
        let body = parse(yaml_text, 9).unwrap();
        assert_eq!(body["version"], 4, "the version the file was read at");
        assert_eq!(body["steps"][0]["action"]["script"], "echo hi");
        let list = parse("- name: A\n  action: {type: script, script: x}\n", 9).unwrap();
        assert_eq!(list["version"], 9, "no version: the current one");
        let json_text = r#"{"project_id": "Projects-1", "version": 2, "steps": []}"#;
        assert_eq!(parse(json_text, 9).unwrap()["version"], 2);
        let err = parse("steps: []\nstep: []\n", 1).unwrap_err().to_string();
        assert!(err.contains("`step`"), "{err}");
        assert!(parse("version: 1\n", 1).is_err(), "no steps");
        assert!(parse("steps: [\n", 1).is_err(), "not YAML");
    }
}

//! Tasks: their kinds and arguments, validated at the edge, and their records. Past 800 lines
//! for a reason: the last 150 are the tests of every kind's arguments, kept beside the rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::{TargetId, TargetRecord, UnixMs, ValidationError};

/// Longest `Sleep` accepted: a day. Longer is a mistake, and would pin a task slot.
pub const MAX_SLEEP_MS: u64 = 24 * 3600 * 1000;
/// Longest script accepted in an `AdHocScript`, in bytes.
pub const MAX_SCRIPT_LEN: usize = 256 * 1024;
/// Longest `AdHocScript` timeout: a day.
pub const MAX_SCRIPT_TIMEOUT_SECS: u64 = 24 * 3600;
pub const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_TAG_LEN: usize = 200;

/// A task id: the queue's sequence number, shown as `ServerTasks-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub i64);

const TASK_ID_PREFIX: &str = "ServerTasks-";

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TASK_ID_PREFIX}{}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(TASK_ID_PREFIX)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(TaskId)
            .ok_or_else(|| ValidationError::new(format!("{s:?} is not a task id")))
    }
}

/// `ServerTasks-N`, as it is shown.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for TaskId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TaskId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": format!("^{TASK_ID_PREFIX}[1-9][0-9]*$")})
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TaskState {
    Queued,
    Executing,
    Cancelling,
    Success,
    Failed,
    Canceled,
    TimedOut,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Executing,
        TaskState::Cancelling,
        TaskState::Success,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "Queued",
            TaskState::Executing => "Executing",
            TaskState::Cancelling => "Cancelling",
            TaskState::Success => "Success",
            TaskState::Failed => "Failed",
            TaskState::Canceled => "Canceled",
            TaskState::TimedOut => "TimedOut",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Canceled | TaskState::TimedOut
        )
    }
}

impl FromStr for TaskState {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::new(format!("unknown task state {s:?}")))
    }
}

/// What a task does, with its validated arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// Waits, logging start and end. For smoke tests and benchmarks.
    Sleep { duration_ms: u64 },
    /// Runs a script with `/bin/sh` on the node itself, or on the targets `on` selects.
    AdHocScript {
        script: String,
        timeout_secs: Option<u64>,
        on: TargetSelection,
        /// On targets: `sh` (default), `bash` or `pwsh` (PowerShell, where installed).
        shell: Option<String>,
    },
    /// Checks that targets' tentacles answer and records each one's health. Every target when
    /// `on` is empty.
    HealthCheck { on: TargetSelection },
    /// Sends a file from the shared store to the selected targets' files directories.
    PushFile {
        source: String,
        destination: String,
        on: TargetSelection,
    },
    /// Collects a file from each selected target's files directory into the shared store, as
    /// an artifact of the task (`Artifacts/{task}/{target}/{file name}`).
    PullFile { source: String, on: TargetSelection },
    /// Runs a release's process in an environment. Made by `POST …/deployments` (which checks
    /// the lifecycle), never directly.
    Deploy(DeployArgs),
    /// Runs a runbook's published process in an environment. Made by `POST …/runbooks/{id}/runs`.
    RunbookRun(RunbookArgs),
    /// Rebuilds the package repository's metadata from its files: versions whose file is gone
    /// are removed, files no version names are indexed (or, when another file holds that
    /// version, removed). Safe on any node at any time.
    PackageReindex,
    /// Applies retention: releases projects no longer keep, logs and artifacts of deployments
    /// of older releases, and package versions beyond the newest `package_versions_to_keep` of
    /// each id (0: all), never one a kept release uses. Queued periodically by the scheduler.
    Retention { package_versions_to_keep: u32 },
    /// Moves audit events older than `older_than_secs` out of the database into day files in
    /// the shared store (whole days only). Queued periodically by the scheduler.
    EventArchive { older_than_secs: u64 },
}

/// What a runbook run's task runs: a runbook's published snapshot in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookArgs {
    /// The space id (`Spaces-1`).
    pub space: String,
    /// The runbook's document number.
    pub runbook: i64,
    /// The environment id (`Environments-3`).
    pub environment: String,
    /// Only these targets (by name); all of the environment's when empty.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// What a deployment's task runs: a release in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    /// The space id (`Spaces-1`).
    pub space: String,
    /// The release's number.
    pub release: i64,
    /// The environment id (`Environments-3`).
    pub environment: String,
    /// Steps not to run (by name).
    #[serde(default)]
    pub skip_steps: Vec<String>,
    /// Only these targets (by name); all of the environment's when empty.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// The concurrency tag a system task always runs under (one at a time across the cluster).
pub fn system_tag(kind: &TaskKind) -> Option<&'static str> {
    match kind {
        TaskKind::PackageReindex => Some("system/package-reindex"),
        TaskKind::Retention { .. } => Some("system/retention"),
        TaskKind::EventArchive { .. } => Some("system/event-archive"),
        _ => None,
    }
}

/// A path that must stay inside the folder it is relative to: not empty, not absolute, only
/// plain components (no `..`, no `.`), no NUL.
pub fn validate_relative_path(what: &str, path: &str) -> Result<(), ValidationError> {
    let plain = !path.is_empty()
        && !path.contains('\0')
        && path.len() <= 1000
        && std::path::Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(ValidationError::new(format!(
            "{what} {path:?} must be a relative path without \"..\" (at most 1000 bytes)"
        )))
    }
}

/// Which deployment targets a script runs on: those listed, and those with any of the roles
/// (within the environments, when given). Empty: the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSelection {
    pub targets: Vec<TargetId>,
    pub roles: Vec<String>,
    pub environments: Vec<String>,
}

impl TargetSelection {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.roles.is_empty() && self.environments.is_empty()
    }

    /// Adds the non-empty parts to a task's arguments.
    fn add_to(&self, v: &mut Value) {
        if !self.targets.is_empty() {
            let ids: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
            v["targets"] = ids.into();
        }
        if !self.roles.is_empty() {
            v["roles"] = self.roles.clone().into();
        }
        if !self.environments.is_empty() {
            v["environments"] = self.environments.clone().into();
        }
    }

    /// Whether the target is selected.
    pub fn matches(&self, t: &TargetRecord) -> bool {
        let any = |wanted: &[String], have: &[String]| wanted.iter().any(|w| have.contains(w));
        let by_tags = (!self.roles.is_empty() || !self.environments.is_empty())
            && (self.roles.is_empty() || any(&self.roles, &t.roles))
            && (self.environments.is_empty() || any(&self.environments, &t.environments));
        self.targets.contains(&t.id) || by_tags
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    duration_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFileArgs {
    source: String,
    destination: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullFileArgs {
    source: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckArgs {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
}

/// A task's `targets`, `roles` and `environments` arguments, checked.
fn selection(
    kind: &str,
    targets: &[String],
    roles: Vec<String>,
    environments: Vec<String>,
) -> Result<TargetSelection, ValidationError> {
    if targets.len() + roles.len() + environments.len() > 1000 {
        return Err(ValidationError::new(format!(
            "{kind} selects too many targets, roles and environments (1000 at most)"
        )));
    }
    let targets = targets
        .iter()
        .map(|t| t.parse::<TargetId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ValidationError::new(format!("{kind} targets: {}", e.0)))?;
    Ok(TargetSelection {
        targets,
        roles,
        environments,
    })
}

/// For kinds that only make sense on targets: `on` must select something.
fn on_targets(
    kind: &str,
    on: TargetSelection,
    why: &str,
) -> Result<TargetSelection, ValidationError> {
    if on.is_empty() {
        return Err(ValidationError::new(format!(
            "{kind} needs targets, roles or environments {why}"
        )));
    }
    Ok(on)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionArgs {
    #[serde(default)]
    package_versions_to_keep: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventArchiveArgs {
    older_than_secs: u64,
}

/// A kind that takes no arguments: `{}` only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptArgs {
    script: String,
    timeout_secs: Option<u64>,
    #[serde(default)]
    shell: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
}

impl TaskKind {
    pub const NAMES: [&'static str; 10] = [
        "Sleep",
        "AdHocScript",
        "HealthCheck",
        "PushFile",
        "PullFile",
        "Deploy",
        "RunbookRun",
        "PackageReindex",
        "Retention",
        "EventArchive",
    ];

    /// Parses and validates `kind` with its `arguments` as they arrive over the API.
    pub fn parse(kind: &str, arguments: &Value) -> Result<Self, ValidationError> {
        let bad = |e: serde_json::Error| ValidationError::new(format!("{kind} arguments: {e}"));
        if !arguments.is_object() && Self::NAMES.contains(&kind) {
            return Err(ValidationError::new(format!(
                "{kind} arguments must be a JSON object"
            )));
        }
        match kind {
            "Sleep" => {
                let a: SleepArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                if a.duration_ms > MAX_SLEEP_MS {
                    return Err(ValidationError::new(format!(
                        "Sleep duration_ms {} is too large: at most {MAX_SLEEP_MS}",
                        a.duration_ms
                    )));
                }
                Ok(TaskKind::Sleep {
                    duration_ms: a.duration_ms,
                })
            }
            "AdHocScript" => {
                let a: ScriptArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                if a.script.trim().is_empty() {
                    return Err(ValidationError::new("AdHocScript script is empty"));
                }
                if a.script.len() > MAX_SCRIPT_LEN {
                    return Err(ValidationError::new(format!(
                        "AdHocScript script is too long: at most {MAX_SCRIPT_LEN} bytes"
                    )));
                }
                if a.script.contains('\0') {
                    return Err(ValidationError::new(
                        "AdHocScript script contains a NUL byte",
                    ));
                }
                if let Some(t) = a.timeout_secs {
                    if t == 0 || t > MAX_SCRIPT_TIMEOUT_SECS {
                        return Err(ValidationError::new(format!(
                            "AdHocScript timeout_secs must be 1..={MAX_SCRIPT_TIMEOUT_SECS}"
                        )));
                    }
                }
                let on = selection(kind, &a.targets, a.roles, a.environments)?;
                if let Some(shell) = &a.shell {
                    if !matches!(shell.as_str(), "sh" | "bash" | "pwsh") {
                        return Err(ValidationError::new(format!(
                            "AdHocScript shell {shell:?} is not one of sh, bash, pwsh"
                        )));
                    }
                    if on.is_empty() {
                        return Err(ValidationError::new(
                            "AdHocScript shell applies to targets; on the node scripts run with /bin/sh",
                        ));
                    }
                }
                Ok(TaskKind::AdHocScript {
                    script: a.script,
                    timeout_secs: a.timeout_secs,
                    shell: a.shell,
                    on,
                })
            }
            "PushFile" => {
                let a: PushFileArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                validate_relative_path("PushFile source", &a.source)?;
                validate_push_source(&a.source)?;
                validate_relative_path("PushFile destination", &a.destination)?;
                let on = selection(kind, &a.targets, a.roles, a.environments)?;
                let on = on_targets(kind, on, "to send the file to")?;
                Ok(TaskKind::PushFile {
                    source: a.source,
                    destination: a.destination,
                    on,
                })
            }
            "PullFile" => {
                let a: PullFileArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                validate_relative_path("PullFile source", &a.source)?;
                let on = selection(kind, &a.targets, a.roles, a.environments)?;
                let on = on_targets(kind, on, "to collect the file from")?;
                Ok(TaskKind::PullFile {
                    source: a.source,
                    on,
                })
            }
            "HealthCheck" => {
                let a: HealthCheckArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                Ok(TaskKind::HealthCheck {
                    on: selection(kind, &a.targets, Vec::new(), a.environments)?,
                })
            }
            "Deploy" => {
                let a: DeployArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                Ok(TaskKind::Deploy(a))
            }
            "RunbookRun" => {
                let a: RunbookArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                Ok(TaskKind::RunbookRun(a))
            }
            "PackageReindex" => {
                let _: NoArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                Ok(TaskKind::PackageReindex)
            }
            "Retention" => {
                let a: RetentionArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                Ok(TaskKind::Retention {
                    package_versions_to_keep: a.package_versions_to_keep,
                })
            }
            "EventArchive" => {
                let a: EventArchiveArgs = serde_json::from_value(arguments.clone()).map_err(bad)?;
                if a.older_than_secs < 60 {
                    return Err(ValidationError::new(
                        "EventArchive older_than_secs: at least 60",
                    ));
                }
                Ok(TaskKind::EventArchive {
                    older_than_secs: a.older_than_secs,
                })
            }
            other => Err(ValidationError::new(format!(
                "unknown task kind {other:?}: expected one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Sleep { .. } => "Sleep",
            TaskKind::AdHocScript { .. } => "AdHocScript",
            TaskKind::HealthCheck { .. } => "HealthCheck",
            TaskKind::PushFile { .. } => "PushFile",
            TaskKind::PullFile { .. } => "PullFile",
            TaskKind::Deploy(_) => "Deploy",
            TaskKind::RunbookRun(_) => "RunbookRun",
            TaskKind::PackageReindex => "PackageReindex",
            TaskKind::Retention { .. } => "Retention",
            TaskKind::EventArchive { .. } => "EventArchive",
        }
    }

    pub fn arguments(&self) -> Value {
        match self {
            TaskKind::Sleep { duration_ms } => serde_json::json!({ "duration_ms": duration_ms }),
            TaskKind::AdHocScript {
                script,
                timeout_secs,
                on,
                shell,
            } => {
                let mut v = serde_json::json!({ "script": script });
                if let Some(t) = timeout_secs {
                    v["timeout_secs"] = (*t).into();
                }
                if let Some(s) = shell {
                    v["shell"] = s.clone().into();
                }
                on.add_to(&mut v);
                v
            }
            TaskKind::HealthCheck { on } => {
                let mut v = serde_json::json!({});
                on.add_to(&mut v);
                v
            }
            TaskKind::PushFile {
                source,
                destination,
                on,
            } => {
                let mut v = serde_json::json!({ "source": source, "destination": destination });
                on.add_to(&mut v);
                v
            }
            TaskKind::PullFile { source, on } => {
                let mut v = serde_json::json!({ "source": source });
                on.add_to(&mut v);
                v
            }
            TaskKind::Deploy(a) => serde_json::to_value(a).unwrap_or(Value::Null),
            TaskKind::RunbookRun(a) => serde_json::to_value(a).unwrap_or(Value::Null),
            TaskKind::PackageReindex => serde_json::json!({}),
            TaskKind::Retention {
                package_versions_to_keep,
            } => serde_json::json!({ "package_versions_to_keep": package_versions_to_keep }),
            TaskKind::EventArchive { older_than_secs } => {
                serde_json::json!({ "older_than_secs": older_than_secs })
            }
        }
    }

    /// The scope a caller needs to queue (or cancel) a task of this kind. Deployers deploy
    /// releases and run runbooks through their lifecycles; running arbitrary scripts or moving
    /// files (on a node or on targets) and the cluster's own maintenance are an operator's —
    /// and moving audit events out of the database an admin's.
    pub fn queue_scope(&self) -> crate::Scope {
        kind_queue_scope(self.name())
    }

    /// Whether a task of this kind may run again after its node was lost mid-run. Deployments
    /// and scripts never are: running them twice can do harm. Only idempotent system work is.
    pub fn retry_safe(&self) -> bool {
        match self {
            TaskKind::Sleep { .. }
            | TaskKind::AdHocScript { .. }
            | TaskKind::Deploy(_)
            | TaskKind::RunbookRun(_) => false,
            // Only reads the targets and records what it saw: running it again is harmless.
            TaskKind::HealthCheck { .. } => true,
            // A file is put in place whole or not at all; sending it again gives the same file.
            TaskKind::PushFile { .. } | TaskKind::PullFile { .. } => true,
            // Compares files with rows and repairs the difference: running it again finds none.
            TaskKind::PackageReindex => true,
            // Each decides from what is there now and removes only what is still there.
            TaskKind::Retention { .. } | TaskKind::EventArchive { .. } => true,
        }
    }
}

/// The shared-store folders a `PushFile` may send from: packages and artifacts — never task
/// logs, the audit archive or what a node has in progress.
const PUSH_SOURCES: [&str; 2] = ["Packages/", "Artifacts/"];

fn validate_push_source(source: &str) -> Result<(), ValidationError> {
    if PUSH_SOURCES.iter().any(|p| source.starts_with(p))
        && !source.split('/').any(|part| part == "InProgress")
    {
        Ok(())
    } else {
        Err(ValidationError::new(format!(
            "PushFile source {source:?}: files are sent from {} only",
            PUSH_SOURCES.join(" or ")
        )))
    }
}

/// Who may queue or cancel each kind of task, by its name (see [`TaskKind::queue_scope`]); an
/// unknown kind needs `admin`.
pub fn kind_queue_scope(kind: &str) -> crate::Scope {
    use crate::Scope;
    match kind {
        "Sleep" | "HealthCheck" | "Deploy" | "RunbookRun" => Scope::Deployer,
        "AdHocScript" | "PushFile" | "PullFile" | "PackageReindex" | "Retention" => Scope::Operator,
        _ => Scope::Admin,
    }
}

/// Body of `POST /api/tasks`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub kind: TaskKind,
    pub description: String,
    pub concurrency_tag: Option<String>,
}

/// The body of `POST /api/tasks`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawNewTask {
    /// The task's kind (`Sleep`, `AdHocScript`, `HealthCheck`, …), whatever its case.
    kind: String,
    /// The kind's arguments (an object; absent: none).
    #[serde(default)]
    arguments: Option<Value>,
    /// Shown in lists; the kind's name when absent.
    description: Option<String>,
    /// Tasks with the same tag never run at once.
    concurrency_tag: Option<String>,
}

/// A new task's body is what [`NewTask::from_json`] reads.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for NewTask {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NewTask".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RawNewTask::json_schema(g)
    }
}

impl NewTask {
    /// Parses the JSON body of `POST /api/tasks`.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let raw: RawNewTask = serde_json::from_slice(body)
            .map_err(|e| ValidationError::new(format!("invalid task body: {e}")))?;
        let args = raw
            .arguments
            .unwrap_or_else(|| Value::Object(Default::default()));
        let kind = TaskKind::parse(&raw.kind, &args)?;
        let description = raw.description.unwrap_or_else(|| kind.name().to_owned());
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(ValidationError::new(format!(
                "description is too long: at most {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        let concurrency_tag = match raw.concurrency_tag {
            Some(t) if t.trim().is_empty() => {
                return Err(ValidationError::new("concurrency_tag is empty"))
            }
            Some(t) if t.len() > MAX_TAG_LEN => {
                return Err(ValidationError::new(format!(
                    "concurrency_tag is too long: at most {MAX_TAG_LEN} bytes"
                )))
            }
            other => other,
        };
        Ok(NewTask {
            kind,
            description,
            concurrency_tag,
        })
    }
}

/// A task as stored. `claim_epoch` grows with every claim; a worker's writes are fenced on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TaskRecord {
    pub id: TaskId,
    pub kind: String,
    pub arguments: Value,
    pub state: TaskState,
    pub description: String,
    pub concurrency_tag: Option<String>,
    pub node: Option<String>,
    pub claim_epoch: i64,
    #[serde(serialize_with = "crate::time::ser_time")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::time::Rfc3339"))]
    pub queued_at: UnixMs,
    #[serde(serialize_with = "crate::time::ser_opt_time")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::time::Rfc3339>"))]
    pub started_at: Option<UnixMs>,
    #[serde(serialize_with = "crate::time::ser_opt_time")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::time::Rfc3339>"))]
    pub completed_at: Option<UnixMs>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_ids_round_trip() {
        let id: TaskId = "ServerTasks-42".parse().unwrap();
        assert_eq!(id, TaskId(42));
        assert_eq!(id.to_string(), "ServerTasks-42");
        for bad in [
            "42",
            "ServerTasks-",
            "ServerTasks--1",
            "ServerTasks-0",
            "ServerTasks-x",
        ] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_valid_tasks() {
        let t = NewTask::from_json(br#"{"kind":"Sleep","arguments":{"duration_ms":5}}"#).unwrap();
        assert_eq!(t.kind, TaskKind::Sleep { duration_ms: 5 });
        assert_eq!(t.description, "Sleep");
        let t = NewTask::from_json(
            br#"{"kind":"AdHocScript","arguments":{"script":"echo hi","timeout_secs":3},"concurrency_tag":"p/e","description":"d"}"#,
        )
        .unwrap();
        assert_eq!(
            t.kind,
            TaskKind::AdHocScript {
                script: "echo hi".into(),
                timeout_secs: Some(3),
                on: TargetSelection::default(),
                shell: None,
            }
        );
        assert_eq!(t.concurrency_tag.as_deref(), Some("p/e"));
        assert!(TaskKind::parse("Sleep", &t.kind.arguments()).is_err());
        assert_eq!(
            TaskKind::parse("AdHocScript", &t.kind.arguments()).unwrap(),
            t.kind
        );
        // On targets: the selection survives the round trip through the database's JSON.
        let args = serde_json::json!({"script": "uptime", "targets": ["Machines-2"],
                                      "roles": ["web"], "environments": ["Production"]});
        let kind = TaskKind::parse("AdHocScript", &args).unwrap();
        let TaskKind::AdHocScript { on, .. } = &kind else {
            panic!("{kind:?}")
        };
        assert_eq!(on.targets, vec![TargetId(2)]);
        assert_eq!(
            TaskKind::parse("AdHocScript", &kind.arguments()).unwrap(),
            kind
        );
        let bad = serde_json::json!({"script": "x", "targets": ["web-1"]});
        let err = TaskKind::parse("AdHocScript", &bad).unwrap_err();
        assert!(err.0.contains("not a target id"), "{}", err.0);
    }

    #[test]
    fn rejects_bad_tasks_with_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "invalid task body"),
            (br#"{"kind":"Nope"}"#, "unknown task kind"),
            (
                br#"{"kind":"Sleep","arguments":{"duration_ms":-1}}"#,
                "Sleep arguments",
            ),
            (
                br#"{"kind":"Sleep","arguments":{"duration_ms":1e30}}"#,
                "Sleep arguments",
            ),
            (
                br#"{"kind":"Sleep","arguments":{"duration_ms":999999999999}}"#,
                "too large",
            ),
            (br#"{"kind":"Sleep","arguments":{}}"#, "missing field"),
            (
                br#"{"kind":"AdHocScript","arguments":{"script":"  "}}"#,
                "empty",
            ),
            (
                br#"{"kind":"AdHocScript","arguments":{"script":"x","timeout_secs":0}}"#,
                "timeout",
            ),
            (
                br#"{"kind":"Sleep","arguments":{"duration_ms":1},"extra":1}"#,
                "unknown field",
            ),
            (
                br#"{"kind":"Sleep","arguments":{"duration_ms":1},"concurrency_tag":""}"#,
                "empty",
            ),
            // Files go to targets from the repository and artifacts, nothing else.
            (
                br#"{"kind":"PushFile","arguments":{"source":"TaskLogs/ServerTasks-1.log","destination":"x","targets":["Machines-1"]}}"#,
                "Packages/ or Artifacts/ only",
            ),
            (
                br#"{"kind":"PushFile","arguments":{"source":"EventExports/2026/01/01.jsonl.gz","destination":"x","targets":["Machines-1"]}}"#,
                "Packages/ or Artifacts/ only",
            ),
            (
                br#"{"kind":"PushFile","arguments":{"source":"Packages/InProgress/n1/x","destination":"x","targets":["Machines-1"]}}"#,
                "Packages/ or Artifacts/ only",
            ),
        ];
        for (body, want) in cases {
            let err = NewTask::from_json(body).unwrap_err();
            assert!(
                err.0.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(TaskKind::parse("Sleep", &json!([1])).is_err());
    }

    /// Deployments, runbooks, scripts and sleeps are never run twice; the six kinds of
    /// idempotent system work are (docs/operations.md, "Lost nodes").
    #[test]
    fn only_idempotent_system_work_is_retry_safe() {
        let kinds = [
            ("Sleep", json!({"duration_ms": 1}), false),
            ("AdHocScript", json!({"script": "echo"}), false),
            ("HealthCheck", json!({}), true),
            ("PackageReindex", json!({}), true),
            ("Retention", json!({}), true),
            ("EventArchive", json!({"older_than_secs": 86400}), true),
            (
                "PushFile",
                json!({"source": "Packages/a.zip", "destination": "a.zip", "targets": ["Machines-1"]}),
                true,
            ),
            (
                "PullFile",
                json!({"source": "a.log", "targets": ["Machines-1"]}),
                true,
            ),
        ];
        for (kind, args, safe) in kinds {
            let k = TaskKind::parse(kind, &args).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(k.retry_safe(), safe, "{kind}");
        }
    }
}

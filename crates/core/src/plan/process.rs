//! A project's deployment process: ordered steps, each run on the targets of its roles (or on
//! the node), under a condition, at most N targets at a time.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::target::validate_tags;
use crate::{ValidationError, MAX_SCRIPT_LEN, MAX_SCRIPT_TIMEOUT_SECS};

/// Most steps in one process.
pub const MAX_STEPS: usize = 100;
const MAX_STEP_NAME_LEN: usize = 200;
/// A step's script may run this long unless it says otherwise.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 3600;

/// When a step runs, given how the deployment has gone so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Only while every earlier step that ran succeeded (the default).
    #[default]
    Success,
    /// Whatever happened before (clean-up, notifications).
    Always,
    /// Only once an earlier step has failed (roll back, alert).
    Failure,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// An inline script, with `#{Variable}` substitution.
    Script {
        script: String,
        /// `sh` (default), `bash` or `pwsh`.
        #[serde(default = "default_shell")]
        shell: String,
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
    },
    /// Sends a package from the built-in repository to each target (unless it already holds
    /// it), unpacks it into `Applications/{environment}/{package_id}/{version}`, replaces
    /// `#{Variable}`s in the files `substitute_in_files` names, runs the package's own
    /// `deploy.sh` if it has one, then `script` if given — both in the unpacked folder.
    DeployPackage {
        package_id: String,
        /// The version to deploy; the newest when a release is made without one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        substitute_in_files: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script: Option<String>,
        #[serde(default = "default_shell")]
        shell: String,
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
    },
}

impl Action {
    /// The script's shell and time limit (a package step's `deploy.sh` and script share them).
    pub fn shell_and_limit(&self) -> (&str, u64) {
        match self {
            Action::Script {
                shell,
                timeout_secs,
                ..
            }
            | Action::DeployPackage {
                shell,
                timeout_secs,
                ..
            } => (shell, *timeout_secs),
        }
    }
}

fn check_script(
    at: &str,
    script: &str,
    shell: &str,
    timeout_secs: u64,
) -> Result<(), ValidationError> {
    if script.trim().is_empty() || script.len() > MAX_SCRIPT_LEN {
        return Err(ValidationError::new(format!(
            "{at}.action.script: 1 byte to {} KiB",
            MAX_SCRIPT_LEN / 1024
        )));
    }
    if !["sh", "bash", "pwsh"].contains(&shell) {
        return Err(ValidationError::new(format!(
            "{at}.action.shell: sh, bash or pwsh, not {shell:?}"
        )));
    }
    if !(1..=MAX_SCRIPT_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(ValidationError::new(format!(
            "{at}.action.timeout_secs: 1 to {MAX_SCRIPT_TIMEOUT_SECS}"
        )));
    }
    Ok(())
}

fn default_shell() -> String {
    "sh".to_owned()
}

fn default_timeout() -> u64 {
    DEFAULT_STEP_TIMEOUT_SECS
}

/// One step of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// The step runs on every target of the environment with any of these roles; with none, on
    /// the node running the deployment.
    #[serde(default)]
    pub target_roles: Vec<String>,
    pub action: Action,
    #[serde(default)]
    pub condition: Condition,
    /// Starts together with the step before it instead of after it.
    #[serde(default)]
    pub parallel_with_previous: bool,
    /// Rolling: at most this many targets at a time (all at once when absent).
    #[serde(default)]
    pub max_parallel_targets: Option<u32>,
    /// Environment ids the step runs in; all when empty.
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The steps of a deployment process, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Process {
    #[serde(default)]
    pub steps: Vec<Step>,
}

impl Process {
    /// Checks every step; errors name the step and field (`steps[2].name: …`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.steps.len() > MAX_STEPS {
            return Err(ValidationError::new(format!("steps: at most {MAX_STEPS}")));
        }
        let mut names = HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            let name = step.name.trim();
            if name.is_empty()
                || name != step.name
                || name.chars().count() > MAX_STEP_NAME_LEN
                || name.chars().any(char::is_control)
            {
                return Err(ValidationError::new(format!(
                    "{at}.name: 1 to {MAX_STEP_NAME_LEN} characters, no leading or trailing \
                     spaces, no control characters"
                )));
            }
            // Output variables are addressed by step name: `#{Output.<step>.<name>}`.
            if name.contains('#') || name.contains('{') || name.contains('}') {
                return Err(ValidationError::new(format!(
                    "{at}.name: may not contain '#', '{{' or '}}'"
                )));
            }
            if !names.insert(name.to_lowercase()) {
                return Err(ValidationError::new(format!(
                    "{at}.name: another step is named {name:?}"
                )));
            }
            validate_tags(&format!("{at}.target_roles"), &step.target_roles)?;
            if step.max_parallel_targets == Some(0) {
                return Err(ValidationError::new(format!(
                    "{at}.max_parallel_targets: at least 1 (leave it out for all at once)"
                )));
            }
            if i == 0 && step.parallel_with_previous {
                return Err(ValidationError::new(format!(
                    "{at}.parallel_with_previous: the first step has no step before it"
                )));
            }
            match &step.action {
                Action::Script {
                    script,
                    shell,
                    timeout_secs,
                } => check_script(&at, script, shell, *timeout_secs)?,
                Action::DeployPackage {
                    package_id,
                    version,
                    substitute_in_files,
                    script,
                    shell,
                    timeout_secs,
                } => {
                    let field = |f: &str, e: ValidationError| {
                        ValidationError::new(format!("{at}.action.{f}: {}", e.0))
                    };
                    crate::validate_package_id(package_id).map_err(|e| field("package_id", e))?;
                    if let Some(v) = version {
                        crate::parse_package_version(v).map_err(|e| field("version", e))?;
                    }
                    if substitute_in_files.len() > crate::MAX_GLOBS {
                        return Err(ValidationError::new(format!(
                            "{at}.action.substitute_in_files: at most {}",
                            crate::MAX_GLOBS
                        )));
                    }
                    for g in substitute_in_files {
                        crate::validate_glob(&format!("{at}.action.substitute_in_files"), g)?;
                    }
                    // The shell and limit apply to `deploy.sh` even without a script.
                    check_script(
                        &at,
                        script.as_deref().unwrap_or("true"),
                        shell,
                        *timeout_secs,
                    )?;
                    if step.target_roles.is_empty() {
                        return Err(ValidationError::new(format!(
                            "{at}.target_roles: a package is deployed to targets; name their roles"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn step(name: &str) -> Step {
        Step {
            name: name.into(),
            target_roles: vec!["web".into()],
            action: Action::Script {
                script: "echo hi".into(),
                shell: "sh".into(),
                timeout_secs: 60,
            },
            condition: Condition::Success,
            parallel_with_previous: false,
            max_parallel_targets: None,
            environments: vec![],
            enabled: true,
        }
    }

    #[test]
    fn a_step_reads_with_its_defaults_and_refuses_unknown_fields() {
        let s: Step = serde_json::from_str(
            r#"{"name": "Deploy", "action": {"type": "script", "script": "echo"}}"#,
        )
        .unwrap();
        assert_eq!(s.condition, Condition::Success);
        assert!(s.enabled && !s.parallel_with_previous && s.target_roles.is_empty());
        assert_eq!(
            s.action,
            Action::Script {
                script: "echo".into(),
                shell: "sh".into(),
                timeout_secs: DEFAULT_STEP_TIMEOUT_SECS
            }
        );
        let e = serde_json::from_str::<Step>(
            r#"{"name": "D", "action": {"type": "script", "script": "x"}, "retries": 3}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("retries"), "{e}");
        let e = serde_json::from_str::<Step>(r#"{"name": "D", "action": {"type": "package"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("package"), "{e}");
    }

    #[test]
    fn processes_are_checked_step_by_step_naming_the_field() {
        let ok = Process {
            steps: vec![step("One"), step("Two")],
        };
        ok.validate().unwrap();
        type Change = Box<dyn Fn(&mut Vec<Step>)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|s| s[1].name = "one".into()),
                "steps[1].name: another step",
            ),
            (Box::new(|s| s[0].name = " One".into()), "steps[0].name"),
            (
                Box::new(|s| s[0].name = "A#{B}".into()),
                "steps[0].name: may not contain",
            ),
            (
                Box::new(|s| s[1].max_parallel_targets = Some(0)),
                "steps[1].max_parallel_targets",
            ),
            (
                Box::new(|s| s[0].parallel_with_previous = true),
                "steps[0].parallel_with_previous",
            ),
            (
                Box::new(|s| s[1].target_roles = vec!["".into()]),
                "steps[1].target_roles",
            ),
            (
                Box::new(|s| {
                    s[0].action = Action::Script {
                        script: " ".into(),
                        shell: "sh".into(),
                        timeout_secs: 1,
                    }
                }),
                "steps[0].action.script",
            ),
            (
                Box::new(|s| {
                    s[0].action = Action::Script {
                        script: "x".into(),
                        shell: "cmd".into(),
                        timeout_secs: 1,
                    }
                }),
                "steps[0].action.shell",
            ),
            (
                Box::new(|s| {
                    s[0].action = Action::Script {
                        script: "x".into(),
                        shell: "sh".into(),
                        timeout_secs: 0,
                    }
                }),
                "steps[0].action.timeout_secs",
            ),
        ];
        for (change, says) in cases {
            let mut p = ok.clone();
            change(&mut p.steps);
            let e = p.validate().unwrap_err();
            assert!(e.0.starts_with(says), "{} should start with {says}", e.0);
        }
        let many = Process {
            steps: (0..=MAX_STEPS).map(|i| step(&format!("S{i}"))).collect(),
        };
        assert!(many.validate().is_err());
    }

    #[test]
    fn a_package_step_names_a_valid_package_safe_globs_and_roles() {
        let parse = |json: &str| {
            let step: Step = serde_json::from_str(json).unwrap();
            Process { steps: vec![step] }.validate()
        };
        let ok = r#"{"name": "P", "target_roles": ["web"], "action": {"type": "deploy-package",
            "package_id": "Acme.Web", "version": "1.2.0", "substitute_in_files": ["**/*.json"],
            "script": "./start.sh"}}"#;
        parse(ok).unwrap();
        let step: Step = serde_json::from_str(ok).unwrap();
        assert_eq!(
            step.action.shell_and_limit(),
            ("sh", DEFAULT_STEP_TIMEOUT_SECS)
        );
        for (json, field) in [
            (
                r#"{"name": "P", "action": {"type": "deploy-package", "package_id": "A"}}"#,
                "target_roles",
            ),
            (
                r#"{"name": "P", "target_roles": ["w"], "action": {"type": "deploy-package", "package_id": "../A"}}"#,
                "package_id",
            ),
            (
                r#"{"name": "P", "target_roles": ["w"], "action": {"type": "deploy-package", "package_id": "A", "version": "1.0"}}"#,
                "version",
            ),
            (
                r#"{"name": "P", "target_roles": ["w"], "action": {"type": "deploy-package", "package_id": "A", "substitute_in_files": ["../x"]}}"#,
                "substitute_in_files",
            ),
            (
                r#"{"name": "P", "target_roles": ["w"], "action": {"type": "deploy-package", "package_id": "A", "shell": "zsh"}}"#,
                "shell",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.0.contains(field), "{json}: {e}");
        }
    }
}

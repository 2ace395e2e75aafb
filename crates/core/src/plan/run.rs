//! How a deployment runs its process: which steps start together, whether each runs given how
//! the deployment has gone, on which targets, and in which rolling batches.

use std::cmp::Ordering;

use super::process::{Condition, Step};
use crate::TargetRecord;

/// Whether a step runs, decided when its group starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Skipped, and why (shown in the task log).
    Skip(String),
}

/// Decides a step: `failed` says whether any step that ran before this step's group failed.
pub fn decide(step: &Step, environment_id: &str, skip_steps: &[String], failed: bool) -> Decision {
    if !step.enabled {
        return Decision::Skip("disabled".into());
    }
    if !step.environments.is_empty() && !step.environments.iter().any(|e| e == environment_id) {
        return Decision::Skip("not run in this environment".into());
    }
    if skip_steps
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&step.name))
    {
        return Decision::Skip("skipped for this deployment".into());
    }
    match (step.condition, failed) {
        (Condition::Success, true) => Decision::Skip("an earlier step failed".into()),
        (Condition::Failure, false) => Decision::Skip("no earlier step failed".into()),
        _ => Decision::Run,
    }
}

/// The steps that start together, as indexes: a step with `parallel_with_previous` joins the
/// group of the step before it.
pub fn groups(steps: &[Step]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match out.last_mut() {
            Some(group) if s.parallel_with_previous => group.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<'a> {
    /// A step without target roles runs on the node running the deployment.
    OnNode,
    /// On these targets, by name (none may match: the step then fails, saying so).
    Targets(Vec<&'a TargetRecord>),
}

/// The targets a step runs on, chosen when it starts: those in the environment (by name,
/// whatever its case) with any of the step's roles, within `only` (target names) when the
/// deployment names some; sorted by name.
pub fn place<'a>(
    step: &Step,
    environment_name: &str,
    targets: &'a [TargetRecord],
    only: &[String],
) -> Placement<'a> {
    if step.target_roles.is_empty() {
        return Placement::OnNode;
    }
    let mut chosen: Vec<&TargetRecord> = targets
        .iter()
        .filter(|t| {
            t.environments
                .iter()
                .any(|e| e.eq_ignore_ascii_case(environment_name))
        })
        .filter(|t| t.roles.iter().any(|r| step.target_roles.contains(r)))
        .filter(|t| only.is_empty() || only.iter().any(|o| o == &t.name))
        .collect();
    chosen.sort_by(|a, b| a.name.cmp(&b.name).then(Ordering::Equal));
    Placement::Targets(chosen)
}

/// Rolling batches of at most `max` (all in one batch when `None`).
pub fn batches<T>(items: Vec<T>, max: Option<u32>) -> Vec<Vec<T>> {
    let size = max.map_or(usize::MAX, |m| m.max(1) as usize);
    let mut out = Vec::new();
    let mut current = Vec::new();
    for item in items {
        current.push(item);
        if current.len() == size {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::process::Action;
    use crate::{Comms, TargetHealth, TargetId};

    fn step(name: &str, condition: Condition) -> Step {
        Step {
            name: name.into(),
            target_roles: vec!["web".into()],
            action: Action::Script {
                script: "x".into(),
                shell: "sh".into(),
                timeout_secs: 1,
            },
            condition,
            parallel_with_previous: false,
            max_parallel_targets: None,
            environments: vec![],
            enabled: true,
        }
    }

    fn target(name: &str, envs: &[&str], roles: &[&str]) -> TargetRecord {
        TargetRecord {
            id: TargetId(1),
            name: name.into(),
            environments: envs.iter().map(|s| (*s).to_owned()).collect(),
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            comms: Comms::Polling,
            endpoint: None,
            thumbprint: String::new(),
            health: TargetHealth::Healthy,
            health_reason: None,
            last_health_check: None,
            connected_nodes: vec![],
            cluster_trust: vec![],
        }
    }

    #[test]
    fn conditions_decide_on_how_the_deployment_has_gone() {
        use Condition::*;
        for (cond, failed, runs) in [
            (Success, false, true),
            (Success, true, false),
            (Always, false, true),
            (Always, true, true),
            (Failure, false, false),
            (Failure, true, true),
        ] {
            let d = decide(&step("S", cond), "Env-1", &[], failed);
            assert_eq!(d == Decision::Run, runs, "{cond:?} failed={failed}: {d:?}");
        }
        let mut off = step("S", Always);
        off.enabled = false;
        assert_eq!(
            decide(&off, "Env-1", &[], false),
            Decision::Skip("disabled".into())
        );
        let mut only_prod = step("S", Always);
        only_prod.environments = vec!["Env-3".into()];
        assert!(matches!(
            decide(&only_prod, "Env-1", &[], false),
            Decision::Skip(_)
        ));
        assert_eq!(decide(&only_prod, "Env-3", &[], false), Decision::Run);
        assert_eq!(
            decide(
                &step("Migrate", Always),
                "Env-1",
                &["migrate".into()],
                false
            ),
            Decision::Skip("skipped for this deployment".into())
        );
    }

    #[test]
    fn parallel_steps_join_the_group_before_them() {
        let mut s: Vec<Step> = ["A", "B", "C", "D", "E"]
            .iter()
            .map(|n| step(n, Condition::Success))
            .collect();
        s[1].parallel_with_previous = true;
        s[2].parallel_with_previous = true;
        s[4].parallel_with_previous = true;
        assert_eq!(groups(&s), vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(groups(&s[..1]), vec![vec![0]]);
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn steps_run_on_the_environment_s_targets_with_their_roles() {
        let targets = vec![
            target("web-2", &["Production"], &["web"]),
            target("web-1", &["production"], &["web", "api"]),
            target("db-1", &["Production"], &["db"]),
            target("web-t", &["Test"], &["web"]),
        ];
        let names = |p: Placement<'_>| match p {
            Placement::OnNode => vec!["<node>".to_owned()],
            Placement::Targets(t) => t.iter().map(|t| t.name.clone()).collect(),
        };
        let web = step("S", Condition::Success);
        assert_eq!(
            names(place(&web, "Production", &targets, &[])),
            ["web-1", "web-2"]
        );
        assert_eq!(names(place(&web, "Test", &targets, &[])), ["web-t"]);
        assert_eq!(
            names(place(&web, "Production", &targets, &["web-2".into()])),
            ["web-2"]
        );
        assert!(names(place(&web, "Development", &targets, &[])).is_empty());
        let mut both = web.clone();
        both.target_roles = vec!["db".into(), "api".into()];
        assert_eq!(
            names(place(&both, "Production", &targets, &[])),
            ["db-1", "web-1"]
        );
        let mut node = web;
        node.target_roles.clear();
        assert_eq!(names(place(&node, "Production", &targets, &[])), ["<node>"]);
    }

    #[test]
    fn rolling_batches_hold_at_most_n() {
        assert_eq!(
            batches(vec![1, 2, 3, 4, 5], Some(2)),
            vec![vec![1, 2], vec![3, 4], vec![5]]
        );
        assert_eq!(batches(vec![1, 2, 3], None), vec![vec![1, 2, 3]]);
        assert_eq!(batches(vec![1, 2], Some(5)), vec![vec![1, 2]]);
        assert_eq!(batches(Vec::<u8>::new(), Some(1)), Vec::<Vec<u8>>::new());
        assert_eq!(
            batches(vec![1, 2], Some(0)),
            vec![vec![1], vec![2]],
            "0 is taken as 1"
        );
    }
}

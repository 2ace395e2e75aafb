//! What retention removes, decided without I/O: releases a project no longer keeps, the
//! deployments whose logs and artifacts go, and package versions the repository no longer
//! keeps. Never anything a deployment still needs.

use std::collections::{HashMap, HashSet};

use crate::{SemVer, TaskId};

/// What retention needs to know of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFacts {
    pub release: i64,
    pub environment: String,
    pub task: TaskId,
    /// Finished (in any way).
    pub finished: bool,
    pub succeeded: bool,
}

/// The releases deployments still need (given newest first): one queued or running, and each
/// environment's latest and latest successful deployment (what is there now, and what a
/// redeploy would restore).
pub fn releases_in_use(newest_first: &[DeploymentFacts]) -> HashSet<i64> {
    let mut needed = HashSet::new();
    let (mut seen, mut seen_ok) = (HashSet::new(), HashSet::new());
    for d in newest_first {
        let latest = seen.insert(d.environment.as_str());
        if !d.finished || latest {
            needed.insert(d.release);
        }
        if d.succeeded && seen_ok.insert(d.environment.as_str()) {
            needed.insert(d.release);
        }
    }
    needed
}

/// Of a project's releases (oldest first), those to remove so the newest `keep` remain (0: all
/// remain), sparing those in use.
pub fn releases_to_remove(oldest_first: &[i64], keep: usize, in_use: &HashSet<i64>) -> Vec<i64> {
    if keep == 0 || oldest_first.len() <= keep {
        return Vec::new();
    }
    oldest_first[..oldest_first.len() - keep]
        .iter()
        .filter(|r| !in_use.contains(r))
        .copied()
        .collect()
}

/// The finished deployments (given newest first) whose logs and artifacts go: in each
/// environment, those of releases older than the newest `keep` releases deployed there (0:
/// none go).
pub fn tasks_losing_logs(newest_first: &[DeploymentFacts], keep: usize) -> Vec<TaskId> {
    if keep == 0 {
        return Vec::new();
    }
    let mut kept: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut out = Vec::new();
    for d in newest_first {
        let releases = kept.entry(d.environment.as_str()).or_default();
        if releases.contains(&d.release) {
            continue;
        }
        if releases.len() < keep {
            releases.push(d.release);
        } else if d.finished {
            out.push(d.task);
        }
    }
    out
}

/// Of one package id's versions, those to remove so the newest `keep` by SemVer precedence
/// remain (0: all remain), sparing those in use (by version key).
pub fn versions_to_remove(
    versions: &[(String, SemVer)],
    keep: usize,
    in_use: &HashSet<String>,
) -> Vec<String> {
    if keep == 0 || versions.len() <= keep {
        return Vec::new();
    }
    let mut sorted: Vec<&(String, SemVer)> = versions.iter().collect();
    sorted.sort_by(|a, b| b.1.precedence(&a.1));
    sorted[keep..]
        .iter()
        .filter(|(key, _)| !in_use.contains(key))
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(release: i64, env: &str, task: i64, finished: bool, succeeded: bool) -> DeploymentFacts {
        DeploymentFacts {
            release,
            environment: env.into(),
            task: TaskId(task),
            finished,
            succeeded,
        }
    }

    #[test]
    fn what_deployments_need_is_never_removed() {
        // Newest first: Prod runs 5 now (failed 4 before, 3 succeeded); Dev has 5.
        let ds = [
            d(5, "Prod", 9, false, false),
            d(4, "Prod", 8, true, false),
            d(3, "Prod", 7, true, true),
            d(5, "Dev", 6, true, true),
            d(2, "Prod", 5, true, true),
            d(1, "Dev", 4, true, true),
        ];
        let used = releases_in_use(&ds);
        assert_eq!(used, HashSet::from([5, 3]));
        assert_eq!(releases_to_remove(&[1, 2, 3, 4, 5], 1, &used), [1, 2, 4]);
        assert_eq!(releases_to_remove(&[1, 2, 3], 0, &used), Vec::<i64>::new());
        assert_eq!(releases_to_remove(&[1, 2], 2, &used), Vec::<i64>::new());
    }

    #[test]
    fn logs_go_for_releases_beyond_the_newest_per_environment() {
        let ds = [
            d(5, "Prod", 9, true, true),
            d(5, "Prod", 8, true, false),
            d(4, "Prod", 7, true, true),
            d(3, "Prod", 6, true, true),
            d(3, "Dev", 5, true, true),
            d(2, "Prod", 4, false, false),
            d(1, "Prod", 3, true, true),
        ];
        let gone = tasks_losing_logs(&ds, 2);
        assert_eq!(gone, [TaskId(6), TaskId(3)], "running ones keep theirs");
        assert!(tasks_losing_logs(&ds, 0).is_empty());
    }

    #[test]
    fn the_newest_package_versions_and_those_in_use_stay() {
        let v = |s: &str| (s.to_owned(), s.parse::<SemVer>().unwrap());
        let versions = [
            v("1.0.0"),
            v("1.10.0"),
            v("1.2.0"),
            v("2.0.0-beta.1"),
            v("1.9.0"),
        ];
        let used = HashSet::from(["1.0.0".to_owned()]);
        let mut gone = versions_to_remove(&versions, 2, &used);
        gone.sort();
        assert_eq!(gone, ["1.2.0", "1.9.0"]);
        assert!(versions_to_remove(&versions, 0, &used).is_empty());
    }
}

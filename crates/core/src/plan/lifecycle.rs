//! Lifecycles: whether a release may go to an environment yet, given where it has succeeded.

use std::collections::HashSet;

/// One phase, as the lifecycle stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseSpec {
    pub name: String,
    /// Environment ids.
    pub environments: Vec<String>,
    /// Successful environments needed before the next phase opens; 0: all of them.
    pub minimum: u32,
    pub optional: bool,
}

/// Why a release may not go to an environment yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    #[error("the environment is not in this project's lifecycle")]
    NotInLifecycle,
    #[error("phase {phase:?} must succeed first ({done} of {needed} environment(s) so far)")]
    PhaseNotComplete {
        phase: String,
        done: usize,
        needed: usize,
    },
}

/// The phases of a lifecycle; with none, one phase per environment of the space, in their
/// order (the default lifecycle).
pub fn effective_phases(
    phases: &[PhaseSpec],
    environments_in_order: &[(String, String)],
) -> Vec<PhaseSpec> {
    if !phases.is_empty() {
        return phases.to_vec();
    }
    environments_in_order
        .iter()
        .map(|(id, name)| PhaseSpec {
            name: name.clone(),
            environments: vec![id.clone()],
            minimum: 0,
            optional: false,
        })
        .collect()
}

/// Whether a release may be deployed to `environment` (an id), given the environments where
/// it has a successful deployment: every required phase before the environment's must be
/// complete. Going back to an earlier phase, or again to the same one, is always allowed.
pub fn check_promotion(
    phases: &[PhaseSpec],
    environment: &str,
    succeeded: &HashSet<String>,
) -> Result<(), PromotionError> {
    let index = phases
        .iter()
        .position(|p| p.environments.iter().any(|e| e == environment))
        .ok_or(PromotionError::NotInLifecycle)?;
    for p in &phases[..index] {
        if p.optional {
            continue;
        }
        let needed = if p.minimum == 0 {
            p.environments.len()
        } else {
            (p.minimum as usize).min(p.environments.len())
        };
        let done = p
            .environments
            .iter()
            .filter(|e| succeeded.contains(*e))
            .count();
        if done < needed {
            return Err(PromotionError::PhaseNotComplete {
                phase: p.name.clone(),
                done,
                needed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, envs: &[&str], minimum: u32, optional: bool) -> PhaseSpec {
        PhaseSpec {
            name: name.into(),
            environments: envs.iter().map(|s| (*s).to_owned()).collect(),
            minimum,
            optional,
        }
    }

    fn done(envs: &[&str]) -> HashSet<String> {
        envs.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_default_lifecycle_is_one_phase_per_environment_in_order() {
        let envs = vec![
            ("E1".to_owned(), "Dev".to_owned()),
            ("E2".to_owned(), "Test".to_owned()),
            ("E3".to_owned(), "Prod".to_owned()),
        ];
        let phases = effective_phases(&[], &envs);
        assert_eq!(
            phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["Dev", "Test", "Prod"]
        );
        assert!(check_promotion(&phases, "E1", &done(&[])).is_ok());
        assert_eq!(
            check_promotion(&phases, "E3", &done(&["E1"])),
            Err(PromotionError::PhaseNotComplete {
                phase: "Test".into(),
                done: 0,
                needed: 1
            })
        );
        assert!(check_promotion(&phases, "E3", &done(&["E1", "E2"])).is_ok());
        // Going back is always allowed.
        assert!(check_promotion(&phases, "E1", &done(&["E1", "E2", "E3"])).is_ok());
        let own = vec![phase("Only", &["E9"], 0, false)];
        assert_eq!(
            effective_phases(&own, &envs),
            own,
            "a lifecycle's own phases are kept"
        );
    }

    #[test]
    fn minimums_and_optional_phases_open_the_next_phase_early() {
        let phases = vec![
            phase("Dev", &["D1", "D2", "D3"], 2, false),
            phase("Canary", &["C"], 0, true),
            phase("Test", &["T1", "T2"], 0, false),
            phase("Prod", &["P"], 0, false),
        ];
        assert_eq!(
            check_promotion(&phases, "T1", &done(&["D1"])),
            Err(PromotionError::PhaseNotComplete {
                phase: "Dev".into(),
                done: 1,
                needed: 2
            })
        );
        assert!(
            check_promotion(&phases, "T1", &done(&["D1", "D3"])).is_ok(),
            "2 of 3 is enough, the optional phase does not hold it"
        );
        assert!(check_promotion(&phases, "C", &done(&["D1", "D2"])).is_ok());
        assert_eq!(
            check_promotion(&phases, "P", &done(&["D1", "D2", "T1"])),
            Err(PromotionError::PhaseNotComplete {
                phase: "Test".into(),
                done: 1,
                needed: 2
            }),
            "0 means every environment of the phase"
        );
        assert!(check_promotion(&phases, "P", &done(&["D1", "D2", "T1", "T2"])).is_ok());
        assert_eq!(
            check_promotion(&phases, "X", &done(&[])),
            Err(PromotionError::NotInLifecycle)
        );
        let msg = check_promotion(&phases, "P", &done(&[]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"Dev\"") && msg.contains("0 of 2"), "{msg}");
    }
}

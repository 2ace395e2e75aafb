//! The deployment planner, without I/O: a project's process and variables, a lifecycle and the
//! targets of an environment in; which steps run, where, in which batches, with which script
//! and environment, out. The task that runs a deployment asks it at each step and does only
//! the I/O.

pub mod lifecycle;
pub mod messages;
pub mod process;
pub mod run;
pub mod variables;

pub use lifecycle::{check_promotion, effective_phases, PhaseSpec, PromotionError};
pub use messages::{
    create_artifact_line, parse_create_artifact, parse_set_variable, validate_artifact_path,
    ArtifactRequest, SetVariable, MAX_ARTIFACT_NAME_LEN,
};
pub use process::{Action, Condition, Process, Step, DEFAULT_STEP_TIMEOUT_SECS, MAX_STEPS};
pub use run::{batches, decide, groups, place, Decision, Placement};
pub use variables::{
    env_name, environment, literal_values, mask, mask_piece, resolve, secrets, substitute,
    substitute_script, validate_variables, Context, Shell, StoredVariable, SubstitutionError,
    Value, Variable, VariableScope, MASK, MIN_MASKED_LEN,
};

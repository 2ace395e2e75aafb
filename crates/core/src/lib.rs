//! Cuttle's domain model. No I/O lives here: everything is plain data and pure functions that
//! every other crate (server roles, CLI, agent) can share.

mod capacity;
mod error;
mod event;
mod glob;
mod node;
mod package;
pub mod plan;
mod proxies;
pub mod retention;
mod role;
mod scope;
mod semver;
mod server_url;
mod target;
mod task;
mod time;

pub use capacity::{guide_baseline, plan_capacity, CapacityPlan};
pub use error::{ErrorCode, ValidationError};
pub use event::{EventRecord, NewEvent};
pub use glob::{glob_match, validate_glob, MAX_GLOBS};
pub use node::{validate_node_name, NodePatch, NodeRecord, MAX_TASK_CAP};
pub use package::{
    package_version_key, parse_package_version, validate_package_id, PackageFileName,
    PackageFormat, MAX_PACKAGE_ID_LEN,
};
pub use proxies::{canonical as canonical_ip, TrustedProxies};
pub use role::{Role, RoleSet};
pub use scope::{
    parse_lifetime, ApiKeyRequest, Scope, TargetGrant, MAX_KEY_LIFETIME_SECS, MAX_KEY_NAME_LEN,
};
pub use semver::{SemVer, MAX_VERSION_LEN};
pub use server_url::check_server_url;
pub use target::{
    normalize_thumbprint, validate_target_name, Comms, NewTarget, TargetHealth, TargetId,
    TargetPatch, TargetRecord,
};
pub use task::{
    kind_queue_scope, system_tag, validate_relative_path, DeployArgs, NewTask, RunbookArgs,
    TargetSelection, TaskId, TaskKind, TaskRecord, TaskState, MAX_DESCRIPTION_LEN, MAX_SCRIPT_LEN,
    MAX_SCRIPT_TIMEOUT_SECS, MAX_SLEEP_MS, MAX_TAG_LEN,
};
pub use time::{civil_date, days_from_civil, format_rfc3339_ms, parse_time, UnixMs, DAY_MS};

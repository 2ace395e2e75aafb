//! Storage: the only crate that speaks SQL or touches the shared file store.
//!
//! [`Store`] is one async API over every database dialect; nothing outside this crate knows which
//! dialect is in use. [`SharedStore`] is the shared file store's layout and task-log writer, and
//! [`MasterKey`] encrypts secrets at rest.

mod blob;
mod crypto;
mod db;
mod error;
mod keyring;
mod pins;
mod repository;
mod users;

pub use blob::{
    ArtifactFile, DayExport, Execution, IncomingFile, PackageFile, SharedStore, TaskLog,
    TaskLogWriter, DEFAULT_TASK_LOG_MAX_BYTES, SHARED_FOLDERS,
};
pub use crypto::api_keys::{
    generate_api_key, generate_session_id, key_prefix, ApiKeyHasher, HashedWith,
};
pub use crypto::passwords;
pub use crypto::{MasterKey, VariableKeys};
pub use db::{
    audit_as, database_kind, newest_package, redact_database_url, AddedPackage, ApiKeyRow, Audit,
    ClaimedTask, ClusterGauges, Completion, DatabaseKind, DeploymentFilter, DeploymentRecord,
    Document, DocumentWrite, FoundApiKey, LostNode, MigrationReport, NewApiKey, NewDeployment,
    NewPackage, NewRelease, NewSession, NodeHolder, NodeRegistration, NodeState, OwnedTask,
    PackageRecord, PoolState, Release, Revoke, SealedDataKeys, SessionOf, SessionRow, Store,
    StoreOptions, TaskCount, ToolConnection, Written, MAX_DOCUMENT_NAME_LEN, MAX_SESSION_SECS,
    SCHEMA_VERSION, SETTING_API_KEY_SECRET, SETTING_API_KEY_SECRET_PREVIOUS, SETTING_VARIABLE_KEY,
    SETTING_VARIABLE_KEY_PREVIOUS,
};
pub use error::Error;
pub use keyring::{Keyring, Keys, SETTING_MASTER_KEY_CHECK, SETTING_MASTER_KEY_ROTATED_AT};
pub use pins::{package_pins, PackagePin};
pub use repository::remove_package;
pub use users::{check_user_name, User, USER, USER_PREFIX};

pub type Result<T, E = Error> = std::result::Result<T, E>;

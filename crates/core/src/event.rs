use serde::Serialize;

use crate::UnixMs;

/// An audit event to record: who did what to which object, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The API key's name.
    pub actor: String,
    /// What was done, e.g. `task.create`, `task.cancel`, `node.update`, `node.delete`.
    pub action: String,
    /// The object: a task id or node name.
    pub target: String,
    /// The client, as believed under `CUTTLE_TRUSTED_PROXIES`.
    pub client_address: String,
    /// Further facts as JSON (e.g. the fields a PATCH changed).
    pub details: serde_json::Value,
}

/// An audit event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventRecord {
    pub id: String,
    #[serde(serialize_with = "crate::time::ser_time")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::time::Rfc3339"))]
    pub occurred_at: UnixMs,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub client_address: String,
    pub details: serde_json::Value,
}

use serde::{Deserialize, Serialize};

use crate::{UnixMs, ValidationError};

/// The largest task cap a node accepts. The guide calls 40–80 a reasonable maximum; anything
/// past this is a typo, not a plan.
pub const MAX_TASK_CAP: u32 = 1000;

/// A node as the registry knows it. `online` is derived from `last_seen` by the reader, using
/// its own offline timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodeRecord {
    pub name: String,
    pub roles: Vec<String>,
    pub version: String,
    pub task_cap: u32,
    pub draining: bool,
    pub online: bool,
    #[serde(serialize_with = "crate::time::ser_time")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::time::Rfc3339"))]
    pub last_seen: UnixMs,
    #[serde(serialize_with = "crate::time::ser_time")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::time::Rfc3339"))]
    pub started_at: UnixMs,
    pub running_tasks: u32,
    pub http_address: String,
    pub grpc_address: String,
    pub gateway_address: Option<String>,
    /// Whether the node could write the shared store at its last heartbeat.
    pub storage_ok: bool,
}

/// Body of `PATCH /api/nodes/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    /// Tasks the node runs at once, 0 to 1,000 (0: it serves the API and claims nothing).
    #[cfg_attr(feature = "schema", schemars(range(max = 1000)))]
    pub task_cap: Option<u32>,
    pub draining: Option<bool>,
}

impl NodePatch {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(cap) = self.task_cap {
            if cap > MAX_TASK_CAP {
                return Err(ValidationError::new(format!(
                    "task_cap {cap} is too large: at most {MAX_TASK_CAP}"
                )));
            }
        }
        if self.task_cap.is_none() && self.draining.is_none() {
            return Err(ValidationError::new(
                "nothing to change: give task_cap and/or draining",
            ));
        }
        Ok(())
    }
}

/// Node names appear in URLs, logs and error messages: keep them short and plain.
pub fn validate_node_name(name: &str) -> Result<(), ValidationError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    // A name of dots only would be `.` or `..` in the shared store's per-node folders.
    if name.is_empty() || name.len() > 100 || !ok_chars || name.chars().all(|c| c == '.') {
        return Err(ValidationError::new(format!(
            "invalid node name {name:?}: use 1-100 characters from A-Z a-z 0-9 . _ -, not only dots"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_safe_path_components() {
        for ok in ["n1", "node-1.example", "a_b", ".x"] {
            validate_node_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "...", "a/b", "a b", "n\u{0}"] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patch_validation() {
        assert!(NodePatch {
            task_cap: Some(2),
            draining: None
        }
        .validate()
        .is_ok());
        assert!(NodePatch {
            task_cap: Some(MAX_TASK_CAP + 1),
            draining: None
        }
        .validate()
        .is_err());
        assert!(NodePatch::default().validate().is_err());
        let err = serde_json::from_str::<NodePatch>(r#"{"task_cap": -1}"#);
        assert!(err.is_err());
        let err = serde_json::from_str::<NodePatch>(r#"{"cap": 1}"#);
        assert!(err.is_err());
    }

    #[test]
    fn node_names() {
        assert!(validate_node_name("node-1.eu_west").is_ok());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("a/b").is_err());
        assert!(validate_node_name(&"x".repeat(101)).is_err());
    }
}

//! Deployment targets: the machines tentacles run on, as the REST API and the database see them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::{UnixMs, ValidationError};

const MAX_TARGET_NAME_LEN: usize = 200;
const MAX_TAG_COUNT: usize = 50;
const MAX_TAG_NAME_LEN: usize = 100;

/// A target id, shown as `Machines-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId(pub i64);

const TARGET_ID_PREFIX: &str = "Machines-";

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TARGET_ID_PREFIX}{}", self.0)
    }
}

impl FromStr for TargetId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(TARGET_ID_PREFIX)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(TargetId)
            .ok_or_else(|| ValidationError::new(format!("{s:?} is not a target id")))
    }
}

/// `Targets-N`, as it is shown.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for TargetId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TargetId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": format!("^{TARGET_ID_PREFIX}[1-9][0-9]*$")})
    }
}

impl Serialize for TargetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How the cluster reaches a target's tentacle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Comms {
    /// The tentacle connects out to the nodes' gateways and waits for work.
    Polling,
    /// The tentacle listens; a worker connects to its endpoint.
    Listening,
}

impl Comms {
    pub fn as_str(self) -> &'static str {
        match self {
            Comms::Polling => "polling",
            Comms::Listening => "listening",
        }
    }
}

impl FromStr for Comms {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "polling" => Ok(Comms::Polling),
            "listening" => Ok(Comms::Listening),
            _ => Err(ValidationError::new(format!(
                "comms {s:?} is not one of polling, listening"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TargetHealth {
    Unknown,
    Healthy,
    Unhealthy,
    Unavailable,
}

impl TargetHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealth::Unknown => "Unknown",
            TargetHealth::Healthy => "Healthy",
            TargetHealth::Unhealthy => "Unhealthy",
            TargetHealth::Unavailable => "Unavailable",
        }
    }
}

impl FromStr for TargetHealth {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TargetHealth::Unknown,
            TargetHealth::Healthy,
            TargetHealth::Unhealthy,
            TargetHealth::Unavailable,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
        .ok_or_else(|| ValidationError::new(format!("{s:?} is not a health status")))
    }
}

/// Body of `POST /api/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    pub name: String,
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub comms: Comms,
    pub thumbprint: String,
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl NewTarget {
    /// Checks every field and normalises the thumbprint (upper-case hex, no separators).
    pub fn validate(mut self) -> Result<NewTarget, ValidationError> {
        validate_target_name(&self.name)?;
        validate_tags("environments", &self.environments)?;
        validate_tags("roles", &self.roles)?;
        self.thumbprint = normalize_thumbprint(&self.thumbprint)?;
        validate_endpoint(self.comms, self.endpoint.as_deref())?;
        Ok(self)
    }
}

/// Body of `PATCH /api/targets/{id}`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TargetPatch {
    pub name: Option<String>,
    pub environments: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub comms: Option<Comms>,
    pub thumbprint: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "some_or_null")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub endpoint: Option<Option<String>>,
}

/// `"endpoint": null` clears it; a missing field leaves it alone.
fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TargetPatch {
    /// Applies the patch to `current`, validating the result as a whole.
    pub fn apply(self, current: &TargetRecord) -> Result<NewTarget, ValidationError> {
        let patched = NewTarget {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            environments: self
                .environments
                .unwrap_or_else(|| current.environments.clone()),
            roles: self.roles.unwrap_or_else(|| current.roles.clone()),
            comms: self.comms.unwrap_or(current.comms),
            thumbprint: self
                .thumbprint
                .unwrap_or_else(|| current.thumbprint.clone()),
            endpoint: self.endpoint.unwrap_or_else(|| current.endpoint.clone()),
        };
        patched.validate()
    }
}

/// A target as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TargetRecord {
    pub id: TargetId,
    pub name: String,
    pub environments: Vec<String>,
    pub roles: Vec<String>,
    pub comms: Comms,
    pub endpoint: Option<String>,
    pub thumbprint: String,
    pub health: TargetHealth,
    pub health_reason: Option<String>,
    #[serde(serialize_with = "crate::time::ser_opt_time")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::time::Rfc3339>"))]
    pub last_health_check: Option<UnixMs>,
    /// Nodes whose gateway holds a live polling session with this target.
    pub connected_nodes: Vec<String>,
    /// The cluster certificates (thumbprints) the tentacle said it trusts at its last health
    /// check: a new cluster certificate is activated only once every target trusts it.
    pub cluster_trust: Vec<String>,
}

fn plain(text: &str) -> bool {
    !text.trim().is_empty() && text.trim() == text && !text.chars().any(char::is_control)
}

/// A target's name also names its folder of artifacts in the shared store, so it must be a
/// path component as it is: no separators and no leading dot (two names that a replacement
/// made equal would share one folder).
pub fn validate_target_name(name: &str) -> Result<(), ValidationError> {
    let path_safe = !name.contains(['/', '\\']) && !name.starts_with('.');
    if !plain(name) || name.len() > MAX_TARGET_NAME_LEN || !path_safe {
        return Err(ValidationError::new(format!(
            "invalid target name {name:?}: 1-{MAX_TARGET_NAME_LEN} bytes of UTF-8, no control \
             characters, no / or \\, no leading dot, no leading or trailing spaces"
        )));
    }
    Ok(())
}

pub(crate) fn validate_tags(field: &str, tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAG_COUNT {
        return Err(ValidationError::new(format!(
            "{field}: at most {MAX_TAG_COUNT} entries"
        )));
    }
    for tag in tags {
        if !plain(tag) || tag.len() > MAX_TAG_NAME_LEN {
            return Err(ValidationError::new(format!(
                "{field}: invalid entry {tag:?}: 1-{MAX_TAG_NAME_LEN} bytes of UTF-8, no control \
                 characters, no leading or trailing spaces"
            )));
        }
    }
    Ok(())
}

/// A SHA-256 thumbprint: 64 hex digits, either case, optional `:` or space separators;
/// returned upper-case without separators.
pub fn normalize_thumbprint(text: &str) -> Result<String, ValidationError> {
    let hex: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ValidationError::new(format!(
            "invalid thumbprint {text:?}: 64 hexadecimal digits (SHA-256 of the certificate)"
        )));
    }
    Ok(hex.to_ascii_uppercase())
}

/// A listening tentacle needs `host:port`; a polling one has none.
fn validate_endpoint(comms: Comms, endpoint: Option<&str>) -> Result<(), ValidationError> {
    match (comms, endpoint) {
        (Comms::Polling, None) | (Comms::Polling, Some("")) => Ok(()),
        (Comms::Polling, Some(_)) => Err(ValidationError::new(
            "a polling target has no endpoint: it connects to the cluster",
        )),
        (Comms::Listening, None) => Err(ValidationError::new(
            "a listening target needs an endpoint (host:port)",
        )),
        (Comms::Listening, Some(e)) => {
            let ok = e.rsplit_once(':').is_some_and(|(host, port)| {
                plain(host) && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if ok && e.len() <= 300 {
                Ok(())
            } else {
                Err(ValidationError::new(format!(
                    "invalid endpoint {e:?}: expected host:port"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_target(json: serde_json::Value) -> Result<NewTarget, String> {
        serde_json::from_value::<NewTarget>(json)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    const THUMB: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";

    #[test]
    fn target_names_are_their_artifact_folders_as_they_are() {
        for ok in ["web-1", "Web server 1", "db.example.com", "a.b"] {
            validate_target_name(ok).unwrap();
        }
        for bad in [
            "", " x", "x ", "a/b", "a\\b", ".", "..", ".hidden", "../x", "a\nb",
        ] {
            assert!(validate_target_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_are_validated_and_thumbprints_normalised() {
        let t = new_target(serde_json::json!({
            "name": "web-1", "environments": ["Production"], "roles": ["web"],
            "comms": "polling", "thumbprint": THUMB
        }))
        .unwrap();
        assert_eq!(t.thumbprint, THUMB.to_ascii_uppercase());
        let t = new_target(serde_json::json!({
            "name": "db", "comms": "listening", "thumbprint": THUMB,
            "endpoint": "db.example.com:10933"
        }))
        .unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("db.example.com:10933"));
        for (bad, why) in [
            (
                serde_json::json!({"name": "", "comms": "polling", "thumbprint": THUMB}),
                "name",
            ),
            (
                serde_json::json!({"name": "x", "comms": "carrier-pigeon", "thumbprint": THUMB}),
                "expected `polling` or `listening`",
            ),
            (
                serde_json::json!({"name": "x", "comms": "polling", "thumbprint": "abc"}),
                "thumbprint",
            ),
            (
                serde_json::json!({"name": "x", "comms": "listening", "thumbprint": THUMB}),
                "endpoint",
            ),
            (
                serde_json::json!({"name": "x", "comms": "listening", "thumbprint": THUMB, "endpoint": "nohost"}),
                "endpoint",
            ),
            (
                serde_json::json!({"name": "x", "comms": "polling", "thumbprint": THUMB, "endpoint": "a:1"}),
                "endpoint",
            ),
            (
                serde_json::json!({"name": "x", "comms": "polling", "thumbprint": THUMB, "roles": [" web"]}),
                "roles",
            ),
            (
                serde_json::json!({"name": "x", "comms": "polling", "thumbprint": THUMB, "colour": "red"}),
                "colour",
            ),
        ] {
            let err = new_target(bad.clone()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_patch_is_validated_as_a_whole() {
        let current = TargetRecord {
            id: TargetId(1),
            name: "web".into(),
            environments: vec![],
            roles: vec!["web".into()],
            comms: Comms::Polling,
            endpoint: None,
            thumbprint: THUMB.to_ascii_uppercase(),
            health: TargetHealth::Unknown,
            health_reason: None,
            last_health_check: None,
            connected_nodes: vec![],
            cluster_trust: vec![],
        };
        let patch: TargetPatch = serde_json::from_str(r#"{"roles": ["api"]}"#).unwrap();
        assert_eq!(patch.apply(&current).unwrap().roles, vec!["api"]);
        // Switching to listening needs an endpoint in the same patch.
        let patch: TargetPatch = serde_json::from_str(r#"{"comms": "listening"}"#).unwrap();
        assert!(patch.apply(&current).is_err());
        let patch: TargetPatch =
            serde_json::from_str(r#"{"comms": "listening", "endpoint": "h:1"}"#).unwrap();
        assert_eq!(patch.apply(&current).unwrap().comms, Comms::Listening);
        assert_eq!("Machines-3".parse::<TargetId>().unwrap(), TargetId(3));
        assert!("Machines-0".parse::<TargetId>().is_err());
    }
}

//! API key scopes: what a key may do. Four nest (`admin` ⊃ `operator` ⊃ `deployer` ⊃ `reader`);
//! `register-target` stands apart and lets a tentacle register the one target its key names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{validate_target_name, ValidationError};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum Scope {
    /// Everything, including API keys and cluster settings.
    Admin,
    /// Everything but API keys and cluster settings: nodes, targets, tasks.
    Operator,
    /// Create deployments, runbook runs and tasks (and cancel them); read everything.
    Deployer,
    /// Read only.
    Reader,
    /// Create or update the registration of the one target the key names, nothing else.
    RegisterTarget,
}

/// One of the names [`Scope::as_str`] gives (what its `try_from` accepts).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Scope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": names, "description": "What an API key may do."})
    }
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Admin,
        Scope::Operator,
        Scope::Deployer,
        Scope::Reader,
        Scope::RegisterTarget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operator => "operator",
            Scope::Deployer => "deployer",
            Scope::Reader => "reader",
            Scope::RegisterTarget => "register-target",
        }
    }

    /// Rank in the nested scopes; `None` for `register-target`, which nests in nothing.
    fn rank(self) -> Option<u8> {
        match self {
            Scope::Admin => Some(3),
            Scope::Operator => Some(2),
            Scope::Deployer => Some(1),
            Scope::Reader => Some(0),
            Scope::RegisterTarget => None,
        }
    }

    /// Whether a key of this scope may do what `needed` allows.
    pub fn grants(self, needed: Scope) -> bool {
        match (self.rank(), needed.rank()) {
            (Some(have), Some(need)) => have >= need,
            _ => self == needed,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Scope {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Scope {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s.trim())
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "unknown scope {s:?}: expected admin, operator, deployer, reader or \
                     register-target"
                ))
            })
    }
}

/// Longest API key name.
pub const MAX_KEY_NAME_LEN: usize = 100;
/// Longest lifetime a key can be given: ten years.
pub const MAX_KEY_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

/// Body of `POST /api/keys` (and what `cuttle-server api-key create` is given).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    pub name: String,
    pub scope: Scope,
    /// How long the key works, e.g. `90d`, `12h`, `30m`; forever when absent.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// For `register-target` keys (required there, refused elsewhere): the name of the one
    /// target the key may register.
    #[serde(default)]
    pub target: Option<String>,
    /// For `register-target` keys: the environments (names) its target may claim; none: it
    /// registers in no environment, for an operator to place.
    #[serde(default)]
    pub environments: Vec<String>,
    /// For `register-target` keys: the roles its target may claim.
    #[serde(default)]
    pub roles: Vec<String>,
    /// For `register-target` keys: keep working after the first registration (a key is used
    /// up by its first one otherwise).
    #[serde(default)]
    pub reusable: bool,
}

/// What a `register-target` key lets its target claim, fixed when the key is made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TargetGrant {
    /// Environment names the target may be registered in.
    pub environments: Vec<String>,
    /// Roles it may be registered with.
    pub roles: Vec<String>,
    /// Whether the key survives its first successful registration.
    pub reusable: bool,
}

impl TargetGrant {
    /// Refuses environments or roles the grant does not list (names compared whatever their
    /// case), saying what it does allow.
    pub fn allows(&self, environments: &[String], roles: &[String]) -> Result<(), String> {
        let within = |asked: &[String], granted: &[String]| -> Vec<String> {
            asked
                .iter()
                .filter(|a| !granted.iter().any(|g| g.eq_ignore_ascii_case(a)))
                .cloned()
                .collect()
        };
        let (envs, rls) = (
            within(environments, &self.environments),
            within(roles, &self.roles),
        );
        if envs.is_empty() && rls.is_empty() {
            return Ok(());
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        Err(format!(
            "this register-target key may claim the environments [{}] and the roles [{}]; not \
             {}{}{} (register without them and an operator assigns them, or make a key that \
             grants them)",
            list(&self.environments),
            list(&self.roles),
            if envs.is_empty() {
                String::new()
            } else {
                format!("the environments [{}]", envs.join(", "))
            },
            if !envs.is_empty() && !rls.is_empty() {
                " and "
            } else {
                ""
            },
            if rls.is_empty() {
                String::new()
            } else {
                format!("the roles [{}]", rls.join(", "))
            },
        ))
    }
}

impl ApiKeyRequest {
    /// What a `register-target` key grants its target; `None` for other scopes.
    pub fn grant(&self) -> Option<TargetGrant> {
        (self.scope == Scope::RegisterTarget).then(|| TargetGrant {
            environments: self.environments.clone(),
            roles: self.roles.clone(),
            reusable: self.reusable,
        })
    }

    /// Checks every field; returns the lifetime in seconds, if any.
    pub fn validate(&self) -> Result<Option<u64>, ValidationError> {
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_KEY_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(ValidationError::new(format!(
                "name: 1 to {MAX_KEY_NAME_LEN} characters, no control characters"
            )));
        }
        if self.scope != Scope::RegisterTarget
            && (!self.environments.is_empty() || !self.roles.is_empty() || self.reusable)
        {
            return Err(ValidationError::new(
                "environments, roles, reusable: only register-target keys grant what their \
                 target may claim",
            ));
        }
        crate::target::validate_tags("environments", &self.environments)?;
        crate::target::validate_tags("roles", &self.roles)?;
        match (self.scope, &self.target) {
            (Scope::RegisterTarget, None) => {
                return Err(ValidationError::new(
                    "target: a register-target key names the one target it may register",
                ))
            }
            (Scope::RegisterTarget, Some(t)) => {
                validate_target_name(t).map_err(|e| ValidationError::new(format!("target: {e}")))?
            }
            (_, Some(_)) => {
                return Err(ValidationError::new(
                    "target: only register-target keys are tied to a target",
                ))
            }
            (_, None) => {}
        }
        self.expires_in
            .as_deref()
            .map(parse_lifetime)
            .transpose()
            .map_err(|e| ValidationError::new(format!("expires_in: {e}")))
    }
}

/// A lifetime such as `90d`, `12h`, `30m` or `3600s` (a bare number is seconds), in seconds:
/// at least one minute, at most ten years.
pub fn parse_lifetime(text: &str) -> Result<u64, ValidationError> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    let secs = digits
        .parse::<u64>()
        .ok()
        .filter(|_| per > 0)
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| {
            ValidationError::new(format!(
                "{text:?} is not a lifetime: a whole number with s, m, h, d or w, e.g. 90d"
            ))
        })?;
    if !(60..=MAX_KEY_LIFETIME_SECS).contains(&secs) {
        return Err(ValidationError::new(format!(
            "{text:?} is out of range: from 1 minute to 10 years"
        )));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_grant_what_is_below_them_and_register_target_only_itself() {
        use Scope::*;
        let nested = [Admin, Operator, Deployer, Reader];
        for (i, have) in nested.iter().enumerate() {
            for (j, need) in nested.iter().enumerate() {
                assert_eq!(have.grants(*need), i <= j, "{have} → {need}");
            }
            assert!(
                !have.grants(RegisterTarget),
                "{have} is not register-target"
            );
            assert!(
                !RegisterTarget.grants(*have),
                "register-target is not {have}"
            );
        }
        assert!(RegisterTarget.grants(RegisterTarget));
    }

    #[test]
    fn scopes_round_trip_through_text_and_json() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let e = "root".parse::<Scope>().unwrap_err();
        assert!(e.0.contains("register-target"), "{e}");
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_lifetime("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_lifetime("600").unwrap(), 600);
        assert_eq!(parse_lifetime("2w").unwrap(), 14 * 86_400);
        for bad in [
            "",
            "d",
            "5x",
            "-3d",
            "30s",
            "11000d",
            "99999999999999999999d",
            "1.5h",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_requests_tie_only_register_target_keys_to_a_target() {
        let req = |scope, target: Option<&str>| ApiKeyRequest {
            name: "k".into(),
            scope,
            expires_in: Some("1h".into()),
            target: target.map(str::to_owned),
            environments: Vec::new(),
            roles: Vec::new(),
            reusable: false,
        };
        assert_eq!(req(Scope::Reader, None).validate().unwrap(), Some(3600));
        assert!(req(Scope::Reader, Some("web-01")).validate().is_err());
        assert!(req(Scope::RegisterTarget, None).validate().is_err());
        assert!(req(Scope::RegisterTarget, Some("../x")).validate().is_err());
        assert!(req(Scope::RegisterTarget, Some("web-01"))
            .validate()
            .is_ok());
        let mut blank = req(Scope::Admin, None);
        blank.name = "  ".into();
        assert!(blank.validate().unwrap_err().0.starts_with("name:"));
        let mut granting = req(Scope::Deployer, None);
        granting.roles = vec!["web".into()];
        assert!(
            granting.validate().is_err(),
            "only register-target keys grant"
        );
    }

    #[test]
    fn a_grant_allows_only_what_it_lists() {
        let g = TargetGrant {
            environments: vec!["Test".into()],
            roles: vec!["web".into(), "api".into()],
            reusable: false,
        };
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(g.allows(&v(&["test"]), &v(&["WEB"])).is_ok());
        assert!(g.allows(&v(&[]), &v(&[])).is_ok());
        let e = g
            .allows(&v(&["Production"]), &v(&["web", "db"]))
            .unwrap_err();
        assert!(e.contains("[Production]") && e.contains("[db]"), "{e}");
        let none = TargetGrant::default();
        assert!(none.allows(&v(&[]), &v(&[])).is_ok());
        assert!(none
            .allows(&v(&["Test"]), &v(&[]))
            .unwrap_err()
            .contains("[none]"));
    }
}

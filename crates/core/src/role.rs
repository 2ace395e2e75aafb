use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

/// One of the four things a node can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Api,
    Scheduler,
    Worker,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Scheduler, Role::Worker, Role::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "unknown role {s:?}: expected api, scheduler, worker or gateway"
                ))
            })
    }
}

/// A non-empty set of roles, kept sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet(Vec<Role>);

impl RoleSet {
    pub fn all() -> Self {
        RoleSet(Role::ALL.to_vec())
    }

    /// Parses a comma-separated list such as `api,worker`.
    pub fn parse(list: &str) -> Result<Self, ValidationError> {
        let mut roles = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Role::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(ValidationError::new("a node needs at least one role"));
        }
        Ok(RoleSet(roles))
    }

    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sorts_and_dedups() {
        let set = RoleSet::parse("worker, api,worker").unwrap();
        assert_eq!(set.to_string(), "api,worker");
        assert!(set.contains(Role::Worker));
        assert!(!set.contains(Role::Gateway));
    }

    #[test]
    fn rejects_unknown_and_empty() {
        assert!(RoleSet::parse("api,cook").is_err());
        assert!(RoleSet::parse(" , ").is_err());
    }
}

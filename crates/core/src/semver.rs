//! Semantic versions (SemVer 2.0.0): releases and packages are numbered with them, compared by
//! precedence.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

/// Longest version text accepted.
pub const MAX_VERSION_LEN: usize = 100;

/// `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Dot-separated identifiers after `-` (empty for a normal version).
    pub pre: Vec<String>,
    /// Dot-separated identifiers after `+`: ignored for precedence.
    pub build: Vec<String>,
}

fn identifiers(part: &str, what: &str, numeric_rule: bool) -> Result<Vec<String>, String> {
    part.split('.')
        .map(|id| {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!(
                    "{what} identifier {id:?}: letters, digits and '-' only"
                ));
            }
            if numeric_rule
                && id.len() > 1
                && id.starts_with('0')
                && id.chars().all(|c| c.is_ascii_digit())
            {
                return Err(format!("{what} identifier {id:?}: no leading zeros"));
            }
            Ok(id.to_owned())
        })
        .collect()
}

fn number(part: &str, what: &str) -> Result<u64, String> {
    if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{what} {part:?} is not a number"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(format!("{what} {part:?}: no leading zeros"));
    }
    part.parse()
        .map_err(|_| format!("{what} {part:?} is too large"))
}

impl FromStr for SemVer {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, ValidationError> {
        let bad = |why: String| {
            ValidationError::new(format!(
                "{text:?} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.2 or 2.0.0-beta.1): {why}"
            ))
        };
        if text.is_empty() || text.len() > MAX_VERSION_LEN {
            return Err(bad(format!("1 to {MAX_VERSION_LEN} characters")));
        }
        let (rest, build) = match text.split_once('+') {
            Some((r, b)) => (r, identifiers(b, "build", false).map_err(bad)?),
            None => (text, Vec::new()),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, identifiers(p, "pre-release", true).map_err(bad)?),
            None => (rest, Vec::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts[..] else {
            return Err(bad("three numbers separated by dots".into()));
        };
        Ok(SemVer {
            major: number(major, "major").map_err(bad)?,
            minor: number(minor, "minor").map_err(bad)?,
            patch: number(patch, "patch").map_err(bad)?,
            pre,
            build,
        })
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build.join("."))?;
        }
        Ok(())
    }
}

fn compare_identifier(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl SemVer {
    /// SemVer precedence: numbers, then a pre-release below its normal version, identifiers
    /// compared one by one (numeric ones as numbers, below alphanumeric ones); build metadata
    /// ignored.
    pub fn precedence(&self, other: &SemVer) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = compare_identifier(a, b);
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SemVer {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_versions() {
        let x = v("1.4.2-beta.1+build.7");
        assert_eq!((x.major, x.minor, x.patch), (1, 4, 2));
        assert_eq!(x.pre, ["beta", "1"]);
        assert_eq!(x.build, ["build", "7"]);
        assert_eq!(x.to_string(), "1.4.2-beta.1+build.7");
        assert_eq!(v("0.0.0").to_string(), "0.0.0");
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.3-a_b",
            "v1.2.3",
            " 1.2.3",
            "1.2.-3",
            "99999999999999999999.0.0",
        ] {
            let e = bad.parse::<SemVer>().unwrap_err();
            assert!(e.0.contains("semantic version"), "{bad}: {e}");
        }
    }

    #[test]
    fn precedence_follows_the_specification() {
        // The example chain from semver.org, section 11.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
            "10.0.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(
                v(w[0]).precedence(&v(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(v(w[1]).precedence(&v(w[0])), Ordering::Greater);
        }
        assert_eq!(
            v("1.0.0+a").precedence(&v("1.0.0+b")),
            Ordering::Equal,
            "build ignored"
        );
    }
}

//! Project variables: which value applies where (scoping), `#{Name}` substitution, the names
//! scripts see them under, output variables scripts set, and masking sensitive values.
//!
//! **Scoping.** A variable may be scoped to environments, target roles and target names (each
//! a list; an empty list does not restrict). A value applies where every non-empty list matches
//! (the environment is listed, one of the target's roles is listed, the target is listed). Among
//! the values of one name that apply, the most specific wins: a target scope outweighs a role
//! scope, which outweighs an environment scope (weights 4, 2, 1, summed over the scopes a
//! value has). Between equally specific values, the one defined first wins. An unscoped value
//! applies everywhere, and loses to any scoped one that applies.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Longest variable name and value.
pub const MAX_VARIABLE_NAME_LEN: usize = 200;
pub const MAX_VARIABLE_VALUE_LEN: usize = 64 * 1024;
/// What sensitive values are replaced with in logs.
pub const MASK: &str = "********";
/// How deep `#{…}` inside values is followed.
const MAX_DEPTH: usize = 16;

/// Where a value applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VariableScope {
    /// Environment ids.
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Target names.
    #[serde(default)]
    pub targets: Vec<String>,
}

impl VariableScope {
    /// How specific the scope is (targets 4, roles 2, environments 1), if it applies to `at`.
    fn weight_at(&self, at: &Context<'_>) -> Option<u8> {
        let mut weight = 0;
        if !self.environments.is_empty() {
            if !self.environments.iter().any(|e| e == at.environment) {
                return None;
            }
            weight += 1;
        }
        if !self.roles.is_empty() {
            if !self.roles.iter().any(|r| at.roles.iter().any(|t| t == r)) {
                return None;
            }
            weight += 2;
        }
        if !self.targets.is_empty() {
            if !at
                .target
                .is_some_and(|t| self.targets.iter().any(|x| x == t))
            {
                return None;
            }
            weight += 4;
        }
        Some(weight)
    }
}

/// One value of a variable, plain text (a sensitive one already decrypted by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub value: String,
    pub scope: VariableScope,
    pub sensitive: bool,
}

/// A variable as a project (and a release's snapshot) stores it: a sensitive one holds only
/// `ciphertext`, never `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StoredVariable {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    #[serde(default)]
    pub scope: VariableScope,
    #[serde(default)]
    pub sensitive: bool,
}

impl StoredVariable {
    /// The variable with its value in the clear, `decrypt` opening a sensitive one.
    pub fn open<E>(&self, decrypt: impl Fn(&str) -> Result<String, E>) -> Result<Variable, E> {
        let value = match (&self.ciphertext, &self.value) {
            (Some(c), _) if self.sensitive => decrypt(c)?,
            (_, Some(v)) => v.clone(),
            _ => String::new(),
        };
        Ok(Variable {
            name: self.name.clone(),
            value,
            scope: self.scope.clone(),
            sensitive: self.sensitive,
        })
    }
}

/// Where values are being resolved: the environment (id), and the target when on one.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub environment: &'a str,
    pub target: Option<&'a str>,
    pub roles: &'a [String],
}

/// A resolved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub value: String,
    pub sensitive: bool,
    /// Set by a script's output (`Output.…`): whoever runs that script chose it. Never expanded
    /// further, and quoted for the shell wherever it lands in a script's text.
    pub from_output: bool,
}

impl Value {
    /// A value Cuttle or the project's authors gave.
    pub fn plain(value: impl Into<String>, sensitive: bool) -> Value {
        Value {
            value: value.into(),
            sensitive,
            from_output: false,
        }
    }
}

/// The shell a script is written for: how a value set by another script's output is quoted
/// when it is substituted into the script's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `sh` and `bash`: single quotes, a quote as `'\''`.
    Posix,
    /// PowerShell: single quotes, every kind of single quote doubled.
    PowerShell,
}

impl Shell {
    /// The shell of a step's `shell` setting (`sh`, `bash`, `pwsh`).
    pub fn of(name: &str) -> Shell {
        if name == "pwsh" {
            Shell::PowerShell
        } else {
            Shell::Posix
        }
    }

    /// `value` as one literal word of this shell.
    pub fn quote(self, value: &str) -> String {
        match self {
            Shell::Posix => format!("'{}'", value.replace('\'', "'\\''")),
            Shell::PowerShell => {
                let mut out = String::with_capacity(value.len() + 2);
                out.push('\'');
                for c in value.chars() {
                    // PowerShell takes the typographic single quotes as quotes too.
                    if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
                        out.push(c);
                    }
                    out.push(c);
                }
                out.push('\'');
                out
            }
        }
    }
}

/// The values that apply at `at`, one per name: the project's, then `built_ins` (which no
/// project variable can override), then output variables of earlier steps
/// (`Output.<step>.<name>`).
pub fn resolve(
    variables: &[Variable],
    at: &Context<'_>,
    built_ins: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut best: HashMap<&str, (u8, &Variable)> = HashMap::new();
    for v in variables {
        let Some(weight) = v.scope.weight_at(at) else {
            continue;
        };
        match best.get(v.name.as_str()) {
            Some((w, _)) if *w >= weight => {}
            _ => {
                best.insert(&v.name, (weight, v));
            }
        }
    }
    let mut out: BTreeMap<String, Value> = best
        .into_iter()
        .map(|(name, (_, v))| (name.to_owned(), Value::plain(v.value.clone(), v.sensitive)))
        .collect();
    for (k, v) in built_ins {
        out.insert(k.clone(), Value::plain(v.clone(), false));
    }
    for (k, v) in outputs {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Why a substitution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstitutionError {
    #[error("variable {0:?} is not defined here (#{{{0}}})")]
    Undefined(String),
    #[error("variable {0:?} refers to itself through #{{…}}")]
    Cycle(String),
    #[error("an unclosed #{{ at byte {0}")]
    Unclosed(usize),
}

/// Replaces every `#{Name}` in `text` with its value (values may themselves hold `#{…}`, except
/// values from a script's output, which are taken as they are); `##{` stands for a literal
/// `#{`. An undefined name is an error naming it. For files; a script's text goes through
/// [`substitute_script`].
pub fn substitute(
    text: &str,
    values: &BTreeMap<String, Value>,
) -> Result<String, SubstitutionError> {
    expand(text, values, &mut Vec::new(), None)
}

/// [`substitute`] for a script's text: a value from a script's output lands quoted for `shell`
/// (one word, whatever it holds), so no output can add code to a later script.
pub fn substitute_script(
    text: &str,
    values: &BTreeMap<String, Value>,
    shell: Shell,
) -> Result<String, SubstitutionError> {
    expand(text, values, &mut Vec::new(), Some(shell))
}

/// Every value fully substituted, for a party that substitutes again with plain strings (a
/// tentacle unpacking a package): a `#{` left in a value is escaped (`##{`), so that party
/// takes it as text and never looks another variable up through it.
pub fn literal_values(values: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| {
            let full = if v.from_output {
                v.value.clone()
            } else {
                expand(&v.value, values, &mut vec![k.clone()], None)
                    .unwrap_or_else(|_| v.value.clone())
            };
            (k.clone(), full.replace("#{", "##{"))
        })
        .collect()
}

fn expand(
    text: &str,
    values: &BTreeMap<String, Value>,
    stack: &mut Vec<String>,
    shell: Option<Shell>,
) -> Result<String, SubstitutionError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("#{") {
        if rest[..i].ends_with('#') {
            // `##{` → a literal `#{`.
            out.push_str(&rest[..i - 1]);
            out.push_str("#{");
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(SubstitutionError::Unclosed(offset + i));
        };
        let name = after[..end].trim();
        let value = values
            .get(name)
            .ok_or_else(|| SubstitutionError::Undefined(name.to_owned()))?;
        if stack.iter().any(|n| n == name) || stack.len() >= MAX_DEPTH {
            return Err(SubstitutionError::Cycle(name.to_owned()));
        }
        if value.from_output {
            // Taken as it is: never looked into for `#{…}`, quoted in a script.
            match shell {
                Some(sh) => out.push_str(&sh.quote(&value.value)),
                None => out.push_str(&value.value),
            }
        } else {
            stack.push(name.to_owned());
            out.push_str(&expand(&value.value, values, stack, shell)?);
            stack.pop();
        }
        rest = &after[end + 1..];
        offset += i + 2 + end + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment variable a script sees a variable as: `CUTTLE_VAR_` and the name in upper
/// case, every character other than a letter or digit replaced by `_`
/// (`Cuttle.Project.Name` → `CUTTLE_VAR_CUTTLE_PROJECT_NAME`).
pub fn env_name(name: &str) -> String {
    let mangled: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CUTTLE_VAR_{mangled}")
}

/// The environment for a script: every resolved value under its [`env_name`]. When two names
/// mangle to one, the name that sorts last wins.
pub fn environment(values: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| (env_name(k), v.value.clone()))
        .collect()
}

/// Shortest sensitive value (and line of a multi-line one) that is masked: a shorter one would
/// mask every such run of characters in every log, garbling it and hinting at the value.
pub const MIN_MASKED_LEN: usize = 4;

/// What to mask for the sensitive values among `values`, longest first (so a value containing
/// another is masked whole), for [`mask`]: each value, and each line of a multi-line value
/// (output comes line by line, so a PEM key is masked line by line). Lines shorter than
/// [`MIN_MASKED_LEN`] of a multi-line value are not masked.
pub fn secrets(values: &BTreeMap<String, Value>) -> Vec<String> {
    let mut s: Vec<String> = Vec::new();
    for v in values
        .values()
        .filter(|v| v.sensitive && !v.value.is_empty())
    {
        if v.value.contains('\n') {
            s.extend(
                v.value
                    .lines()
                    .map(|l| l.trim_end_matches('\r').trim())
                    .filter(|l| l.len() >= MIN_MASKED_LEN)
                    .map(str::to_owned),
            );
        } else {
            s.push(v.value.clone());
        }
    }
    s.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    s.dedup();
    s
}

/// `line` with every occurrence of each secret replaced by [`MASK`].
pub fn mask(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Masks the next piece of a line that output split in pieces (`carry`: what the previous piece
/// held back). Returns what can be shown now; while the line `continues`, the tail that could
/// still be the start of a secret stays in `carry`, so a secret straddling two pieces is
/// masked whole.
pub fn mask_piece(carry: &mut String, piece: &str, continues: bool, secrets: &[String]) -> String {
    let mut whole = std::mem::take(carry);
    whole.push_str(piece);
    let longest = secrets.iter().map(String::len).max().unwrap_or(0);
    if !continues || longest == 0 {
        return mask(&whole, secrets);
    }
    let mut cut = whole.len().saturating_sub(longest - 1);
    // Never between the two ends of a secret found whole.
    loop {
        let spanning = secrets
            .iter()
            .flat_map(|s| {
                whole
                    .match_indices(s.as_str())
                    .map(move |(i, _)| (i, s.len()))
            })
            .filter(|(i, n)| *i < cut && i + n > cut)
            .map(|(i, _)| i)
            .min();
        match spanning {
            Some(i) => cut = i,
            None => break,
        }
    }
    while !whole.is_char_boundary(cut) {
        cut -= 1;
    }
    *carry = whole[cut..].to_owned();
    mask(&whole[..cut], secrets)
}

/// Checks a project's variables as written; errors name the entry (`variables[3].name: …`).
pub fn validate_variables(vars: &[Variable]) -> Result<(), ValidationError> {
    for (i, v) in vars.iter().enumerate() {
        let at = format!("variables[{i}]");
        let name = v.name.trim();
        if name.is_empty()
            || name != v.name
            || name.chars().count() > MAX_VARIABLE_NAME_LEN
            || name.contains(['#', '{', '}'])
            || name.chars().any(char::is_control)
        {
            return Err(ValidationError::new(format!(
                "{at}.name: 1 to {MAX_VARIABLE_NAME_LEN} characters, none of '#', '{{', '}}', \
                 no leading or trailing spaces"
            )));
        }
        if name.starts_with("Cuttle.") || name.starts_with("Output.") {
            return Err(ValidationError::new(format!(
                "{at}.name: names starting with Cuttle. or Output. are the cluster's own"
            )));
        }
        if v.value.len() > MAX_VARIABLE_VALUE_LEN {
            return Err(ValidationError::new(format!(
                "{at}.value: at most {} KiB",
                MAX_VARIABLE_VALUE_LEN / 1024
            )));
        }
        if v.sensitive && !v.value.is_empty() && v.value.trim().len() < MIN_MASKED_LEN {
            return Err(ValidationError::new(format!(
                "{at}.value: a sensitive value of fewer than {MIN_MASKED_LEN} characters cannot \
                 be masked in logs safely (every such run of characters would be); use a \
                 longer secret, or make it not sensitive"
            )));
        }
        crate::target::validate_tags(&format!("{at}.scope.roles"), &v.scope.roles)?;
        crate::target::validate_tags(&format!("{at}.scope.targets"), &v.scope.targets)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str, scope: VariableScope) -> Variable {
        Variable {
            name: name.into(),
            value: value.into(),
            scope,
            sensitive: false,
        }
    }

    fn scope(envs: &[&str], roles: &[&str], targets: &[&str]) -> VariableScope {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        VariableScope {
            environments: own(envs),
            roles: own(roles),
            targets: own(targets),
        }
    }

    fn at<'a>(env: &'a str, target: Option<&'a str>, roles: &'a [String]) -> Context<'a> {
        Context {
            environment: env,
            target,
            roles,
        }
    }

    fn value_of(vars: &[Variable], c: &Context<'_>) -> Option<String> {
        resolve(vars, c, &BTreeMap::new(), &BTreeMap::new())
            .get("Conn")
            .map(|v| v.value.clone())
    }

    #[test]
    fn the_most_specific_scope_that_applies_wins() {
        let vars = vec![
            var("Conn", "any", VariableScope::default()),
            var("Conn", "prod", scope(&["Env-prod"], &[], &[])),
            var("Conn", "prod-web", scope(&["Env-prod"], &["web"], &[])),
            var("Conn", "db", scope(&[], &["db"], &[])),
            var("Conn", "web-1", scope(&[], &[], &["web-1"])),
            var(
                "Conn",
                "test-or-prod",
                scope(&["Env-test", "Env-prod"], &[], &[]),
            ),
        ];
        let web = ["web".to_owned()];
        let db = ["db".to_owned()];
        let none: [String; 0] = [];
        // Unscoped where nothing narrower applies.
        assert_eq!(
            value_of(&vars, &at("Env-dev", None, &none)).as_deref(),
            Some("any")
        );
        // Environment beats unscoped; the first of two equally specific wins.
        assert_eq!(
            value_of(&vars, &at("Env-prod", None, &none)).as_deref(),
            Some("prod")
        );
        assert_eq!(
            value_of(&vars, &at("Env-test", None, &none)).as_deref(),
            Some("test-or-prod")
        );
        // Role (2) beats environment (1); role and environment (3) beat role alone.
        assert_eq!(
            value_of(&vars, &at("Env-dev", Some("db-1"), &db)).as_deref(),
            Some("db")
        );
        assert_eq!(
            value_of(&vars, &at("Env-prod", Some("db-1"), &db)).as_deref(),
            Some("db")
        );
        assert_eq!(
            value_of(&vars, &at("Env-prod", Some("web-2"), &web)).as_deref(),
            Some("prod-web")
        );
        // Target (4) beats role and environment together (3).
        assert_eq!(
            value_of(&vars, &at("Env-prod", Some("web-1"), &web)).as_deref(),
            Some("web-1")
        );
        // A scope names a target only on that target: on the node, it never applies.
        assert_eq!(
            value_of(&vars, &at("Env-dev", None, &web)).as_deref(),
            Some("any")
        );
        // No value applies: the name is undefined there.
        let scoped = vec![var("Conn", "prod", scope(&["Env-prod"], &[], &[]))];
        assert_eq!(value_of(&scoped, &at("Env-dev", None, &none)), None);
    }

    #[test]
    fn built_ins_and_outputs_cannot_be_overridden_by_project_variables() {
        let vars = vec![var(
            "Cuttle.Project.Name",
            "forged",
            VariableScope::default(),
        )];
        let built = BTreeMap::from([("Cuttle.Project.Name".to_owned(), "Shop".to_owned())]);
        let outputs = BTreeMap::from([(
            "Output.Build.Version".to_owned(),
            Value {
                value: "1.2".into(),
                sensitive: false,
                from_output: true,
            },
        )]);
        let none: [String; 0] = [];
        let r = resolve(&vars, &at("E", None, &none), &built, &outputs);
        assert_eq!(r["Cuttle.Project.Name"].value, "Shop");
        assert_eq!(r["Output.Build.Version"].value, "1.2");
        assert!(validate_variables(&vars)
            .unwrap_err()
            .0
            .contains("cluster's own"));
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::plain(*v, false)))
            .collect()
    }

    #[test]
    fn values_from_outputs_are_taken_as_they_are_and_quoted_in_scripts() {
        let mut v = values(&[("Secret", "hunter2-long"), ("Greeting", "hi #{Cuttle.X}")]);
        v.insert("Cuttle.X".into(), Value::plain("x", false));
        let out = |value: &str| Value {
            value: value.into(),
            sensitive: false,
            from_output: true,
        };
        v.insert("Output.A.V".into(), out("1.2'; rm -rf / #"));
        v.insert("Output.A.Ref".into(), out("#{Secret}"));
        v.insert("Wraps".into(), Value::plain("v=#{Output.A.V}", false));
        // In a script: one quoted word, whatever it holds; never looked into.
        assert_eq!(
            substitute_script("echo #{Output.A.V}", &v, Shell::Posix).unwrap(),
            "echo '1.2'\\''; rm -rf / #'"
        );
        assert_eq!(
            substitute_script("echo #{Wraps}", &v, Shell::Posix).unwrap(),
            "echo v='1.2'\\''; rm -rf / #'"
        );
        assert_eq!(
            substitute_script("echo #{Output.A.Ref}", &v, Shell::Posix).unwrap(),
            "echo '#{Secret}'"
        );
        assert_eq!(
            substitute_script("Write-Output #{Output.A.V}", &v, Shell::PowerShell).unwrap(),
            "Write-Output '1.2''; rm -rf / #'"
        );
        assert_eq!(
            Shell::PowerShell.quote("a\u{2019}b"),
            "'a\u{2019}\u{2019}b'"
        );
        // The quoting holds in a real shell: the word comes back as it was.
        let quoted = Shell::Posix.quote("it's $(id) `id` \\ \"q\"");
        let echoed = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&echoed.stdout),
            "it's $(id) `id` \\ \"q\""
        );
        // In files: as they are, still never looked into.
        assert_eq!(substitute("#{Output.A.Ref}", &v).unwrap(), "#{Secret}");
        assert_eq!(substitute("#{Greeting}", &v).unwrap(), "hi x");
        // For a tentacle: substituted whole, with what is left of #{ escaped.
        let lit = literal_values(&v);
        assert_eq!(lit["Greeting"], "hi x");
        assert_eq!(lit["Output.A.Ref"], "##{Secret}");
        let again: BTreeMap<String, Value> = lit
            .iter()
            .map(|(k, x)| (k.clone(), Value::plain(x.clone(), false)))
            .collect();
        assert_eq!(substitute("#{Output.A.Ref}", &again).unwrap(), "#{Secret}");
    }

    #[test]
    fn multi_line_secrets_are_masked_line_by_line_and_across_pieces() {
        let mut v = values(&[]);
        let pem =
            "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\r\nhkiG9w0BAQEFAASC\nAB\n-----END KEY-----\n";
        v.insert("Key".into(), Value::plain(pem, true));
        v.insert("Pw".into(), Value::plain("correct-horse", true));
        let s = secrets(&v);
        for line in ["MIIEvQIBADANBgkq", "hkiG9w0BAQEFAASC", "correct-horse"] {
            assert!(s.contains(&line.to_owned()), "{s:?}");
        }
        assert!(!s.contains(&"AB".to_owned()), "too short to mask: {s:?}");
        assert_eq!(mask("MIIEvQIBADANBgkq", &s), MASK);
        // A secret cut in two by a line split is masked whole, wherever the cut falls.
        let text = format!("{}correct-horse{}", "x".repeat(50), "y".repeat(50));
        for cut in 40..70 {
            let mut carry = String::new();
            let first = mask_piece(&mut carry, &text[..cut], true, &s);
            let second = mask_piece(&mut carry, &text[cut..], false, &s);
            let shown = format!("{first}{second}");
            assert_eq!(
                shown,
                format!("{}{MASK}{}", "x".repeat(50), "y".repeat(50)),
                "cut at {cut}"
            );
            assert!(
                !first.contains("correct") && !second.contains("horse"),
                "cut at {cut}"
            );
        }
        // Without secrets, nothing is held back.
        let mut carry = String::new();
        assert_eq!(mask_piece(&mut carry, "abc", true, &[]), "abc");
        assert!(carry.is_empty());
    }

    #[test]
    fn substitution_follows_references_and_names_what_is_missing() {
        let v = values(&[
            ("Host", "db.#{Domain}"),
            ("Domain", "example.com"),
            ("Loop", "#{Loop}"),
            ("A", "#{B}"),
            ("B", "#{A}"),
        ]);
        assert_eq!(
            substitute("connect #{Host}:5432 # comment", &v).unwrap(),
            "connect db.example.com:5432 # comment"
        );
        assert_eq!(substitute("#{ Domain }", &v).unwrap(), "example.com");
        assert_eq!(
            substitute("literal ##{Host}", &v).unwrap(),
            "literal #{Host}"
        );
        assert_eq!(substitute("no variables", &v).unwrap(), "no variables");
        assert_eq!(
            substitute("#{Nope}", &v).unwrap_err(),
            SubstitutionError::Undefined("Nope".into())
        );
        assert_eq!(
            substitute("#{Loop}", &v).unwrap_err(),
            SubstitutionError::Cycle("Loop".into())
        );
        assert_eq!(
            substitute("#{A}", &v).unwrap_err(),
            SubstitutionError::Cycle("A".into())
        );
        assert_eq!(
            substitute("x #{Host", &v).unwrap_err(),
            SubstitutionError::Unclosed(2)
        );
        assert!(substitute("#{Nope}", &v)
            .unwrap_err()
            .to_string()
            .contains("\"Nope\""));
    }

    #[test]
    fn scripts_see_variables_under_mangled_names() {
        assert_eq!(
            env_name("Cuttle.Project.Name"),
            "CUTTLE_VAR_CUTTLE_PROJECT_NAME"
        );
        assert_eq!(env_name("db-port 2"), "CUTTLE_VAR_DB_PORT_2");
        assert_eq!(env_name("Ünïcode"), "CUTTLE_VAR__N_CODE");
        let env = environment(&values(&[("a.b", "1"), ("a_b", "2")]));
        assert_eq!(env.len(), 1);
        assert_eq!(env["CUTTLE_VAR_A_B"], "2", "the name that sorts last wins");
    }

    #[test]
    fn sensitive_values_are_masked_longest_first() {
        let mut v = values(&[("Pw", "hunter2"), ("Plain", "hello")]);
        v.insert("Long".into(), Value::plain("hunter2-extra", true));
        v.get_mut("Pw").unwrap().sensitive = true;
        let s = secrets(&v);
        assert_eq!(s, ["hunter2-extra", "hunter2"]);
        assert_eq!(
            mask("pw=hunter2 long=hunter2-extra hello", &s),
            "pw=******** long=******** hello"
        );
        assert_eq!(mask("nothing here", &s), "nothing here");
    }

    #[test]
    fn variables_are_checked_naming_the_entry() {
        let ok = vec![var("Conn", "x", scope(&["E"], &["web"], &["t1"]))];
        validate_variables(&ok).unwrap();
        for (v, says) in [
            (var("", "x", VariableScope::default()), "variables[0].name"),
            (
                var("A#{B}", "x", VariableScope::default()),
                "variables[0].name",
            ),
            (
                var("Output.X", "x", VariableScope::default()),
                "cluster's own",
            ),
            (
                var(
                    "V",
                    &"x".repeat(MAX_VARIABLE_VALUE_LEN + 1),
                    VariableScope::default(),
                ),
                "variables[0].value",
            ),
            (
                var("V", "x", scope(&[], &[""], &[])),
                "variables[0].scope.roles",
            ),
            (
                Variable {
                    sensitive: true,
                    ..var("V", "abc", VariableScope::default())
                },
                "cannot be masked",
            ),
        ] {
            let e = validate_variables(&[v]).unwrap_err();
            assert!(e.0.contains(says), "{} should say {says}", e.0);
        }
    }
}

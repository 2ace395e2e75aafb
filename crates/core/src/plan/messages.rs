//! Service messages: lines a script prints to talk to Cuttle, `##cuttle[command key='value' …]`
//! (values in single quotes; `\'` and `\\` escape a quote and a backslash). Any other line is
//! plain output.

use std::collections::BTreeMap;

use crate::ValidationError;

use super::variables::MAX_VARIABLE_NAME_LEN;

/// The fields of a `##cuttle[{command} …]` line; `None` for any other line.
fn fields(line: &str, command: &str) -> Option<Result<BTreeMap<String, String>, ValidationError>> {
    let rest = line
        .trim()
        .strip_prefix("##cuttle[")?
        .strip_prefix(command)?
        .strip_prefix(' ')?;
    let bad = |why: String| Some(Err(ValidationError::new(format!("{command}: {why}"))));
    let Some(body) = rest.strip_suffix(']') else {
        return bad("the line must end with ]".into());
    };
    let mut fields = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('\'') {
            return bad(format!("{key:?} needs a value in single quotes"));
        }
        let mut value = String::new();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('\'' | '\\')) => value.push(e),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                '\'' => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return bad(format!("the value of {key:?} is not closed"));
        }
        fields.insert(key.trim().to_owned(), value);
    }
    Some(Ok(fields))
}

/// Takes the `wanted` fields (the first ones required), refusing any other.
fn take(
    command: &str,
    mut fields: BTreeMap<String, String>,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<Option<String>>, ValidationError> {
    let mut out = Vec::new();
    for k in required {
        let v = fields.remove(*k).ok_or_else(|| {
            let needs: Vec<String> = required.iter().map(|r| format!("{r}='…'")).collect();
            ValidationError::new(format!("{command}: needs {}", needs.join(" and ")))
        })?;
        out.push(Some(v));
    }
    for k in optional {
        out.push(fields.remove(*k));
    }
    if let Some(extra) = fields.keys().next() {
        return Err(ValidationError::new(format!(
            "{command}: unknown field {extra:?}"
        )));
    }
    Ok(out)
}

/// An output variable a script set: `##cuttle[setVariable name='X' value='Y']`, with
/// `sensitive='True'` when its value must be masked like a sensitive variable's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVariable {
    pub name: String,
    pub value: String,
    pub sensitive: bool,
}

/// Reads a `setVariable` line; `None` for any other line.
pub fn parse_set_variable(line: &str) -> Option<Result<SetVariable, ValidationError>> {
    let f = fields(line, "setVariable")?;
    Some(f.and_then(|f| {
        let mut v = take("setVariable", f, &["name", "value"], &["sensitive"])?.into_iter();
        let name = v.next().flatten().unwrap_or_default();
        let value = v.next().flatten().unwrap_or_default();
        let sensitive = match v.next().flatten().as_deref() {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("true") => true,
            Some(s) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => {
                return Err(ValidationError::new(format!(
                    "setVariable: sensitive must be 'True' or 'False', got {other:?}"
                )))
            }
        };
        // Counted as a project's variable names are: in characters.
        if name.is_empty()
            || name.chars().count() > MAX_VARIABLE_NAME_LEN
            || name.contains(['#', '{', '}'])
        {
            return Err(ValidationError::new(format!(
                "setVariable: invalid name {name:?}"
            )));
        }
        Ok(SetVariable {
            name,
            value,
            sensitive,
        })
    }))
}

/// A file a script hands over as an artifact of its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRequest {
    /// As the script gave it: relative to its working folder, inside it.
    pub path: String,
    /// What it is called (its file name when not given).
    pub name: String,
    /// Where the tentacle put its copy, relative to its files folder (set by the tentacle).
    pub held: Option<String>,
    /// Why the tentacle could not take a copy (set by the tentacle).
    pub failed: Option<String>,
}

/// Longest artifact name.
pub const MAX_ARTIFACT_NAME_LEN: usize = 200;

/// An artifact's path: relative to the script's working directory and staying inside it (no
/// absolute path, no `..`); a leading `./` is allowed. Where links lead is checked when the
/// file is read.
pub fn validate_artifact_path(path: &str) -> Result<(), ValidationError> {
    let rest = path.strip_prefix("./").unwrap_or(path);
    crate::validate_relative_path("createArtifact: path", rest).map_err(|_| {
        ValidationError::new(format!(
            "createArtifact: path {path:?} must be relative to the script's working directory, \
             without \"..\""
        ))
    })
}

/// `##cuttle[createArtifact path='…' name='…']` (`name` optional).
pub fn parse_create_artifact(line: &str) -> Option<Result<ArtifactRequest, ValidationError>> {
    let f = fields(line, "createArtifact")?;
    Some(f.and_then(|f| {
        let mut v = take("createArtifact", f, &["path"], &["name", "held", "failed"])?.into_iter();
        let path = v.next().flatten().unwrap_or_default();
        let name = v.next().flatten();
        let held = v.next().flatten();
        let failed = v.next().flatten();
        validate_artifact_path(&path)?;
        let name = name.unwrap_or_else(|| path.rsplit('/').next().unwrap_or(&path).to_owned());
        if name.is_empty()
            || name.chars().count() > MAX_ARTIFACT_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(ValidationError::new(format!(
                "createArtifact: name {name:?}: 1 to {MAX_ARTIFACT_NAME_LEN} characters, no \
                 control characters"
            )));
        }
        Ok(ArtifactRequest {
            path,
            name,
            held,
            failed,
        })
    }))
}

/// The line a tentacle passes on once it holds a copy of the artifact.
pub fn create_artifact_line(a: &ArtifactRequest) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    let mut line = format!(
        "##cuttle[createArtifact path='{}' name='{}'",
        q(&a.path),
        q(&a.name)
    );
    if let Some(h) = &a.held {
        line.push_str(&format!(" held='{}'", q(h)));
    }
    if let Some(f) = &a.failed {
        line.push_str(&format!(" failed='{}'", q(f)));
    }
    line.push(']');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_variables_are_read_from_their_line_and_anything_else_is_ignored() {
        let set = |line: &str| {
            let v = parse_set_variable(line).unwrap().unwrap();
            (v.name, v.value, v.sensitive)
        };
        assert_eq!(
            set("##cuttle[setVariable name='Version' value='1.4.2']"),
            ("Version".into(), "1.4.2".into(), false)
        );
        assert_eq!(
            set(r"  ##cuttle[setVariable value='it\'s a \\ path' name='Msg']"),
            ("Msg".into(), r"it's a \ path".into(), false)
        );
        assert_eq!(
            set("##cuttle[setVariable name='Empty' value='']"),
            ("Empty".into(), String::new(), false)
        );
        assert_eq!(
            set("##cuttle[setVariable name='Token' value='s3cr3t-t0ken' sensitive='True']"),
            ("Token".into(), "s3cr3t-t0ken".into(), true)
        );
        assert!(parse_set_variable("echo hello").is_none());
        assert!(parse_set_variable("##cuttle[createArtifact path='x']").is_none());
        for bad in [
            "##cuttle[setVariable name='X']",
            "##cuttle[setVariable name='X' value='unclosed]",
            "##cuttle[setVariable name=X value='1']",
            "##cuttle[setVariable name='X' value='1' colour='red']",
            "##cuttle[setVariable name='X' value='1' sensitive='yes']",
            "##cuttle[setVariable name='#{X}' value='1']",
            "##cuttle[setVariable name='X' value='1'",
        ] {
            assert!(parse_set_variable(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn artifacts_are_read_and_written_back_with_where_they_are_held() {
        let a = parse_create_artifact("##cuttle[createArtifact path='out/report.html']")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.path.as_str(), a.name.as_str(), a.held),
            ("out/report.html", "report.html", None)
        );
        let mut b =
            parse_create_artifact("##cuttle[createArtifact path='./x y.log' name='it\\'s.log']")
                .unwrap()
                .unwrap();
        assert_eq!(b.name, "it's.log");
        b.held = Some(".artifacts/7".into());
        b.failed = Some("it's gone".into());
        let line = create_artifact_line(&b);
        assert_eq!(parse_create_artifact(&line).unwrap().unwrap(), b);
        for bad in [
            "##cuttle[createArtifact name='x']",
            "##cuttle[createArtifact path='']",
            "##cuttle[createArtifact path='a' name='']",
            "##cuttle[createArtifact path='a' size='1']",
            // Only what is inside the script's working directory.
            "##cuttle[createArtifact path='/proc/self/environ']",
            "##cuttle[createArtifact path='../master.key']",
            "##cuttle[createArtifact path='out/../../x']",
        ] {
            assert!(parse_create_artifact(bad).unwrap().is_err(), "{bad}");
        }
    }
}

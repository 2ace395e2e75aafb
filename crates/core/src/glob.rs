//! File-name globs for the files a package step substitutes variables in: `*` and `?` within
//! one path component, `**` across components (`**/` matches no folder too). Paths use `/`.

use crate::ValidationError;

/// Most globs one step may list, and the longest one.
pub const MAX_GLOBS: usize = 50;
const MAX_GLOB_LEN: usize = 200;

/// Checks a glob: relative, no `..`, no NUL, not too long.
pub fn validate_glob(what: &str, glob: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| ValidationError::new(format!("{what} {glob:?}: {why}"));
    if glob.is_empty() || glob.len() > MAX_GLOB_LEN {
        return Err(bad(&format!("1 to {MAX_GLOB_LEN} bytes")));
    }
    if glob.starts_with('/') || glob.contains('\\') || glob.contains('\0') {
        return Err(bad("a relative path with '/' between folders"));
    }
    if glob.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(bad("no '..' and no empty folder names"));
    }
    Ok(())
}

/// Does `path` (relative, `/`-separated) match `glob`?
pub fn glob_match(glob: &str, path: &str) -> bool {
    let p: Vec<char> = glob.chars().collect();
    let s: Vec<char> = path.chars().collect();
    matches(&p, &s)
}

fn matches(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let dirs = p.get(2) == Some(&'/');
            let rest = if dirs { &p[3..] } else { &p[2..] };
            // `**/` consumes whole folders (or none); a bare `**` anything.
            (0..=s.len()).any(|i| (!dirs || i == 0 || s[i - 1] == '/') && matches(rest, &s[i..]))
        }
        Some('*') => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != '/')
            .any(|i| matches(&p[1..], &s[i..])),
        Some('?') => s.first().is_some_and(|c| *c != '/') && matches(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && matches(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_folders() {
        for (glob, path) in [
            ("*.config", "web.config"),
            ("config/*.json", "config/app.json"),
            ("**/*.json", "app.json"),
            ("**/*.json", "a/b/app.json"),
            ("a/**/x", "a/x"),
            ("a/**/x", "a/b/c/x"),
            ("a/**", "a/b/c"),
            ("?.txt", "a.txt"),
            ("appsettings.json", "appsettings.json"),
        ] {
            assert!(glob_match(glob, path), "{glob} should match {path}");
        }
        for (glob, path) in [
            ("*.config", "sub/web.config"),
            ("config/*.json", "config/a/app.json"),
            ("a/**/x", "ab/x"),
            ("?.txt", "ab.txt"),
            ("?.txt", "/.txt"),
            ("*.json", "app.json.bak"),
        ] {
            assert!(!glob_match(glob, path), "{glob} should not match {path}");
        }
    }

    #[test]
    fn globs_stay_inside_the_folder() {
        for good in ["*.json", "a/**/b.txt", "x"] {
            validate_glob("g", good).unwrap();
        }
        for bad in [
            "",
            "/etc/*",
            "../x",
            "a/../b",
            "a//b",
            "a\\b",
            &"x".repeat(201),
        ] {
            assert!(validate_glob("g", bad).is_err(), "{bad}");
        }
    }
}

//! The environment a script starts with, on a node or on a tentacle.
//!
//! A script gets a clean environment: the few variables any shell expects, taken from the
//! process that runs it, plus what Cuttle sets for the task. Everything else in the service's
//! environment — the master key, the database URL and its password, an admin API key, any
//! secret an operator put there for Cuttle itself — is withheld.

use std::ffi::OsString;

/// Inherited when the running process has them; `LC_*` too.
const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// What a script gets when the process has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The inherited part of a script's environment, taken from `vars` (the running process's
/// environment, passed in so it can be tested).
pub fn inherited(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| INHERITED.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    out
}

/// Clears `cmd`'s environment and gives it only the inherited part of this process's; the
/// caller adds the task's own variables after this.
pub fn clean(cmd: &mut tokio::process::Command) {
    cmd.env_clear().envs(inherited(std::env::vars_os()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn only_the_allowlist_is_inherited() {
        let got = inherited(vars(&[
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("LC_ALL", "C.UTF-8"),
            ("CUTTLE_MASTER_KEY", "secret"),
            ("CUTTLE_DATABASE_URL", "postgres://u:pw@db/cuttle"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]));
        assert_eq!(
            got,
            vars(&[("PATH", "/bin"), ("HOME", "/root"), ("LC_ALL", "C.UTF-8")])
        );
    }

    #[test]
    fn a_missing_path_gets_the_default() {
        assert_eq!(inherited(vars(&[])), vars(&[("PATH", DEFAULT_PATH)]));
    }
}

//! What becomes of a script's output lines on their way to the task log: sensitive values
//! masked (also across the pieces of a line longer than 64 KiB, and every line of a multi-line
//! value), output variables (`##cuttle[setVariable name='X' value='Y' sensitive='True']`) and
//! artifact requests (`##cuttle[createArtifact path='…']`) collected. A sensitive output
//! variable's value is masked from the line that sets it on.

use std::collections::HashMap;
use std::sync::Mutex;

use cuttle_core::plan::{
    mask, mask_piece, parse_create_artifact, parse_set_variable, ArtifactRequest, MASK,
};

/// An output variable a script set, on which target (`None`: the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetOutput {
    pub(crate) target: Option<String>,
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) sensitive: bool,
}

/// One stream of one script: a target's (`None`: the node's) stdout or stderr.
type Stream = (Option<String>, bool);

/// The treatment of one script's output.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Values to mask wherever they appear, longest first; sensitive output variables join.
    secrets: Mutex<Vec<String>>,
    /// Whether `setVariable` lines are collected.
    capture: bool,
    set: Mutex<Vec<SetOutput>>,
    /// Artifacts asked for, by target (`None`: the node); collected whatever the mode.
    artifacts: Mutex<Vec<(Option<String>, ArtifactRequest)>>,
    /// Streams in the middle of a line split in pieces: what masking held back of it.
    carries: Mutex<HashMap<Stream, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Output {
    /// Lines go to the log as they are.
    pub(crate) fn plain() -> Output {
        Output::default()
    }

    /// Secrets masked and output variables collected (a deployment step's script).
    pub(crate) fn step(secrets: Vec<String>) -> Output {
        Output {
            secrets: Mutex::new(secrets),
            capture: true,
            ..Output::default()
        }
    }

    /// A whole line as the log shows it (see [`Output::piece`]).
    #[cfg(test)]
    fn line(&self, target: Option<&str>, text: &str) -> String {
        self.piece(target, false, text, false).unwrap_or_default()
    }

    /// The next piece of a stream's output as the log shows it: `None` when masking holds all
    /// of it back until the line's next piece (`continues`: the line goes on). A whole line may
    /// set an output variable or ask for an artifact; a malformed one is logged with why it was
    /// not taken.
    pub(crate) fn piece(
        &self,
        target: Option<&str>,
        stderr: bool,
        text: &str,
        continues: bool,
    ) -> Option<String> {
        let stream = (target.map(str::to_owned), stderr);
        let secrets = lock(&self.secrets).clone();
        let (shown, whole_line) = {
            let mut carries = lock(&self.carries);
            let mid_line = carries.contains_key(&stream);
            let carry = carries.entry(stream.clone()).or_default();
            let shown = mask_piece(carry, text, continues, &secrets);
            if !continues {
                carries.remove(&stream);
            }
            (shown, !mid_line && !continues)
        };
        if !whole_line {
            return (!shown.is_empty() || !continues).then_some(shown);
        }
        Some(self.service_message(target, text, shown))
    }

    /// What a stream held back when it ended in the middle of a line, masked.
    pub(crate) fn rest(&self, target: Option<&str>, stderr: bool) -> Option<String> {
        let carry = lock(&self.carries).remove(&(target.map(str::to_owned), stderr))?;
        let secrets = lock(&self.secrets).clone();
        (!carry.is_empty()).then(|| mask(&carry, &secrets))
    }

    /// Takes what a whole line asks for; `shown` is the line masked.
    fn service_message(&self, target: Option<&str>, text: &str, shown: String) -> String {
        match parse_create_artifact(text) {
            None => {}
            Some(Ok(a)) => {
                lock(&self.artifacts).push((target.map(str::to_owned), a));
                return shown;
            }
            Some(Err(e)) => return format!("{shown}   (not taken: {e})"),
        }
        if !self.capture {
            return shown;
        }
        match parse_set_variable(text) {
            None => shown,
            Some(Ok(v)) => {
                let shown = if v.sensitive && !v.value.is_empty() {
                    // Masked from here on: in this very line, and in all that follows.
                    let mut secrets = lock(&self.secrets);
                    secrets.push(v.value.clone());
                    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
                    secrets.dedup();
                    shown.replace(v.value.as_str(), MASK)
                } else {
                    shown
                };
                lock(&self.set).push(SetOutput {
                    target: target.map(str::to_owned),
                    name: v.name,
                    value: v.value,
                    sensitive: v.sensitive,
                });
                shown
            }
            Some(Err(e)) => format!("{shown}   (not taken: {e})"),
        }
    }

    /// The artifacts asked for on `target` (`None`: the node), in order; taken out.
    pub(crate) fn take_artifacts(&self, target: Option<&str>) -> Vec<ArtifactRequest> {
        let mut all = lock(&self.artifacts);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|(t, _)| t.as_deref() == target);
        *all = rest;
        mine.into_iter().map(|(_, a)| a).collect()
    }

    /// The output variables collected, in the order they were set.
    pub(crate) fn take_set(&self) -> Vec<SetOutput> {
        std::mem::take(&mut *lock(&self.set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(target: Option<&str>, name: &str, value: &str, sensitive: bool) -> SetOutput {
        SetOutput {
            target: target.map(str::to_owned),
            name: name.into(),
            value: value.into(),
            sensitive,
        }
    }

    #[test]
    fn a_step_s_output_is_masked_and_its_variables_collected() {
        let out = Output::step(vec!["hunter2".into()]);
        assert_eq!(
            out.line(Some("web-1"), "password is hunter2"),
            "password is ********"
        );
        assert_eq!(
            out.line(Some("web-1"), "##cuttle[setVariable name='V' value='1.2']"),
            "##cuttle[setVariable name='V' value='1.2']"
        );
        assert!(out
            .line(None, "##cuttle[setVariable name='V']")
            .contains("not taken"));
        // A secret inside an output variable's line is masked in the log, kept in the value.
        out.line(None, "##cuttle[setVariable name='P' value='hunter2']");
        assert_eq!(
            out.take_set(),
            vec![
                set(Some("web-1"), "V", "1.2", false),
                set(None, "P", "hunter2", false)
            ]
        );
        let plain = Output::plain();
        assert_eq!(
            plain.line(None, "##cuttle[setVariable name='V' value='1']"),
            "##cuttle[setVariable name='V' value='1']"
        );
        assert!(plain.take_set().is_empty());
    }

    #[test]
    fn a_sensitive_output_variable_is_masked_from_the_line_that_sets_it() {
        let out = Output::step(Vec::new());
        let line = out.line(
            Some("web-1"),
            "##cuttle[setVariable name='Token' value='tok-12345' sensitive='True']",
        );
        assert!(!line.contains("tok-12345"), "{line}");
        assert_eq!(out.line(Some("web-2"), "token tok-12345"), "token ********");
        assert_eq!(
            out.take_set(),
            vec![set(Some("web-1"), "Token", "tok-12345", true)]
        );
    }

    #[test]
    fn a_secret_split_between_two_pieces_of_a_line_is_masked_whole() {
        let out = Output::step(vec!["correct-horse".into()]);
        let first = out.piece(Some("w"), false, "aaaa correct-ho", true);
        let second = out.piece(Some("w"), false, "rse bbbb", false);
        let shown = format!("{}{}", first.unwrap_or_default(), second.unwrap());
        assert_eq!(shown, "aaaa ******** bbbb");
        // Streams are kept apart: another target's pieces do not mix with these.
        assert_eq!(out.piece(Some("x"), false, "correct-", true), None);
        assert_eq!(out.line(Some("w"), "plain"), "plain");
        assert_eq!(out.rest(Some("x"), false).as_deref(), Some("correct-"));
        assert_eq!(out.rest(Some("x"), false), None);
    }
}
